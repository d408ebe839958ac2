"""Benchmark Event Trail Suppression: livenight.ets.ets (numba) against ets_reference (pure Python), same run.

    python scripts/bench_ets.py                      # 1M events at 346x260, half of them in trails
    python scripts/bench_ets.py --events 200000 --file

Both run on the same synthetic stream and must return identical arrays. ``ets`` is timed as the median of
``--repeats`` runs after one warm-up (numba compiles or loads its cache there); the reference runs once (it takes
seconds). Both are single-threaded; the CPU-time ratio is printed next to the wall-clock one because it is less
sensitive to other processes on a shared machine. ``--file`` also times :func:`livenight.ets.ets_file` on a temporary RLED file (chunked read, sort and
write), which includes the h5 I/O.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from livenight import argtypes
from livenight.events import EVENT_DTYPE


def synthetic_stream(n: int, size: tuple[int, int], rate_ev_per_s: float, trail_share: float,
                     seed: int) -> np.ndarray:
    """``n`` time-sorted events: uniform noise plus same-polarity trails with growing gaps (low-light trailing).

    A trail starts at a random pixel and time with a first gap of 20–500 µs that grows by 1.1–1.6x per event,
    for 3–10 events (at most ~90 ms). Timestamps are whole µs, so equal timestamps occur.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    duration = max(1, int(n / rate_ev_per_s * 1e6))
    n_trail_target = int(n * trail_share)
    t_parts, x_parts, y_parts, p_parts = [], [], [], []
    made = 0
    while made < n_trail_target:
        m = max(1, (n_trail_target - made) // 9)
        length = rng.integers(3, 11, m)
        gap0 = rng.uniform(20, 500, m)
        growth = rng.uniform(1.1, 1.6, m)
        k = np.concatenate([np.arange(L) for L in length])
        owner = np.repeat(np.arange(m), length)
        # offset of event k: gap0 * (growth**k − 1) / (growth − 1)
        offset = gap0[owner] * (growth[owner] ** k - 1.0) / (growth[owner] - 1.0)
        t_parts.append(rng.integers(0, duration, m)[owner] + offset.astype(np.int64))
        x_parts.append(rng.integers(0, width, m)[owner])
        y_parts.append(rng.integers(0, height, m)[owner])
        p_parts.append(rng.integers(0, 2, m)[owner])
        made += int(length.sum())
    n_noise = max(0, n - made)
    t_parts.append(rng.integers(0, duration, n_noise))
    x_parts.append(rng.integers(0, width, n_noise))
    y_parts.append(rng.integers(0, height, n_noise))
    p_parts.append(rng.integers(0, 2, n_noise))
    t = np.concatenate(t_parts)[:n]
    order = np.argsort(t, kind="stable")
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["t"] = t[order]
    ev["x"] = np.concatenate(x_parts)[:n][order]
    ev["y"] = np.concatenate(y_parts)[:n][order]
    ev["p"] = np.concatenate(p_parts)[:n][order]
    return ev


_size = argtypes.size
_positive_int = argtypes.positive_int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_ets.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=_positive_int, default=1_000_000, help="events in the stream (default 1000000)")
    p.add_argument("--size", type=_size, default=(346, 260), metavar="WxH", help="sensor size (default 346x260)")
    p.add_argument("--rate", type=float, default=1e6, metavar="EV_PER_S",
                   help="event rate, sets the stream duration (default 1e6 events/s)")
    p.add_argument("--trail-share", type=float, default=0.5, help="share of events in synthetic trails (default 0.5)")
    p.add_argument("--t-on-us", type=float, default=1_000_000, help="ETS threshold for ON events (default 1e6 µs)")
    p.add_argument("--t-off-us", type=float, default=1_000_000, help="ETS threshold for OFF events (default 1e6 µs)")
    p.add_argument("--soft-us", type=float, default=0, help="ETS gap tolerance (default 0 µs)")
    p.add_argument("--repeats", type=_positive_int, default=5, help="timed runs of ets (median; default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file", action="store_true", help="also time ets_file on a temporary RLED file")
    p.add_argument("--chunk-events", type=_positive_int, default=1 << 18,
                   help="chunk size for --file (default 262144)")
    args = p.parse_args(argv)
    if not 0.0 <= args.trail_share <= 1.0:
        p.error(f"--trail-share must lie in [0, 1] (got {args.trail_share})")
    if args.rate <= 0:
        p.error(f"--rate must be positive (got {args.rate})")
    return args


def run(args: argparse.Namespace) -> dict[str, float]:
    from livenight.ets import ets, ets_file, ets_reference

    kw = dict(t_on_us=args.t_on_us, t_off_us=args.t_off_us, soft_us=args.soft_us)
    ev = synthetic_stream(args.events, args.size, args.rate, args.trail_share, args.seed)
    n = ev.shape[0]
    w, h = args.size
    span_s = (int(ev["t"][-1]) - int(ev["t"][0])) / 1e6
    print(f"ETS, {n} events at {w}x{h} over {span_s:.2f} s ({args.trail_share:.0%} in synthetic trails), "
          f"t_on {args.t_on_us:g} µs, t_off {args.t_off_us:g} µs, soft {args.soft_us:g} µs")

    fast = ets(ev[: min(n, 1000)], args.size, **kw)  # warm-up: numba compile / cache load
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fast = ets(ev, args.size, **kw)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    fast_s, fast_cpu = statistics.median(times), statistics.median(cpu)
    t0, c0 = time.perf_counter(), time.process_time()
    ref = ets_reference(ev, args.size, **kw)
    ref_s, ref_cpu = time.perf_counter() - t0, time.process_time() - c0
    same = bool(np.array_equal(fast, ref))
    mean_shift = (int(ev["t"].sum()) - int(fast["t"].sum())) / n
    ratio = ref_s / fast_s
    print(f"  ets (numba)     {n / fast_s / 1e6:8.2f} M events/s  ({fast_s * 1e3:.1f} ms, median of {args.repeats}; "
          f"min {min(times) * 1e3:.1f} ms)")
    print(f"  ets_reference   {n / ref_s / 1e6:8.2f} M events/s  ({ref_s * 1e3:.0f} ms, pure Python)")
    print(f"  ratio {ratio:.0f}x wall clock, {ref_cpu / fast_cpu:.0f}x CPU time (target >= 100x: "
          f"{'met' if ratio >= 100 else 'NOT met'}); identical output: {same}; mean shift {mean_shift:.0f} µs")
    result = {"events": float(n), "ets_s": fast_s, "reference_s": ref_s, "ratio": ratio,
              "cpu_ratio": ref_cpu / fast_cpu, "identical": float(same)}
    if args.file:
        from livenight.drivers.rled import RledWriter

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.h5", Path(tmp) / "out.h5"
            with RledWriter(src, args.size, flush_every_s=0) as wr:
                wr.add_events(ev)
            summary = ets_file(src, dst, chunk_events=args.chunk_events, progress=False, **kw)
        print(f"  ets_file        {summary.events_per_s / 1e6:8.2f} M events/s  ({summary.seconds * 1e3:.0f} ms with "
              f"h5 read + write, chunks of {args.chunk_events}; at most {summary.peak_held_events} events held back)")
        result["file_s"] = summary.seconds
    if not same:
        raise SystemExit("bench_ets: ets and ets_reference disagree")
    return result


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
