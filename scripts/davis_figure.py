"""The model card's picture: reconstruction | events | APS frame, for a few windows of the DAVIS346 street clip.

Replays the clip through the CLI (every event, contiguous 40 ms windows, reference frames saved) and stacks the
chosen frames into one PNG.

    .venv/bin/python scripts/davis_figure.py --model livenight/weights/ner-lite.pth --out docs/davis346_ner_lite.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--data", default=os.environ.get("LIVENIGHT_DATA", str(ROOT.parent / "shared" / "data")),
                    help="folder holding davis346.aedat4")
    ap.add_argument("--frames", type=int, nargs="*", default=[12, 30, 48], help="window numbers to show")
    ap.add_argument("--out", default=str(ROOT / "docs" / "davis346_ner_lite.png"), help="output PNG")
    return ap.parse_args(argv)


def _grey(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def run(args: argparse.Namespace) -> Path:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "livenight", "--replay", str(Path(args.data) / "davis346.aedat4"), "--no-gui",
               "--windows", "time", "--window-ms", "40", "--stride-ms", "40", "--out", tmp, "--save-gt",
               "--save-evframe"] + (["--model", args.model] if args.model else [])
        subprocess.run(cmd, check=True, capture_output=True)
        d = Path(tmp)
        gts, evs = sorted((d / "gt").glob("*.png")), sorted((d / "events").glob("*.png"))
        rows = []
        for i in args.frames:
            rec = _grey(d / f"frame_{i:05d}.png")
            gap = np.full((rec.shape[0], 4, 3), 255, np.uint8)
            rows.append(np.concatenate([rec, gap, _grey(evs[i]), gap, _grey(gts[i])], axis=1))
            rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
        Image.fromarray(np.concatenate(rows[:-1], axis=0)).save(args.out, optimize=True)
    print(args.out)
    return Path(args.out)


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
