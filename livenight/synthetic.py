"""Random event streams for tests and benchmarks (the demo simulates a night scene instead: :mod:`livenight.simulate`).

One generator, so every test and benchmark means the same thing by "1 M events/s of random events": exponential
inter-event times at the given rate (so equal timestamps occur at high rates), uniform positions, random
polarities, deterministic per seed.
"""

from __future__ import annotations

import numpy as np

from .events import EVENT_DTYPE


def random_events(n: int, sensor_size: tuple[int, int] = (346, 260), rate_ev_per_s: float = 1e6, seed: int = 0,
                  t0_us: int = 0) -> np.ndarray:
    """``n`` time-sorted events starting exactly at ``t0_us``."""
    rng = np.random.default_rng(seed)
    width, height = sensor_size
    ev = np.empty(n, dtype=EVENT_DTYPE)
    dt = rng.exponential(1e6 / rate_ev_per_s, size=n)
    if n:
        dt[0] = 0.0
    ev["t"] = int(t0_us) + np.floor(np.cumsum(dt)).astype(np.int64)
    ev["x"] = rng.integers(0, width, size=n)
    ev["y"] = rng.integers(0, height, size=n)
    ev["p"] = rng.integers(0, 2, size=n)
    return ev


def random_windows(n: int, sensor_size: tuple[int, int] = (346, 260), rate_ev_per_s: float = 1e6,
                   window_us: int = 40_000, stride_us: int | None = None, seed: int = 0,
                   t0_us: int = 10_000_000) -> list:
    """``n`` :class:`~livenight.windowing.Window` objects of random events at ``rate_ev_per_s`` (window ``k`` spans
    ``[t0 + k·stride, t0 + k·stride + window)``; the first asks for a state reset)."""
    from .windowing import Window

    stride_us = stride_us or window_us
    per = max(1, int(rate_ev_per_s * window_us / 1e6))
    out = []
    for k in range(n):
        t0 = t0_us + k * stride_us
        ev = random_events(per, sensor_size, per / window_us * 1e6, seed=seed * 1_000_003 + k, t0_us=t0)
        ev = ev[ev["t"] < t0 + window_us]
        out.append(Window(k, t0, t0 + window_us, ev, k == 0, 0))
    return out
