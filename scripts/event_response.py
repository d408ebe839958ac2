"""How much a NER-Net-family checkpoint's output depends on its events: the collapse probe of the model card.

A network that learned to predict the mean image draws the same frame whatever the events say. This script runs
each checkpoint over the first ``--windows`` windows of a recording twice, once with the events and once with empty
windows (both from a zero state), and prints the mean absolute difference of the last outputs (on [0, 1]) and
the output's spatial standard deviation. Compare checkpoints of one run: a response that falls with training (the
ner-lite runs: from ~0.15 to 0.003–0.03) is the collapse to the mean image. Across architectures the numbers differ
(the FireNet run drew good frames at ~0.02, rising), so judge those by their frames and scores.

    .venv/bin/python scripts/event_response.py runs/ner-lite-cpu/checkpoints/step-00000200.pth
    .venv/bin/python scripts/event_response.py A.pth B.pth --recording night.h5 --windows 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="training checkpoints or bundled weights (.pth)")
    ap.add_argument("--recording", default=None,
                    help="RLED .h5 with contiguous event_indices (default: the third held-out recording of "
                         "--config, simulated into its cache on first use)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "ner-lite-cpu.toml"),
                    help="config whose [val.natural] recordings give the default recording")
    ap.add_argument("--windows", type=int, default=12, help="windows to run (default 12)")
    return ap.parse_args(argv)


def response(path: str, item, windows: int) -> tuple[float, float]:
    """``(mean |out(events) − out(no events)|, spatial std of out(events))`` after ``windows`` windows."""
    import numpy as np
    import torch

    from livenight import families
    from livenight.model.checkpoint import read_checkpoint
    from livenight.training import SequenceModel

    h, w = item.frames.shape[1:]
    ck = read_checkpoint(path)
    net = families.detect(ck, path).from_checkpoint(ck, (w, h), path).eval()  # any registered family
    model = SequenceModel(net)
    with torch.no_grad():
        on, off = net.initial_state(1), net.initial_state(1)
        for ev in item.events[:windows]:
            win = [[tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in ev)]]
            empty = [[tuple(torch.from_numpy(np.ascontiguousarray(a[:0])) for a in ev)]]
            out_on, on = model(win, on)
            out_off, off = model(empty, off)
    return float((out_on - out_off).abs().mean()), float(out_on.std())


def run(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    import torch

    from livenight.training import H5Recording, SequenceDataset, load_config, synthetic_recordings

    torch.set_num_threads(1)
    if args.recording:
        rec = H5Recording(args.recording)
    else:
        recs = synthetic_recordings(load_config(args.config).val.natural)
        rec = recs[min(2, len(recs) - 1)]
    item = SequenceDataset([rec], sequence_length=args.windows, crop=0)[0]
    rows = []
    for path in args.checkpoints:
        diff, std = response(path, item, args.windows)
        rows.append((path, diff, std))
        print(f"{path}: response to the events {diff:.4f}, output std {std:.4f}", flush=True)
    return rows


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
