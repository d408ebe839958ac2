"""numba kernels of Event Trail Suppression (imported only by :mod:`livenight.ets`, on first use).

Events arrive as the :data:`~livenight.events.EVENT_DTYPE` record array itself (one base pointer, fixed field
offsets: cheaper in the hot loop than four strided column views).

Per-pixel state: one int64 row of ``state`` per pixel ``q = y·W + x`` (32 bytes, so an event touches one row):

    state[q, 0]  prev_t   original (uncorrected) timestamp of the pixel's previous event
    state[q, 1]  start    original timestamp of the event that began the current (potential) trail
    state[q, 2]  tag      num << 2 | (prev_p + 1): trail events counted after ``start`` and the previous
                          polarity; ``tag & 3 == 0`` for a pixel that has not fired (so zeros = fresh state)
    state[q, 3]  gap      the growing-gap threshold as an integer (see :func:`_step`)

``thr`` is the int64 pair ``[ceil(t_off), ceil(t_on)]``, indexed by the polarity.

Sort keys: an event is packed into one int64, ``(tc − t_base) << S | y << (xb + 1) | x << 1 | p`` with
``xb`` / ``yb`` the bit widths of x / y and ``S = yb + xb + 1``. Ordering keys by bits ``[1, 64)`` orders events
by (corrected t, raster pixel y·W + x); bit 0 (the polarity) rides along without taking part, so a stable sort
keeps per-pixel order among equal (t, pixel). The key also carries everything needed to rebuild the event, so
sorting moves 8 bytes per event and needs no gather afterwards.
"""

import numba
import numpy as np

# fault codes of validate / process_keys
OK, OFF_SENSOR, UNSORTED, BAD_POLARITY = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def validate(ev, width, height, t_prev):
    """``(OK, −1)`` when every event lies on the sensor, has polarity 0/1 and ``t`` is sorted and ``>= t_prev``;
    else ``(code, i)`` for the first fault. An unsorted stream is reported only if no event is off the sensor
    or has a bad polarity (those are errors in any order; unsorted input can still be sorted)."""
    last = t_prev
    unsorted = -1
    for i in range(ev.shape[0]):
        r = ev[i]
        if r.x >= width or r.y >= height:
            return OFF_SENSOR, i
        if r.p > 1:
            return BAD_POLARITY, i
        if r.t < last and unsorted < 0:
            unsorted = i
        last = r.t
    if unsorted >= 0:
        return UNSORTED, unsorted
    return OK, -1


@numba.njit(cache=True, nogil=True)
def _step(state, q, ti, pi, thr, soft_ceil):
    """The ETS rule for one event (time ``ti``, polarity ``pi`` ∈ {0, 1}) at pixel ``q``; updates the pixel's
    state and returns ``(corrected t, continued the trail (0/1), new tag)``.

    The event continues the trail when it has the pixel's previous polarity, ``d = ti − prev_t`` (ORIGINAL
    previous time) ``> gap`` and ``d < thr[pi]`` (the CURRENT event's polarity picks the threshold), all strict.
    Integer forms of the official comparisons (``d`` is a whole number of µs): ``d < thr`` ⇔ ``d < ceil(thr)``
    and ``d > d_prev − soft`` ⇔ ``d > d_prev − ceil(soft)``, so ``thr`` holds ceilings and the stored gap is
    ``d − soft_ceil``. Written with masks instead of branches: whether an event continues a trail is
    data-dependent and would be mispredicted often.
    """
    prev_t = state[q, 0]
    start = state[q, 1]
    tag = state[q, 2]
    gap = state[q, 3]
    d = ti - prev_t
    cont = np.int64((tag & 3) == pi + 1) & np.int64(d > gap) & np.int64(d < thr[pi])
    m = -cont  # all ones when the trail continues
    tag = ((tag + 4) & m) | ((pi + 1) & ~m)  # num + 1, or a restart with num = 0
    start = (start & m) | (ti & ~m)
    state[q, 0] = ti  # the original time, in both cases
    state[q, 1] = start
    state[q, 2] = tag
    state[q, 3] = (d - soft_ceil) & m  # gap = d − soft, or 0 on a restart
    return start + (tag >> 2), cont, tag


@numba.njit(cache=True, nogil=True)
def process(ev, width, xb, state, thr, soft_ceil, tc, low):
    """Apply the rule to validated, time-sorted events, carrying the per-pixel ``state`` (updated in place).

    Writes each event's corrected time to ``tc`` and its key's low part ``y << (xb+1) | x << 1 | p`` to ``low``.
    Visiting the events in stream order with one state row per pixel visits every pixel's events in its own
    (stable) time order: the official per-pixel loop. Returns ``(trails, moved, max_shift)``: trails begun
    (first trail members), events whose time changed, and the largest ``t − tc``.
    """
    trails = 0
    moved = 0
    max_shift = 0
    for i in range(ev.shape[0]):
        r = ev[i]
        xi = np.int64(r.x)
        yi = np.int64(r.y)
        pi = np.int64(r.p)
        ti = r.t
        c, cont, tag = _step(state, yi * width + xi, ti, pi, thr, soft_ceil)
        tc[i] = c
        low[i] = (((yi << xb) | xi) << 1) | pi
        trails += cont & np.int64(tag < 8)
        moved += np.int64(c != ti)
        max_shift = max(max_shift, ti - c)
    return trails, moved, max_shift


@numba.njit(cache=True, nogil=True)
def process_keys(ev, width, height, xb, state, thr, soft_ceil, t_base, shift, keys):
    """:func:`process` for a whole array at once: checks each event on the way (no separate validation pass)
    and writes packed keys ``(tc − t_base) << shift | low``; no statistics. Returns ``(OK, −1)`` or the first
    fault ``(code, i)``, stopping there (the state is then partly updated: start again with a fresh one).
    """
    last = ev[0].t if ev.shape[0] else 0
    for i in range(ev.shape[0]):
        r = ev[i]
        xi = np.int64(r.x)
        yi = np.int64(r.y)
        pi = np.int64(r.p)
        ti = r.t
        if xi >= width or yi >= height:
            return OFF_SENSOR, i
        if pi > 1:
            return BAD_POLARITY, i
        if ti < last:
            return UNSORTED, i
        last = ti
        c, cont, tag = _step(state, yi * width + xi, ti, pi, thr, soft_ceil)
        keys[i] = ((c - t_base) << shift) | (((yi << xb) | xi) << 1) | pi
    return OK, -1


@numba.njit(cache=True, nogil=True)
def future_lower_bound(state, t_end, thr):
    """A lower bound on the corrected timestamp of every event not processed yet (all have ``t >= t_end``).

    Proof. A future event either restarts, keeping its own ``t >= t_end`` (and members of a trail begun by such
    a restart get ``start + num >= t_end + 1``), or continues the trail open at its pixel now, getting
    ``start + num + 1`` or more (num only grows along a trail, start stays). Continuing needs the same polarity
    and ``d = t − prev_t < thr(prev_p)`` with ``t >= t_end``; so a pixel with ``t_end − prev_t >= thr(prev_p)``
    can never continue (every later event there restarts). Hence every future corrected timestamp is
    ``>= min(t_end, min over pixels with t_end − prev_t < thr(prev_p) of start + num + 1)``, which is returned.
    """
    bound = t_end
    for q in range(state.shape[0]):
        tag = state[q, 2]
        pol = tag & 3
        if pol == 0:
            continue
        if t_end - state[q, 0] < thr[pol - 1]:
            b = state[q, 1] + (tag >> 2) + 1
            if b < bound:
                bound = b
    return bound


@numba.njit(cache=True, nogil=True)
def make_keys(tc, low, t_base, shift):
    """``(tc − t_base) << shift | low``."""
    n = tc.shape[0]
    keys = np.empty(n, np.int64)
    for i in range(n):
        keys[i] = ((tc[i] - t_base) << shift) | low[i]
    return keys


@numba.njit(cache=True, nogil=True)
def histograms(keys, lo_bit, hi_bit, digit_bits):
    """Digit histograms ``[pass, digit]`` of an LSD radix sort on bits ``[lo_bit, hi_bit)``, in one read pass."""
    n_pass = max(0, (hi_bit - lo_bit + digit_bits - 1) // digit_bits)
    mask = (1 << digit_bits) - 1
    counts = np.zeros((n_pass, 1 << digit_bits), np.int64)
    for i in range(keys.shape[0]):
        k = keys[i] >> lo_bit
        for s in range(n_pass):
            counts[s, (k >> (s * digit_bits)) & mask] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def radix_passes(keys, counts, lo_bit, digit_bits):
    """The scatter passes of a stable LSD radix sort, given its digit histograms ``counts[pass, digit]``.

    ``keys`` is scratch (clobbered, as is ``counts``): the passes ping-pong between it and one new buffer, and
    the sorted array is returned (either of the two). A pass whose digit is the same for every key is skipped.
    Bits below ``lo_bit`` do not take part: they keep the input order among equal sort bits.
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
def sort_keys(keys, shift, nbits, digit_bits, budget):
    """Stable sort of event keys on bits ``[1, nbits)`` (bit 0, the polarity, rides along); ``keys`` is
    clobbered, the sorted array returned.

    Same result as one radix sort on ``[1, nbits)``, cheaper: a stable LSD radix sort on the time bits
    ``[shift, nbits)`` only, then one stable insertion pass on bits ``[1, nbits)``. After the first stage an
    element can only be out of place among keys of equal time, so the insertion pass moves elements within
    runs of equal time and costs O(n + moves); runs are a handful of events on real data. When the moves
    exceed ``budget`` (long runs of equal times) the keys are radix-sorted on all of ``[1, nbits)`` instead,
    starting from their current order (still stable: equal keys have kept their original order so far).
    """
    a = radix_passes(keys, histograms(keys, shift, nbits, digit_bits), shift, digit_bits)
    n = a.shape[0]
    moves = 0
    for u in range(1, n):
        k = a[u]
        kk = k >> 1
        if (a[u - 1] >> 1) <= kk:
            continue
        if moves > budget:
            return radix_passes(a, histograms(a, 1, nbits, digit_bits), 1, digit_bits)
        v = u - 1
        while v >= 0 and (a[v] >> 1) > kk:  # strict: equal (time, pixel) keep their order
            a[v + 1] = a[v]
            v -= 1
        a[v + 1] = k
        moves += u - 1 - v
    return a


@numba.njit(cache=True, nogil=True)
def decode(keys, t_base, shift, xb, yb, out):
    """Unpack keys into the :data:`EVENT_DTYPE` array ``out``."""
    xm = (1 << xb) - 1
    ym = (1 << yb) - 1
    for j in range(keys.shape[0]):
        k = keys[j]
        r = out[j]
        r.t = (k >> shift) + t_base
        r.x = (k >> 1) & xm
        r.y = (k >> (xb + 1)) & ym
        r.p = k & 1


@numba.njit(cache=True, nogil=True)
def decode_pairs(tc, low, xb, yb, out):
    """Unpack (corrected t, low key part) pairs into the :data:`EVENT_DTYPE` array ``out``."""
    xm = (1 << xb) - 1
    ym = (1 << yb) - 1
    for j in range(tc.shape[0]):
        lw = low[j]
        r = out[j]
        r.t = tc[j]
        r.x = (lw >> 1) & xm
        r.y = (lw >> (xb + 1)) & ym
        r.p = lw & 1


@numba.njit(cache=True, nogil=True)
def split_keys(keys, t_base, shift):
    """Keys back into (corrected t, low part)."""
    n = keys.shape[0]
    tc = np.empty(n, np.int64)
    low = np.empty(n, np.int64)
    lm = (1 << shift) - 1
    for j in range(n):
        k = keys[j]
        tc[j] = (k >> shift) + t_base
        low[j] = k & lm
    return tc, low
