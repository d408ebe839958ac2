"""numba kernels of the event filters (imported only by :mod:`livenight.filters`, on first use).

Each kernel reads the :data:`~livenight.events.EVENT_DTYPE` record array itself and writes the events it keeps
into ``out`` (same dtype, same length) and their positions in the input into ``pos`` (int64), returning how
many: one pass, no boolean mask and no second gather.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def hot_pixels(ev, width, mask, counts, learn_from_us, learn_until_us, out, pos):
    """Keep events whose pixel is not in ``mask``; count every event in ``[learn_from_us, learn_until_us)`` in
    ``counts``."""
    j = 0
    for i in range(ev.shape[0]):
        r = ev[i]
        q = np.int64(r.y) * width + r.x
        if learn_from_us <= r.t < learn_until_us:
            counts[q] += 1
        if not mask[q]:
            out[j] = r
            pos[j] = i
            j += 1
    return j


@numba.njit(cache=True, nogil=True)
def background_activity(ev, surface, base_us, duration_us, out, pos):
    """Keep an event when one of its 8 neighbours fired less than ``duration_us`` before it (dv-processing's
    ``BackgroundActivityNoiseFilter`` rule: the pixel itself does not count, and every event, kept or not,
    updates its pixel's time).

    ``surface`` is ``(H + 2, W + 2)`` int32 holding each pixel's last time minus ``base_us`` (half the memory of
    int64 µs, so fewer cache misses at 1280x720; the caller keeps ``t - base_us`` inside int32), with a border
    that never fires, so the loop has no bounds tests; it is read as one flat row (``q ± 1``, ``q ± stride``)."""
    stride = surface.shape[1]
    flat = surface.reshape(-1)
    j = 0
    for i in range(ev.shape[0]):
        r = ev[i]
        rel = r.t - base_us
        lim = rel - duration_us  # a neighbour supports the event when it fired after lim
        q = (np.int64(r.y) + 1) * stride + np.int64(r.x) + 1
        up = q - stride
        down = q + stride
        if (flat[q - 1] > lim or flat[q + 1] > lim or flat[up] > lim or flat[down] > lim
                or flat[up - 1] > lim or flat[up + 1] > lim or flat[down - 1] > lim or flat[down + 1] > lim):
            out[j] = r
            pos[j] = i
            j += 1
        flat[q] = np.int32(rel)
    return j


@numba.njit(cache=True, nogil=True)
def rate_limit(ev, t_start_us, t_end_us, slice_us, budget_per_us, rng_state, out, pos):
    """Random subsampling to at most ``budget_per_us`` events per µs, judged per ``slice_us`` slice of stream time
    (slices are cut at multiples of ``slice_us``, clipped to the packet's ``[t_start_us, t_end_us)``).

    A slice holding ``n`` events where ``budget`` fit keeps each with probability ``budget / n`` (xorshift64*,
    state in ``rng_state[0]``, so a run is reproducible). Returns the number kept."""
    n = ev.shape[0]
    j = 0
    i = 0
    s = rng_state[0]
    while i < n:
        k = ev[i].t // slice_us
        a = i
        while i < n and ev[i].t // slice_us == k:
            i += 1
        lo = max(k * slice_us, t_start_us)
        hi = min((k + 1) * slice_us, max(t_end_us, ev[i - 1].t + 1))
        budget = budget_per_us * max(hi - lo, 1)
        count = i - a
        if count <= budget:
            for m in range(a, i):
                out[j] = ev[m]
                pos[j] = m
                j += 1
            continue
        # keep probability budget / count as a 53-bit threshold
        thr = np.uint64(budget / count * 9007199254740992.0)
        for m in range(a, i):
            s ^= s >> np.uint64(12)
            s ^= s << np.uint64(25)
            s ^= s >> np.uint64(27)
            u = (s * np.uint64(2685821657736338717)) >> np.uint64(11)
            if u < thr:
                out[j] = ev[m]
                pos[j] = m
                j += 1
    rng_state[0] = s
    return j


@numba.njit(cache=True, nogil=True)
def subsequence_positions(ev, kept, pos):
    """Positions in ``ev`` of the events of ``kept``, a subsequence of it (greedy match; -1 where none is left)."""
    i = 0
    for j in range(kept.shape[0]):
        k = kept[j]
        while i < ev.shape[0] and not (ev[i].t == k.t and ev[i].x == k.x and ev[i].y == k.y and ev[i].p == k.p):
            i += 1
        pos[j] = i if i < ev.shape[0] else -1
        i += 1
