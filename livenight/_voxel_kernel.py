"""numba kernels of the E2VID voxel grid and its non-zero normalisation (imported only by :mod:`livenight.voxel`).

The scatter reads the packed ``EVENT_DTYPE`` records directly (no column copies). Each thread owns a band of rows
and scans every event, so no two threads write the same cell: no atomics, and every cell sums its events in
stream order, so the result does not depend on the thread count.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, parallel=True)
def scatter(grid, events, num_bins, n_threads):
    # grid: [B, H, W] float32, C-contiguous, overwritten. events: time-sorted EVENT_DTYPE records, inside the grid.
    h = grid.shape[1]
    n = events.shape[0]
    band = (h + n_threads - 1) // n_threads
    t0 = events[0].t if n else 0
    den = events[n - 1].t - t0 if n else 1
    if den == 0:
        den = 1  # every event at one timestamp: all land in bin 0 (deltaT = 1, as the reference does)
    fden = np.float64(den)
    span = np.int64(num_bins - 1)
    for b in numba.prange(n_threads):
        y0 = b * band
        y1 = min(h, y0 + band)
        if y0 >= y1:
            continue
        grid[:, y0:y1, :] = 0.0
        for k in range(n):
            e = events[k]
            yk = np.int64(e.y)
            if yk < y0 or yk >= y1:
                continue
            # exact int64 product, then one rounding: ts = (B-1)(t - t0) / (t_last - t0)
            ts = np.float64(span * (e.t - t0)) / fden
            fl = np.floor(ts)
            ti = np.int64(fl)
            frac = ts - fl
            pol = 1.0 if e.p else -1.0
            xk = np.int64(e.x)
            if 0 <= ti < num_bins:
                grid[ti, yk, xk] += np.float32(pol * (1.0 - frac))
            if 0 <= ti + 1 < num_bins:
                grid[ti + 1, yk, xk] += np.float32(pol * frac)


@numba.njit(cache=True, nogil=True, parallel=True)
def nonzero_moments(flat):
    # count, sum and sum of squares of the non-zero entries (float64 accumulation)
    n = 0
    s = 0.0
    ss = 0.0
    for i in numba.prange(flat.shape[0]):
        v = np.float64(flat[i])
        if v != 0.0:
            n += 1
            s += v
            ss += v * v
    return n, s, ss


@numba.njit(cache=True, nogil=True, parallel=True)
def apply_norm(src, dst, mean, std):
    # dst may be src (in place). Zeros stay zero; the rest become (v - mean) / std in float32.
    m = np.float32(mean)
    sd = np.float32(std)
    for i in numba.prange(src.shape[0]):
        v = src[i]
        dst[i] = (v - m) / sd if v != 0 else np.float32(0.0)
