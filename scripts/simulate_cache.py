"""Fill a training config's simulation cache with several processes (each simulates every k-th recording).

``livenight train`` simulates missing cached recordings itself, one after another; on a machine with idle cores
this fills the same cache faster (files are written atomically, so workers and a later training run agree):

    for k in 0 1 2; do .venv/bin/python scripts/simulate_cache.py configs/ner-lite.toml --worker $k --workers 3 & done
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="training config (TOML / JSON)")
    ap.add_argument("--worker", type=int, default=0, help="this worker's number, 0..workers-1")
    ap.add_argument("--workers", type=int, default=1, help="number of workers")
    ap.add_argument("--val", action="store_true", help="fill the validation caches instead of the training ones")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from livenight.training import load_config
    from livenight.training.synthetic import _simulate_one, _synthetic_key

    cfg = load_config(args.config)
    part = cfg.val if args.val else cfg.data
    done = 0
    for spec, kind in ((part.synthetic, "night"), (part.natural, "natural")):
        if spec is None or spec.cache_dir is None:
            continue
        cache = Path(spec.cache_dir).expanduser()
        cache.mkdir(parents=True, exist_ok=True)
        key = _synthetic_key(spec)
        for i in range(args.worker, spec.count, args.workers):
            path = cache / f"{kind}-{key}-{i:04d}.h5"
            if path.is_file():
                continue
            tmp = path.with_suffix(f".partial{os.getpid()}.h5")
            _simulate_one(spec, i, tmp)
            os.replace(tmp, path)
            done += 1
    print(f"worker {args.worker}: simulated {done} recording(s)")
    return 0


def main(argv=None) -> None:
    raise SystemExit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
