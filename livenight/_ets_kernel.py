"""numba kernels of Event Trail Suppression (imported only by :mod:`livenight.ets`, on first use).

Per-pixel state layout (one row of ``state`` per pixel ``y·W + x``, so one event touches one cache line):

    state[q, 0]  prev_t  original (uncorrected) timestamp of the pixel's previous event
    state[q, 1]  start   original timestamp of the event that began the current (potential) trail
    state[q, 2]  num     trail events counted after ``start`` (0 right after a restart)
    state[q, 3]  gap     the growing-gap threshold, stored as an integer (see :func:`process`)
    prev_p[q]            polarity of the previous event, 255 when the pixel has not fired yet
"""

import numba
import numpy as np

NEVER = 255  # prev_p of a pixel that has not fired yet
INT64_MAX = np.iinfo(np.int64).max


@numba.njit(cache=True, nogil=True)
def process(t, x, y, p, width, state, prev_p, thr_on, thr_off, soft_ceil, tc, pix):
    """Run the sequential ETS rule over time-sorted events, updating the per-pixel state in place.

    Writes the corrected timestamp of every event to ``tc`` and its pixel index to ``pix``. Visiting the events
    in stream order with one state row per pixel visits every pixel's events in its own (stable) time order,
    which is exactly the per-pixel loop of the official script.

    All comparisons are done on integers (``d`` is an integer number of µs):
    ``d < thr``  ⇔  ``d < ceil(thr)`` (so ``thr_on``/``thr_off`` arrive as ``ceil(thr)``, clamped to int64), and
    ``d > d_prev − soft``  ⇔  ``d > floor(d_prev − soft)`` = ``d_prev − ceil(soft)`` (so the stored gap is
    ``d_prev − soft_ceil``). With integral parameters these are the official expressions verbatim.

    Returns ``(trails, moved, max_shift)``: trails begun (events that were the first trail member after a
    restart), events whose timestamp changed, and the largest ``t − tc``.
    """
    trails = 0
    moved = 0
    max_shift = 0
    for i in range(t.shape[0]):
        q = np.int64(y[i]) * width + np.int64(x[i])
        pix[i] = q
        ti = t[i]
        pi = p[i]
        pp = prev_p[q]
        row = state[q]
        if pp != NEVER and pi == pp:
            d = ti - row[0]
            thr = thr_on if pi == 1 else thr_off
            if d > row[3] and d < thr:
                num = row[2] + 1
                row[2] = num
                row[3] = d - soft_ceil
                row[0] = ti
                c = row[1] + num
                tc[i] = c
                if num == 1:
                    trails += 1
                if c != ti:
                    moved += 1
                    if ti - c > max_shift:
                        max_shift = ti - c
                continue
        # restart: a new potential trail begins at this event (also the first event of a pixel)
        row[0] = ti
        row[1] = ti
        row[2] = 0
        row[3] = 0
        prev_p[q] = pi
        tc[i] = ti
    return trails, moved, max_shift


@numba.njit(cache=True, nogil=True)
def future_lower_bound(state, prev_p, t_end, thr_on, thr_off):
    """A lower bound on the corrected timestamp of every event not processed yet (all have ``t >= t_end``).

    A future event either restarts (corrected t = its own t >= t_end; later members of a trail begun by it
    get ``start + num >= t_end + 1``) or continues the trail that is open at its pixel now, getting
    ``start + num + 1`` or more. Continuing needs the same polarity and ``d = t − prev_t < thr(prev_p)`` with
    ``t >= t_end``, so only pixels with ``t_end − prev_t < thr(prev_p)`` ("live" pixels) can still continue.
    Hence every future corrected timestamp is >= min(t_end, min over live pixels of start + num + 1), exactly.
    """
    bound = t_end
    for q in range(prev_p.shape[0]):
        pp = prev_p[q]
        if pp == NEVER:
            continue
        thr = thr_on if pp == 1 else thr_off
        if t_end - state[q, 0] < thr:
            b = state[q, 1] + state[q, 2] + 1
            if b < bound:
                bound = b
    return bound


@numba.njit(cache=True, nogil=True)
def composite_keys(tc, pix, t_min, pix_bits):
    """``(tc − t_min) << pix_bits | pix``: one integer whose order is (corrected t, raster pixel)."""
    n = tc.shape[0]
    keys = np.empty(n, np.int64)
    for i in range(n):
        keys[i] = ((tc[i] - t_min) << pix_bits) | pix[i]
    return keys


@numba.njit(cache=True, nogil=True)
def radix_argsort(keys, nbits, digit_bits):
    """Stable argsort of non-negative int64 ``keys`` < 2**nbits (LSD radix, ``digit_bits`` per pass).

    All digit histograms are counted in one read pass; passes whose digit is constant are skipped.
    """
    n = keys.shape[0]
    idx = np.arange(n)
    if n < 2 or nbits <= 0:
        return idx
    n_pass = (nbits + digit_bits - 1) // digit_bits
    radix = 1 << digit_bits
    mask = radix - 1
    counts = np.zeros((n_pass, radix), np.int64)
    for i in range(n):
        k = keys[i]
        for s in range(n_pass):
            counts[s, (k >> (s * digit_bits)) & mask] += 1
    k_a = keys.copy()
    k_b = np.empty_like(keys)
    i_b = np.empty_like(idx)
    for s in range(n_pass):
        c = counts[s]
        shift = s * digit_bits
        if c[(k_a[0] >> shift) & mask] == n:
            continue  # every key has the same digit here: the order is unchanged
        total = 0
        for b in range(radix):
            m = c[b]
            c[b] = total
            total += m
        for i in range(n):
            k = k_a[i]
            d = (k >> shift) & mask
            pos = c[d]
            c[d] = pos + 1
            k_b[pos] = k
            i_b[pos] = idx[i]
        k_a, k_b = k_b, k_a
        idx, i_b = i_b, idx
    return idx


@numba.njit(cache=True, nogil=True)
def gather(order, lo, hi, tc, x, y, p, pix, out_t, out_x, out_y, out_p, out_pix):
    """``out_*[j − lo] = field[order[j]]`` for j in [lo, hi) (``out_pix`` may be empty: not written)."""
    with_pix = out_pix.shape[0] > 0
    for j in range(lo, hi):
        k = order[j]
        o = j - lo
        out_t[o] = tc[k]
        out_x[o] = x[k]
        out_y[o] = y[k]
        out_p[o] = p[k]
        if with_pix:
            out_pix[o] = pix[k]
