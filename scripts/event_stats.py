"""Event statistics, simulated vs real: the table in the bundled model's card.

Real rows: every recording in the data folder (``.aedat4``, ``.raw``, ``.dat``, ``.h5``) read through
``livenight.drivers.open_source`` (reference frames, when the recording has them, give the static-area noise rate).
Simulated rows: ``--sims`` natural-scene recordings drawn exactly as training draws them from a config's
``[data.natural]`` table (other seeds: ``--seed``), summarised as min / median / max.

    .venv/bin/python scripts/event_stats.py                                # ../shared/data and configs/ner-lite.toml
    .venv/bin/python scripts/event_stats.py --sims 12 --data ../shared/data --config configs/ner-lite.toml
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

COLUMNS = ("ev_per_px_s", "on_fraction", "isolated_per_px_s", "static_per_px_s", "iei_median_ms", "iei_p10_ms")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("LIVENIGHT_DATA", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("--data", default=default_data, help="folder of real recordings (default $LIVENIGHT_DATA or "
                                                        "../shared/data)")
    ap.add_argument("--config", default="configs/ner-lite.toml", help="training config with a [data.natural] table")
    ap.add_argument("--sims", type=int, default=8, help="simulated recordings to draw (default 8)")
    ap.add_argument("--seed", type=int, default=500, help="seed of the drawn simulations (default 500: not the "
                                                          "training seed)")
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per simulated recording (default 1.0)")
    return ap.parse_args(argv)


def real_rows(folder: Path) -> list[tuple[str, dict]]:
    from livenight.drivers import open_source
    from livenight.events import EVENT_DTYPE
    from livenight.simulate.stats import event_stats

    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".aedat4", ".raw", ".dat", ".h5"):
            continue
        with open_source(str(path)) as src:
            parts = [pk.events for pk in src]
            size = tuple(src.sensor_size)
            ref = getattr(src, "frames", None)
            frames = np.stack([ref[i] for i in range(len(ref))]) if ref is not None and len(ref) > 1 else None
        ev = np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)
        rows.append((f"{path.name} ({size[0]}x{size[1]})", event_stats(ev, size, frames)))
    return rows


def sim_rows(config: str, count: int, seed: int, seconds: float) -> list[tuple[str, dict]]:
    from livenight.simulate.natural import simulate_natural
    from livenight.simulate.stats import event_stats
    from livenight.training import load_config, natural_params

    spec = load_config(config).data.natural
    if spec is None:
        raise SystemExit(f"{config}: no [data.natural] table")
    spec = replace(spec, seed=seed)
    stats = []
    for i in range(count):
        sim_seed, scene, dvs, window_us, shot = natural_params(spec, i)
        sim = simulate_natural(seconds, spec.size, seed=sim_seed, scene=scene, dvs=dvs, window_us=window_us,
                               shot_noise=shot)
        stats.append(event_stats(sim.events, sim.sensor_size, sim.frames))
    out = []
    for label, fn in (("min", np.nanmin), ("median", np.nanmedian), ("max", np.nanmax)):
        out.append((f"simulated, {count} natural scenes {spec.size[0]}x{spec.size[1]}: {label}",
                    {c: float(fn([s[c] for s in stats])) for c in COLUMNS}))
    return out


def run(args: argparse.Namespace) -> list[tuple[str, dict]]:
    rows = real_rows(Path(args.data))
    if args.sims:
        rows += sim_rows(args.config, args.sims, args.seed, args.seconds)
    print("| recording | events/px/s | ON fraction | isolated events/px/s | static-area events/px/s | "
          "same-pixel interval median / p10 (ms) |")
    print("|---|---|---|---|---|---|")
    for name, s in rows:
        static = "—" if not np.isfinite(s["static_per_px_s"]) else f"{s['static_per_px_s']:.3f}"
        print(f"| {name} | {s['ev_per_px_s']:.3g} | {s['on_fraction']:.2f} | {s['isolated_per_px_s']:.3f} | "
              f"{static} | {s['iei_median_ms']:.3g} / {s['iei_p10_ms']:.3g} |", flush=True)
    return rows


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
