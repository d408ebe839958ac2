"""Score a model against the classical filter: the real DAVIS346 clip and held-out simulated recordings.

Every event counts everywhere (contiguous windows):

* ``davis346.aedat4`` (real; APS frames): 40 ms time windows; SSIM on active pixels, full-frame SSIM, MSE
  (percentile-normalised, :mod:`livenight.eval`).
* held-out natural scenes: the validation recordings of the config (``[val.natural]``, another seed than training),
  simulated on first use into its cache; windows = their contiguous ``event_indices``; SSIM / MSE against the
  well-lit ground truth.
* held-out night streets: ``livenight simulate`` seeds 901–903 (2 s, 346×260); 40 ms time windows.

    .venv/bin/python scripts/eval_bundled.py --model livenight/weights/ner-lite.pth
    .venv/bin/python scripts/eval_bundled.py --model runs/ner-lite-cpu/last.pth --only davis
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIVENIGHT = [sys.executable, "-m", "livenight"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint to score (the classical filter is always scored)")
    ap.add_argument("--config", default="configs/ner-lite.toml", help="config whose [val.natural] recordings to use")
    ap.add_argument("--data", default=os.environ.get("LIVENIGHT_DATA", str(ROOT.parent / "shared" / "data")),
                    help="folder holding davis346.aedat4 (default $LIVENIGHT_DATA or ../shared/data)")
    ap.add_argument("--work", default="runs/eval", help="folder for the simulated night files (default runs/eval)")
    ap.add_argument("--only", choices=["davis", "natural", "night"], nargs="*", default=None)
    return ap.parse_args(argv)


def _scores(out: str) -> dict[str, float]:
    """Means over the files of one `livenight eval` run (its per-file lines)."""
    rows = {"ssim": [], "mse": [], "active": [], "full": [], "mse_norm": []}
    for line in out.splitlines():
        m = re.search(r"frames\s+MSE ([\d.]+)\s+SSIM ([\d.]+)", line)
        if m:
            rows["mse"].append(float(m.group(1)))
            rows["ssim"].append(float(m.group(2)))
        m = re.search(r"active pixels ([\d.nan]+) .*full-frame SSIM ([\d.]+)\s+MSE ([\d.]+)", line)
        if m:
            rows["active"].append(float(m.group(1)))
            rows["full"].append(float(m.group(2)))
            rows["mse_norm"].append(float(m.group(3)))
    return {k: sum(v) / len(v) for k, v in rows.items() if v}


def _eval(files: list[str], engine: list[str], windows: list[str]) -> dict[str, float]:
    cmd = [*LIVENIGHT, "eval", *files, *engine, *windows]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return _scores(res.stdout)


def run(args: argparse.Namespace) -> dict:
    sets = args.only or ["davis", "natural", "night"]
    engines = {Path(args.model).name: ["--model", args.model], "classical filter": ["--engine", "complementary"]}
    time40 = ["--windows", "time", "--window-ms", "40", "--stride-ms", "40"]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    inputs = {}
    if "davis" in sets:
        inputs["davis"] = ([str(Path(args.data) / "davis346.aedat4")], time40)
    if "natural" in sets:
        from livenight.training import load_config, synthetic_recordings

        spec = load_config(args.config).val.natural
        inputs["natural"] = ([str(r.path) for r in synthetic_recordings(spec)], ["--windows", "rled"])
    if "night" in sets:
        files = []
        for seed in (901, 902, 903):
            f = work / f"night-{seed}.h5"
            if not f.is_file():
                subprocess.run([*LIVENIGHT, "simulate", "--out", str(f), "--seconds", "2", "--seed", str(seed)],
                               check=True, capture_output=True)
            files.append(str(f))
        inputs["night"] = (files, time40)
    results = {}
    for name, (files, windows) in inputs.items():
        for label, engine in engines.items():
            results[(name, label)] = s = _eval(files, engine, windows)
            extra = (f"SSIM on active pixels {s['active']:.3f}, full-frame {s['full']:.3f}, MSE {s['mse_norm']:.4f} "
                     "(percentile-normalised)" if name == "davis" else
                     f"SSIM {s['ssim']:.3f}, MSE {s['mse']:.4f}")
            print(f"{name:8s} {label:24s} {extra}", flush=True)
    return results


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
