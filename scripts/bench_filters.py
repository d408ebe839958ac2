"""Benchmark the event filters (livenight.filters) against a NumPy baseline of the same filter, in the same run.

    python scripts/bench_filters.py                       # 2M events at 346x260, 5 M events/s
    python scripts/bench_filters.py --size 1280x720 --events 4000000

Each filter runs over the stream in 40 ms packets (as the pipeline gives them) and is timed as the median of
``--repeats`` passes after a warm-up (numba compiles or loads its cache there). Baselines, which must keep exactly
the same events:

* hot pixels: a vectorised NumPy mask lookup and boolean compress (``~mask[y * W + x]``);
* background activity: dv-processing's ``BackgroundActivityNoiseFilter`` (when installed; it is fed through
  ``EventStore.push_back``, the only way its Python API accepts events) on the first ``--dv-events`` events;
  without dv-processing there is no baseline and only the throughput is printed;
* rate limit: NumPy random draws per 1 ms slice (same budget; same kept counts up to the random draw).

Throughput is M events/s of input; the ratio is filter / baseline. CPU time is printed too (less sensitive to
other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time

import numpy as np

from livenight import argtypes
from livenight.events import EVENT_DTYPE


def stream(n: int, size: tuple[int, int], rate_mev_s: float, seed: int = 0) -> np.ndarray:
    """Uniform noise plus moving edges: ``n`` time-sorted events (about 30 % isolated noise), 5 hot pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    duration_us = max(1, int(n / rate_mev_s))
    t = np.sort(rng.integers(0, duration_us, n))
    x = rng.integers(0, w, n)
    y = rng.integers(0, h, n)
    edge = rng.random(n) < 0.7  # a vertical edge sweeping the sensor every 100 ms: correlated events
    x[edge] = ((t[edge] % 100_000) * w // 100_000 + rng.integers(-2, 3, int(edge.sum()))) % w
    hot = rng.random(n) < 0.02
    x[hot], y[hot] = rng.integers(0, 5, int(hot.sum())) * 7 % w, 3
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t + 1_000_000, x, y, rng.integers(0, 2, n)
    return ev


def packets(ev: np.ndarray, packet_us: int = 40_000) -> list[np.ndarray]:
    t = ev["t"]
    cuts = np.searchsorted(t, np.arange(int(t[0]) + packet_us, int(t[-1]) + 1, packet_us))
    return np.split(ev, cuts)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def run(args) -> dict[str, float]:
    from livenight import filters as F

    ev = stream(args.events, args.size, args.rate)
    parts = packets(ev)
    n = ev.shape[0]
    w, h = args.size
    results = {}

    def report(name, ours, base, base_name, n_base=n, same=None):
        (ow, oc, _), (bw, _, _) = ours, base
        mev, mev_b = n / ow / 1e6, n_base / bw / 1e6
        results[name] = mev
        check = "" if same is None else f", same events: {same}"
        print(f"{name:<20} {mev:8.1f} M events/s (cpu {n / oc / 1e6:.1f})   {base_name}: {mev_b:8.2f} M events/s   "
              f"ratio {mev / mev_b:6.1f}x{check}")

    # --- hot pixels (mask learned once, then applied)
    hp = F.HotPixelFilter(args.size, learn_us=200_000, factor=10.0)
    for p in parts:
        hp(p)
    mask = hp.mask.copy()

    def ours_hp():
        f = F.HotPixelFilter(args.size, mask=mask.reshape(h, w))
        f._from = f._until = np.iinfo(np.int64).max  # learned: apply only
        return [f(p) for p in parts]

    def base_hp():
        return [p[~mask[p["y"].astype(np.int64) * w + p["x"]]] for p in parts]

    ours, base = timed(ours_hp, args.repeats + 1), timed(base_hp, args.repeats)
    same = all(np.array_equal(a, b) for a, b in zip(ours[2], base[2]))
    report("hot pixels", ours, base, "numpy mask", same=same)

    # --- background activity
    def ours_ba(k=None):
        f = F.BackgroundActivityFilter(args.size, args.background_us, "numba")
        return [f(p) for p in (parts if k is None else packets(ev[:k]))]

    ours = timed(ours_ba, args.repeats + 1)
    if importlib.util.find_spec("dv_processing") is not None:
        k = min(n, args.dv_events)

        def base_ba():
            f = F.BackgroundActivityFilter(args.size, args.background_us, "dv")
            return [f(p) for p in packets(ev[:k])]

        base = timed(base_ba, 1)
        same = all(np.array_equal(a, b) for a, b in zip(ours_ba(k), base[2]))
        report("background activity", ours, base, f"dv-processing ({k} events)", n_base=k, same=same)
    else:
        print("background activity: dv-processing not installed; no baseline", file=sys.stderr)
        results["background activity"] = n / ours[0] / 1e6

    # --- rate limit
    budget = args.max_rate

    def ours_rl():
        f = F.RateLimiter(budget)
        return [f(p) for p in parts]

    def base_rl():
        rng = np.random.default_rng(0)
        out = []
        for p in parts:
            s = p["t"] // 1000
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
            counts = np.diff(np.r_[starts, s.shape[0]])
            keep_p = np.minimum(1.0, budget * 1000 / counts)
            out.append(p[rng.random(p.shape[0]) < np.repeat(keep_p, counts)])
        return out

    ours, base = timed(ours_rl, args.repeats + 1), timed(base_rl, args.repeats)
    kept_o, kept_b = sum(a.shape[0] for a in ours[2]), sum(b.shape[0] for b in base[2])
    report("rate limit", ours, base, "numpy draws", same=None)
    print(f"{'':<20} kept {kept_o} (numpy baseline {kept_b}) of {n} at {budget:g} M events/s")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_filters.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=argtypes.positive_int, default=2_000_000, help="events (default 2000000)")
    p.add_argument("--size", type=argtypes.size, default=(346, 260), metavar="WxH", help="sensor (default 346x260)")
    p.add_argument("--rate", type=float, default=5.0, metavar="MEV_S", help="stream rate, M events/s (default 5)")
    p.add_argument("--background-us", type=int, default=2_000, help="background-activity window, µs (default 2000)")
    p.add_argument("--max-rate", type=float, default=2.0, metavar="MEV_S", help="rate limit (default 2)")
    p.add_argument("--dv-events", type=int, default=200_000, help="events fed to dv-processing (default 200000)")
    p.add_argument("--repeats", type=argtypes.positive_int, default=3, help="timed passes (median; default 3)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
