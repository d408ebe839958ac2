"""Time NER-Net-family candidates for the bundled model: one recurrent step at a sensor size, on this CPU.

Each candidate runs fp32 and bf16 autocast + channels_last (the inference path a CPU with AMX / AVX512-BF16
takes), with 1 and 2 torch threads; prints ms per frame (median of ``--repeat`` steps after warm-up).

    .venv/bin/python scripts/bench_arch.py                        # the default candidate table at 346x260
    .venv/bin/python scripts/bench_arch.py --only s2-b16-e3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from livenight.model.nernet import NERNet, NERNetConfig

#: name -> NERNetConfig keyword arguments (sensor size added at run time)
CANDIDATES: dict[str, dict] = {
    "ner-tiny": dict(base_channels=6, num_encoders=3, num_residual_blocks=1, kernel_size=3, rep_channels=16),
    "s2-b16-e2": dict(base_channels=16, num_encoders=2, num_residual_blocks=1, kernel_size=3, rep_channels=16,
                      stem_stride=2, pred_kernel=3),
    "s2-b16-e2-nocnn": dict(base_channels=16, num_encoders=2, num_residual_blocks=1, kernel_size=3,
                            stem_stride=2, pred_kernel=3, letc_cnn=False),
    "s4-b16-e2-nocnn": dict(base_channels=16, num_encoders=2, num_residual_blocks=1, kernel_size=3,
                            stem_stride=4, pred_kernel=3, letc_cnn=False),
    "s4-b32-e2-nocnn": dict(base_channels=32, num_encoders=2, num_residual_blocks=1, kernel_size=3,
                            stem_stride=4, pred_kernel=3, letc_cnn=False),
    "s4-b16-e3-nocnn": dict(base_channels=16, num_encoders=3, num_residual_blocks=1, kernel_size=3,
                            stem_stride=4, pred_kernel=3, letc_cnn=False),
    "s4-b32-e2": dict(base_channels=32, num_encoders=2, num_residual_blocks=1, kernel_size=3, rep_channels=16,
                      stem_stride=4, pred_kernel=3),
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="346x260", help="sensor WIDTHxHEIGHT (default 346x260)")
    ap.add_argument("--only", nargs="*", default=None, help="candidate names (default: all)")
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2], help="torch thread counts (default 1 2)")
    ap.add_argument("--repeat", type=int, default=15, help="timed steps per combination (default 15)")
    return ap.parse_args(argv)


def time_step(cfg: NERNetConfig, bf16: bool, repeat: int) -> float:
    """Median ms of one recurrent step (state carried over), after 3 warm-up steps. bf16: weights, input and
    state in bfloat16, channels_last (no autocast: it would cast every weight on every call)."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if bf16 else torch.float32
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    net = NERNet(cfg).eval().to(dtype=dtype, memory_format=fmt)
    w, h = cfg.sensor_size
    grid = torch.rand(1, cfg.in_channels, h, w, dtype=dtype).contiguous(memory_format=fmt)
    state = net.initial_state(dtype=dtype)
    times = []
    with torch.inference_mode():
        for i in range(repeat + 3):
            t0 = time.perf_counter()
            _, state = net(grid, state)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run(args: argparse.Namespace) -> list[dict]:
    w, h = (int(v) for v in args.size.lower().split("x"))
    names = args.only or list(CANDIDATES)
    rows = []
    print(f"| candidate | parameters | {' | '.join(f'{p} {t}T' for t in args.threads for p in ('fp32', 'bf16+cl'))} |")
    print("|---|---|" + "---|" * (2 * len(args.threads)))
    for name in names:
        cfg = NERNetConfig(sensor_size=(w, h), **CANDIDATES[name])
        params = sum(p.numel() for p in NERNet(cfg).parameters())
        row = {"name": name, "parameters": params}
        for t in args.threads:
            torch.set_num_threads(t)
            for bf16 in (False, True):
                row[f"{'bf16' if bf16 else 'fp32'}_{t}T"] = time_step(cfg, bf16, args.repeat)
        rows.append(row)
        cells = " | ".join(f"{row[f'{p}_{t}T']:.1f}" for t in args.threads for p in ("fp32", "bf16"))
        print(f"| {name} | {params:,} | {cells} |", flush=True)
    return rows


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
