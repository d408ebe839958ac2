"""Turn a training checkpoint into bundled weights: ``livenight/weights/NAME.pth`` (weights, architecture, step;
no optimiser state) and its JSON sidecar (name, architecture, default windows as data, the resolved training config,
commands, data, compute, scores).

    .venv/bin/python scripts/bundle_model.py runs/ner-lite-cpu/last.pth --name ner-lite --card card.json

``--card`` is a JSON object merged into the sidecar (commands, data, compute, scores, ...).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="training checkpoint (out_dir/last.pth)")
    ap.add_argument("--name", default="ner-lite", help="bundled model name (default ner-lite)")
    ap.add_argument("--card", default=None, help="JSON file merged into the sidecar")
    ap.add_argument("--out", default=str(ROOT / "livenight" / "weights"), help="folder (default livenight/weights)")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    from livenight import families
    from livenight.model.checkpoint import read_checkpoint

    ck = read_checkpoint(args.checkpoint)
    family = families.detect(ck, args.checkpoint)  # any registered family (NER-Net, E2VID / FireNet)
    net = family.from_checkpoint(ck, (64, 64), args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.pth"
    family.save(net, path, step=int(ck["step"]))
    meta = {"name": args.name, "family": family.name, "arch": type(net).__name__, "model": family.config_of(net),
            "windows": {"kind": "time", "window_us": 40_000, "stride_us": 40_000},
            "steps": int(ck["step"]), "parameters": sum(p.numel() for p in net.parameters())}
    if ck.get("train_config"):  # the resolved config the run trained with (tests hold it against the repo's file)
        meta["train_config"] = ck["train_config"]
    if args.card:
        meta.update(json.loads(Path(args.card).read_text()))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB), {path.with_suffix('.json')}")
    return path


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
