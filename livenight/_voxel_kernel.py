"""numba kernels of the E2VID voxel grid and its non-zero normalisation (imported only by :mod:`livenight.voxel`).

The scatter reads the packed ``EVENT_DTYPE`` records directly (no column copies) in one serial pass, so every
cell sums its events in stream order. Serial on purpose: the work per event is two scattered adds, and a
row-banded ``prange`` version (each thread scanning every event, as the LETC kernel does) measured 10–25× slower
on a shared 2-core machine (thread wake-up and barrier costs dominate), while the serial loop does ~300 M ev/s.
``nogil`` lets a caller run it beside other threads.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def scatter(grid, events, num_bins):
    # grid: [B, H, W] float32, C-contiguous, overwritten. events: time-sorted EVENT_DTYPE records, inside the grid.
    grid[:] = 0.0
    n = events.shape[0]
    if n == 0:
        return
    t0 = events[0].t
    den = events[n - 1].t - t0
    if den == 0:
        den = 1  # every event at one timestamp: all land in bin 0 (deltaT = 1, as the reference does)
    fden = np.float64(den)
    span = np.int64(num_bins - 1)
    for k in range(n):
        e = events[k]
        # exact int64 product, then one rounding: ts = (B-1)(t - t0) / (t_last - t0)
        ts = np.float64(span * (e.t - t0)) / fden
        fl = np.floor(ts)
        ti = np.int64(fl)
        frac = ts - fl
        pol = 1.0 if e.p else -1.0
        xk = np.int64(e.x)
        yk = np.int64(e.y)
        if 0 <= ti < num_bins:
            grid[ti, yk, xk] += np.float32(pol * (1.0 - frac))
        if 0 <= ti + 1 < num_bins:
            grid[ti + 1, yk, xk] += np.float32(pol * frac)


@numba.njit(cache=True, nogil=True)
def nonzero_moments(flat):
    # count, sum and sum of squares of the non-zero entries (float64 accumulation, in index order)
    n = 0
    s = 0.0
    ss = 0.0
    for i in range(flat.shape[0]):
        v = np.float64(flat[i])
        if v != 0.0:
            n += 1
            s += v
            ss += v * v
    return n, s, ss


@numba.njit(cache=True, nogil=True)
def apply_norm(src, dst, mean, std):
    # dst may be src (in place). Zeros stay zero; the rest become (v - mean) / std in float32.
    m = np.float32(mean)
    sd = np.float32(std)
    for i in range(src.shape[0]):
        v = src[i]
        dst[i] = (v - m) / sd if v != 0 else np.float32(0.0)
