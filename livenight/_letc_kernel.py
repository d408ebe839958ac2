"""numba kernel of the LETC lookup-table scatter (imported only by :mod:`livenight.letc`, on first use)."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, parallel=True)
def scatter(grid, x, y, p, t, table, inv_step, num_bins, n_threads):
    # grid is indexed [H, W, 2C]: contiguous (an event's 2C values share a cache line) or a strided view of a
    # [2C, H, W] engine input. Each thread owns a band of rows and scans every event, so no two threads ever write
    # the same cell (no atomics, and sums keep event order).
    h = grid.shape[0]
    band = (h + n_threads - 1) // n_threads
    n_tab = table.shape[0]
    for b in numba.prange(n_threads):
        y0 = b * band
        y1 = min(h, y0 + band)
        grid[y0:y1] = 0.0
        for k in range(t.shape[0]):
            yk = y[k]
            if yk < y0 or yk >= y1:
                continue
            pos = t[k] * inv_step
            j = int(pos)
            if j > n_tab - 2:
                j = n_tab - 2
            frac = pos - j
            cell = grid[yk, x[k]]
            base = 0 if p[k] else num_bins  # ON bins first
            for i in range(num_bins):
                a = table[j, i]
                cell[base + i] += np.float32(a + (table[j + 1, i] - a) * frac)

