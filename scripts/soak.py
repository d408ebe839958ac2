"""Paced soak test: a synthetic camera at RATE events/s for SECONDS, released in real time through the live
pipeline (capture thread → ring → windows → engine), with the resident memory sampled every 10 s.

    python scripts/soak.py --rate 2e6 --seconds 3600 [--engine complementary|bundled]

Prints one line per sample and a summary: RSS drift after warm-up (first minute excluded; target ≤ 5 %), events
generated vs ingested (target: none lost), frames, skipped windows and ring drops.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2e6, help="events/s (default 2e6)")
    ap.add_argument("--seconds", type=float, default=3600, help="stream length in seconds (default 3600)")
    ap.add_argument("--engine", choices=("complementary", "bundled"), default="complementary")
    args = ap.parse_args()

    from livenight.drivers.pacing import paced
    from livenight.engines import open_engine
    from livenight.events import EventPacket
    from livenight.pipeline import Pipeline
    from livenight.synthetic import random_events
    from livenight.windowing import TimeWindows

    size = (346, 260)
    block_us = 100_000
    base = random_events(int(args.rate * block_us / 1e6), size, args.rate, seed=0)
    base = base[base["t"] < block_us]
    generated = [0]

    def camera():
        k = 0
        while k * block_us < args.seconds * 1e6:
            ev = base.copy()
            ev["t"] += k * block_us
            generated[0] += ev.size
            yield EventPacket(ev, k * block_us, (k + 1) * block_us, time.monotonic(), size)
            k += 1

    engine = open_engine(None, size, backend="complementary" if args.engine == "complementary" else "auto")
    samples: list[tuple[float, float]] = []
    with engine:
        pipe = Pipeline(paced(camera(), 1.0), size, engine, TimeWindows(40_000, 40_000), [], live=True)
        stop = threading.Event()

        def monitor():
            t0 = time.monotonic()
            while not stop.wait(10):
                t, rss = time.monotonic() - t0, rss_mib()
                samples.append((t, rss))
                print(f"t={t:6.0f} s  rss={rss:7.1f} MiB  generated={generated[0]}  ingested={pipe.stats.events_in}  "
                      f"frames={pipe.stats.frames}  skipped={pipe.windower.skipped_windows}  "
                      f"ring drops={pipe.ring.dropped_events}", flush=True)

        threading.Thread(target=monitor, daemon=True).start()
        stats = pipe.run()
        stop.set()
    warm = [r for t, r in samples if t >= 60] or [r for _, r in samples]
    drift = (warm[-1] - warm[0]) / warm[0] * 100 if warm else float("nan")
    print(f"soak: {args.seconds:g} s at {args.rate / 1e6:g} M events/s ({args.engine}); RSS after warm-up "
          f"{warm[0] if warm else float('nan'):.1f} → {warm[-1] if warm else float('nan'):.1f} MiB "
          f"(drift {drift:+.2f} %, max {max(warm) if warm else float('nan'):.1f}); generated {generated[0]}, "
          f"ingested {stats.events_in}, lost {generated[0] - stats.events_in}; {stats.summary()}", flush=True)


if __name__ == "__main__":
    main()
