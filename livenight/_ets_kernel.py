"""numba kernels of Event Trail Suppression (imported only by :mod:`livenight.ets`, on first use).

Per-pixel state: one int64 row of ``state`` per pixel ``q = y·W + x`` (32 bytes, so an event touches one row):

    state[q, 0]  prev_t   original (uncorrected) timestamp of the pixel's previous event
    state[q, 1]  start    original timestamp of the event that began the current (potential) trail
    state[q, 2]  tag      num << 2 | (prev_p + 1): trail events counted after ``start`` and the previous
                          polarity; ``tag & 3 == 0`` for a pixel that has not fired (so zeros = fresh state)
    state[q, 3]  gap      the growing-gap threshold as an integer (see :func:`process`)

Sort keys: an event is packed into one int64, ``(tc − t_min) << S | y << (xb + 1) | x << 1 | p`` with
``xb`` / ``yb`` the bit widths of x / y and ``S = yb + xb + 1``. Ordering keys by bits ``[1, 64)`` orders events
by (corrected t, raster pixel y·W + x); bit 0 (the polarity) rides along without taking part, so a stable sort
keeps per-pixel order among equal (t, pixel). The key also carries everything needed to rebuild the event, so
sorting moves 8 bytes per event and needs no gather afterwards.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def validate(t, x, y, p, width, height, t_prev):
    """``(0, −1)`` when all events lie on the sensor, ``p`` is 0/1 and ``t`` is sorted and ``>= t_prev``; else the
    first fault: ``(1, i)`` event i off the sensor, ``(3, i)`` a polarity other than 0/1, ``(2, i)``
    ``t[i] < t[i−1]`` (``t_prev`` for i = 0; the scan goes on for faults 1 and 3, which take precedence)."""
    last = t_prev
    unsorted = -1
    for i in range(t.shape[0]):
        if x[i] >= width or y[i] >= height:
            return 1, i
        if p[i] > 1:
            return 3, i
        if t[i] < last and unsorted < 0:
            unsorted = i
        last = t[i]
    if unsorted >= 0:
        return 2, unsorted
    return 0, -1


@numba.njit(cache=True, nogil=True)
def _step(state, q, ti, pi, thr_on, thr_off, soft_ceil):
    """The ETS rule for one event (time ``ti``, polarity ``pi`` ∈ {0, 1}) at pixel ``q``; returns
    ``(corrected t, continued the trail (0/1), new tag)``. Written without branches (masks), since whether an
    event continues a trail is data-dependent and would be mispredicted about half the time."""
    prev_t = state[q, 0]
    start = state[q, 1]
    tag = state[q, 2]
    gap = state[q, 3]
    d = ti - prev_t
    mp = -pi  # all ones for ON
    thr = (thr_on & mp) | (thr_off & ~mp)  # the CURRENT event's polarity
    # same polarity as the pixel's previous event (tag & 3 == 0: never fired), growing gap, under threshold
    cont = np.int64((tag & 3) == pi + 1) & np.int64(d > gap) & np.int64(d < thr)
    m = -cont
    tag = ((tag + 4) & m) | ((pi + 1) & ~m)  # num + 1, or restart with num = 0
    start = (start & m) | (ti & ~m)
    state[q, 0] = ti  # prev_t is the ORIGINAL time, in both branches
    state[q, 1] = start
    state[q, 2] = tag
    state[q, 3] = (d - soft_ceil) & m  # gap = d − soft, or 0 on a restart
    return start + (tag >> 2), cont, tag


@numba.njit(cache=True, nogil=True)
def process(t, x, y, p, width, xb, state, thr_on, thr_off, soft_ceil, tc, low):
    """Run the sequential ETS rule over time-sorted events, updating the per-pixel state in place.

    Writes each event's corrected timestamp to ``tc`` and its key's low part ``y << (xb+1) | x << 1 | p`` to
    ``low``. Visiting the events in stream order with one state row per pixel visits every pixel's events in
    its own (stable) time order: the official per-pixel loop.

    Comparisons are on integers (``d`` is a whole number of µs): ``d < thr`` ⇔ ``d < ceil(thr)``, so
    ``thr_on`` / ``thr_off`` arrive as ``ceil(thr)`` clamped to int64; ``d > d_prev − soft`` ⇔
    ``d > d_prev − ceil(soft)``, so the stored gap is ``d_prev − soft_ceil``. With integral parameters these are
    the official expressions verbatim.

    Returns ``(trails, moved, max_shift)``: trails begun (first trail member after a restart), events whose
    timestamp changed, and the largest ``t − tc``.
    """
    trails = 0
    moved = 0
    max_shift = 0
    for i in range(t.shape[0]):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        pi = np.int64(p[i])
        ti = t[i]
        c, cont, tag = _step(state, yi * width + xi, ti, pi, thr_on, thr_off, soft_ceil)
        tc[i] = c
        low[i] = (((yi << xb) | xi) << 1) | pi
        trails += cont & np.int64(tag < 8)
        moved += np.int64(c != ti)
        max_shift = max(max_shift, ti - c)
    return trails, moved, max_shift


@numba.njit(cache=True, nogil=True)
def process_keys(t, x, y, p, width, xb, state, thr_on, thr_off, soft_ceil, t_base, shift, keys):
    """:func:`process` writing packed keys ``(tc − t_base) << shift | low`` instead of ``tc`` and ``low``.

    (Counting the radix histograms here too would be slower than a separate pass: consecutive events share
    the high time digit, so the increments would form one long store-to-load dependency chain.)
    """
    trails = 0
    moved = 0
    max_shift = 0
    for i in range(t.shape[0]):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        pi = np.int64(p[i])
        ti = t[i]
        c, cont, tag = _step(state, yi * width + xi, ti, pi, thr_on, thr_off, soft_ceil)
        keys[i] = ((c - t_base) << shift) | (((yi << xb) | xi) << 1) | pi
        trails += cont & np.int64(tag < 8)
        moved += np.int64(c != ti)
        max_shift = max(max_shift, ti - c)
    return trails, moved, max_shift


@numba.njit(cache=True, nogil=True)
def future_lower_bound(state, t_end, thr_on, thr_off):
    """A lower bound on the corrected timestamp of every event not processed yet (all have ``t >= t_end``).

    Proof. A future event either restarts, keeping its own ``t >= t_end`` (and members of a trail begun by such
    a restart get ``start + num >= t_end + 1``), or continues the trail open at its pixel now, getting
    ``start + num + 1`` or more (num only grows along a trail). Continuing needs the same polarity and
    ``d = t − prev_t < thr(prev_p)`` with ``t >= t_end``; so a pixel with ``t_end − prev_t >= thr(prev_p)``
    can never continue (every later event there restarts). Hence every future corrected timestamp is
    ``>= min(t_end, min over pixels with t_end − prev_t < thr(prev_p) of start + num + 1)``, which is returned.
    """
    bound = t_end
    for q in range(state.shape[0]):
        tag = state[q, 2]
        pol = tag & 3
        if pol == 0:
            continue
        thr = thr_on if pol == 2 else thr_off
        if t_end - state[q, 0] < thr:
            b = state[q, 1] + (tag >> 2) + 1
            if b < bound:
                bound = b
    return bound


@numba.njit(cache=True, nogil=True)
def make_keys(tc, low, t_min, shift):
    """``(tc − t_min) << shift | low``."""
    n = tc.shape[0]
    keys = np.empty(n, np.int64)
    for i in range(n):
        keys[i] = ((tc[i] - t_min) << shift) | low[i]
    return keys


@numba.njit(cache=True, nogil=True)
def radix_sort(keys, lo_bit, hi_bit, digit_bits):
    """Stable LSD radix sort of non-negative int64 ``keys`` on bits ``[lo_bit, hi_bit)``; returns a new array.

    Bits below ``lo_bit`` do not take part (they keep the input order among equal sort bits).
    """
    a = keys.copy()
    if a.shape[0] < 2 or hi_bit <= lo_bit:
        return a
    return radix_passes(a, histograms(a, lo_bit, hi_bit, digit_bits), lo_bit, digit_bits)


@numba.njit(cache=True, nogil=True)
def histograms(keys, lo_bit, hi_bit, digit_bits):
    """Digit histograms ``[pass, digit]`` of an LSD radix sort on bits ``[lo_bit, hi_bit)``, in one read pass."""
    n_pass = (hi_bit - lo_bit + digit_bits - 1) // digit_bits
    mask = (1 << digit_bits) - 1
    counts = np.zeros((max(n_pass, 0), 1 << digit_bits), np.int64)
    for i in range(keys.shape[0]):
        k = keys[i] >> lo_bit
        for s in range(n_pass):
            counts[s, (k >> (s * digit_bits)) & mask] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def radix_passes(keys, counts, lo_bit, digit_bits):
    """The scatter passes of a stable LSD radix sort, given its digit histograms ``counts[pass, digit]``.

    ``keys`` is used as scratch (clobbered, as is ``counts``): the passes ping-pong between it and one new
    buffer, and the sorted result is returned (either of the two). A pass whose digit is the same for every
    key is skipped.
    """
    n = keys.shape[0]
    mask = (1 << digit_bits) - 1
    src = keys
    dst = np.empty(0, np.int64)
    for s in range(counts.shape[0]):
        c = counts[s]
        shift = lo_bit + s * digit_bits
        if n == 0 or c[(src[0] >> shift) & mask] == n:
            continue
        if dst.shape[0] != n:
            dst = np.empty_like(keys)
        total = 0
        for j in range(c.shape[0]):
            m = c[j]
            c[j] = total
            total += m
        for i in range(n):
            k = src[i]
            d = (k >> shift) & mask
            pos = c[d]
            c[d] = pos + 1
            dst[pos] = k
        tmp = src
        src = dst
        dst = tmp
    return src


@numba.njit(cache=True, nogil=True)
def sort_keys(keys, shift, nbits, digit_bits, budget, counts):
    """Stable sort of event keys on bits ``[1, nbits)`` (bit 0, the polarity, rides along). ``keys`` is
    clobbered; the sorted array is returned.

    Same result as one radix sort on ``[1, nbits)``, cheaper: a stable LSD radix sort on the time bits
    ``[shift, nbits)`` only (``counts``: its digit histograms when already counted, else an empty array), then
    one stable insertion pass on bits ``[1, nbits)``. After the first stage an element can only be out of
    place among keys of equal time, so the insertion pass moves elements within runs of equal time and costs
    O(n + moves); runs are a handful of events on real data. If the moves exceed ``budget`` (long runs of
    equal times), the time-sorted keys are radix-sorted on all of ``[1, nbits)`` instead (still stable: equal
    keys are in their original order after the first stage).
    """
    if counts.shape[0] == 0:
        counts = histograms(keys, shift, nbits, digit_bits)
    a = radix_passes(keys, counts, shift, digit_bits)
    n = a.shape[0]
    moves = 0
    for u in range(1, n):
        k = a[u]
        kk = k >> 1
        if (a[u - 1] >> 1) <= kk:
            continue
        if moves > budget:
            return radix_sort(a, 1, nbits, digit_bits)  # a is a permutation of time-sorted keys: redo from it
        v = u - 1
        while v >= 0 and (a[v] >> 1) > kk:  # strict: equal (time, pixel) keep their order
            a[v + 1] = a[v]
            v -= 1
        a[v + 1] = k
        moves += u - 1 - v
    return a


@numba.njit(cache=True, nogil=True)
def finish_decode(a, budget, t_base, shift, xb, yb, out_t, out_x, out_y, out_p):
    """The insertion pass of :func:`sort_keys` fused with :func:`decode`, for keys already sorted on time.

    Sorts ``a`` stably on bits ``[1, 64)`` in place by insertion while writing each event out; when an
    insertion shifts elements, their already written positions are rewritten. Returns False, leaving the
    job unfinished, when the moves exceed ``budget`` (long runs of equal times; the caller then radix-sorts).
    """
    n = a.shape[0]
    xm = (1 << xb) - 1
    ym = (1 << yb) - 1
    moves = 0
    v = 0
    for u in range(n):
        k = a[u]
        kk = k >> 1
        lo = u
        if u > 0 and (a[u - 1] >> 1) > kk:
            if moves > budget:
                return False
            v = u - 1
            while v >= 0 and (a[v] >> 1) > kk:  # strict: equal (time, pixel) keep their order
                a[v + 1] = a[v]
                v -= 1
            a[v + 1] = k
            moves += u - 1 - v
            lo = v + 1
        for j in range(lo, u + 1):
            kj = a[j]
            out_t[j] = (kj >> shift) + t_base
            out_x[j] = (kj >> 1) & xm
            out_y[j] = (kj >> (xb + 1)) & ym
            out_p[j] = kj & 1
    return True


@numba.njit(cache=True, nogil=True)
def decode(tc_or_keys, low, from_keys, lo, hi, t_min, shift, xb, yb, out_t, out_x, out_y, out_p):
    """Rebuild events ``[lo, hi)`` into the ``out_*`` columns (index ``j − lo``).

    ``from_keys``: ``tc_or_keys`` holds packed keys (``low`` unused); otherwise it holds corrected times and
    ``low`` the low key parts.
    """
    xm = (1 << xb) - 1
    ym = (1 << yb) - 1
    lm = (1 << shift) - 1
    for j in range(lo, hi):
        if from_keys:
            k = tc_or_keys[j]
            t = (k >> shift) + t_min
            lw = k & lm
        else:
            t = tc_or_keys[j]
            lw = low[j]
        o = j - lo
        out_t[o] = t
        out_x[o] = (lw >> 1) & xm
        out_y[o] = (lw >> (xb + 1)) & ym
        out_p[o] = lw & 1


@numba.njit(cache=True, nogil=True)
def split_keys(keys, lo, hi, t_min, shift):
    """Keys ``[lo, hi)`` back into (corrected t, low part)."""
    n = hi - lo
    tc = np.empty(n, np.int64)
    low = np.empty(n, np.int64)
    lm = (1 << shift) - 1
    for j in range(lo, hi):
        k = keys[j]
        tc[j - lo] = (k >> shift) + t_min
        low[j - lo] = k & lm
    return tc, low
