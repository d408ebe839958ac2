"""numba kernels of the Prophesee decoders and encoders (imported only by :mod:`livenight.drivers.prophesee_raw`,
on first use, so ``import livenight.drivers`` never pays for numba).

Every decoder kernel has the same shape: ``decode_*(words, state, out, width, height) -> (n_events, n_words)``.
It consumes words from the start of ``words`` until they run out or ``out`` (an :data:`EVENT_DTYPE` array) has
no room left for the next word's worst case, and returns how many events it wrote and how many words it
consumed. ``state`` is an int64 array of :data:`STATE_SIZE` slots holding everything that must survive a chunk
boundary (time, row, vector base, loop count) plus counters; the caller owns it and passes it back unchanged
with the next chunk. Events outside ``width`` x ``height`` are not written but counted in ``state[S_DROPPED]``.

The time semantics are those of the OpenEB HAL decoders (``formats.md`` §3.4); see each kernel.
"""

from __future__ import annotations

import numba
import numpy as np

# ---------------------------------------------------------------------------- state slots (shared by all formats)
S_HAVE_TIME = 0  # 1 once the first TIME_HIGH (DAT: the first record) was seen
S_TIME_BASE = 1  # µs of the current TIME_HIGH including loops (EVT3: hi·4096 + loops·2^24)
S_TIME_LOW = 2  # EVT3 low part (µs)
S_LAST_HIGH = 3  # raw payload of the last TIME_HIGH word (DAT: last raw 32-bit timestamp)
S_LOOPS = 4  # number of time-counter wraps seen
S_Y = 5  # EVT3 current row
S_BASE_X = 6  # EVT3 vector base column
S_VECT_POL = 7  # EVT3 vector polarity
S_NON_CD = 8  # EVT3: 1 after an ADDR_Y of type 0x1 (exposure measurement): its X/vector words are not CD events
S_T_MAX = 9  # largest timestamp emitted so far (for the out-of-order counter)
S_DROPPED = 10  # events with x >= width or y >= height (not written)
S_LATE = 11  # events emitted with t < the largest t emitted before them (decoded order is not time order)
S_TIME_LOW_BACK = 12  # EVT3 TIME_LOW words that went backwards within one TIME_HIGH period
S_UNKNOWN = 13  # words of a reserved / undocumented type (garbage or an unsupported stream)
S_LOOP_EVENTS = 14  # wraps detected (same as S_LOOPS; kept apart so a caller may reset S_LOOPS)
STATE_SIZE = 16

#: largest number of events one word can produce
MAX_EVENTS_PER_WORD = {"EVT2": 1, "EVT21": 32, "EVT21_LEGACY": 32, "EVT3": 12, "DAT": 1}


def new_state() -> np.ndarray:
    s = np.zeros(STATE_SIZE, dtype=np.int64)
    s[S_T_MAX] = np.iinfo(np.int64).min
    return s


# ---------------------------------------------------------------------------- EVT 3.0
@numba.njit(cache=True, nogil=True)
def decode_evt3(words, state, out, width, height):
    """EVT 3.0, 16-bit words, ``type = w >> 12`` (HAL semantics, formats.md §3.4).

    TIME_HIGH that changes the high value resets the low part; a repeated TIME_HIGH keeps it; a loop (24-bit
    wrap) is counted when the new high value is at least 2048 below the old one. TIME_LOW sets the low part even
    when it goes backwards. Vectors: each set bit i of VECT_12 / VECT_8 is an event at base_x + i; base_x then
    advances by 12 / 8 whether or not events were emitted. OTHERS, CONTINUED, IMU and triggers are skipped.
    """
    have = state[S_HAVE_TIME]
    base = state[S_TIME_BASE]
    tl = state[S_TIME_LOW]
    last_hi = state[S_LAST_HIGH]
    loops = state[S_LOOPS]
    y = state[S_Y]
    bx = state[S_BASE_X]
    vp = state[S_VECT_POL]
    non_cd = state[S_NON_CD]
    tmax = state[S_T_MAX]
    dropped = state[S_DROPPED]
    late = state[S_LATE]
    back = state[S_TIME_LOW_BACK]
    unknown = state[S_UNKNOWN]
    t = base + tl
    y_ok = 1 if y < height else 0
    emit = 1 if (have != 0 and non_cd == 0) else 0

    nw = words.shape[0]
    cap = out.shape[0] - 12
    n = 0
    i = 0
    while i < nw:
        if n > cap:
            break
        w = np.int64(words[i])
        typ = w >> 12
        if typ == 0x2:  # EVT_ADDR_X: one CD event
            if emit:
                x = w & 0x7FF
                if y_ok and x < width:
                    e = out[n]
                    e.t = t
                    e.x = x
                    e.y = y
                    e.p = (w >> 11) & 1
                    n += 1
                    if t < tmax:
                        late += 1
                    else:
                        tmax = t
                else:
                    dropped += 1
        elif typ == 0x0:  # EVT_ADDR_Y
            y = w & 0x7FF
            y_ok = 1 if y < height else 0
            non_cd = 0
            emit = have
        elif typ == 0x6:  # EVT_TIME_LOW
            lo = w & 0xFFF
            if have and lo < tl:
                back += 1
            tl = lo
            t = base + tl
        elif typ == 0x4 or typ == 0x5:  # VECT_12 / VECT_8
            nbits = 12 if typ == 0x4 else 8
            if emit:
                m = w & 0xFFF if typ == 0x4 else w & 0xFF
                if m:
                    n0 = n
                    for k in range(nbits):
                        bit = (m >> k) & 1
                        x = bx + k
                        ok = bit & y_ok & (1 if x < width else 0)
                        e = out[n]
                        e.t = t
                        e.x = x
                        e.y = y
                        e.p = vp
                        n += ok
                        dropped += bit - ok
                    if n > n0:
                        if t < tmax:
                            late += n - n0
                        else:
                            tmax = t
            bx += nbits
        elif typ == 0x3:  # VECT_BASE_X
            bx = w & 0x7FF
            vp = (w >> 11) & 1
        elif typ == 0x8:  # EVT_TIME_HIGH
            hi = w & 0xFFF
            if have:
                if last_hi >= hi + 2048:
                    loops += 1
                    state[S_LOOP_EVENTS] += 1
                if last_hi != hi:
                    tl = 0
            else:
                tl = 0
                have = 1
            last_hi = hi
            base = hi * 4096 + loops * 16777216
            t = base + tl
            emit = 1 if non_cd == 0 else 0
        elif typ == 0x1:  # ADDR_Y of exposure-measurement (non-CD) events: sets y, suppresses CD output
            y = w & 0x7FF
            y_ok = 1 if y < height else 0
            non_cd = 1
            emit = 0
        elif typ == 0xA or typ == 0xD or typ == 0xE or typ == 0x7 or typ == 0xF:
            pass  # EXT_TRIGGER, IMU, OTHERS, CONTINUED_4, CONTINUED_12
        else:
            unknown += 1
        i += 1

    state[S_HAVE_TIME] = have
    state[S_TIME_BASE] = base
    state[S_TIME_LOW] = tl
    state[S_LAST_HIGH] = last_hi
    state[S_LOOPS] = loops
    state[S_Y] = y
    state[S_BASE_X] = bx
    state[S_VECT_POL] = vp
    state[S_NON_CD] = non_cd
    state[S_T_MAX] = tmax
    state[S_DROPPED] = dropped
    state[S_LATE] = late
    state[S_TIME_LOW_BACK] = back
    state[S_UNKNOWN] = unknown
    return n, i


# ---------------------------------------------------------------------------- EVT 2.0
@numba.njit(cache=True, nogil=True)
def decode_evt2(words, state, out, width, height):
    """EVT 2.0, 32-bit words, ``type = w >> 28``.

    ``t = TIME_HIGH payload << 6 | ts low 6 bits`` plus loops · 2^34; a loop is counted when the TIME_HIGH
    payload drops by at least 2^27 (the time would drop by ≥ 2^33 µs). CD words before the first TIME_HIGH are
    skipped. EXT_TRIGGER, OTHERS and CONTINUED are skipped.
    """
    have = state[S_HAVE_TIME]
    base = state[S_TIME_BASE]
    last_hi = state[S_LAST_HIGH]
    loops = state[S_LOOPS]
    tmax = state[S_T_MAX]
    dropped = state[S_DROPPED]
    late = state[S_LATE]
    unknown = state[S_UNKNOWN]

    nw = words.shape[0]
    cap = out.shape[0]
    n = 0
    i = 0
    if nw > cap:
        nw = cap
    while i < nw:
        w = np.int64(words[i])
        typ = w >> 28
        if typ < 2:
            if have:
                x = (w >> 11) & 0x7FF
                y = w & 0x7FF
                if x < width and y < height:
                    t = base + ((w >> 22) & 0x3F)
                    e = out[n]
                    e.t = t
                    e.x = x
                    e.y = y
                    e.p = typ
                    n += 1
                    if t < tmax:
                        late += 1
                    else:
                        tmax = t
                else:
                    dropped += 1
        elif typ == 0x8:
            hi = w & 0xFFFFFFF
            if have:
                if last_hi - hi >= 134217728:  # 2^27
                    loops += 1
                    state[S_LOOP_EVENTS] += 1
            else:
                have = 1
            last_hi = hi
            base = (hi << 6) + (loops << 34)
        elif typ == 0xA or typ == 0xE or typ == 0xF:
            pass
        else:
            unknown += 1
        i += 1

    state[S_HAVE_TIME] = have
    state[S_TIME_BASE] = base
    state[S_LAST_HIGH] = last_hi
    state[S_LOOPS] = loops
    state[S_T_MAX] = tmax
    state[S_DROPPED] = dropped
    state[S_LATE] = late
    state[S_UNKNOWN] = unknown
    return n, i


# ---------------------------------------------------------------------------- EVT 2.1
# bit index of a power of two below 2^32: table[((lsb * 0x077CB531) mod 2^32) >> 27] (de Bruijn sequence)
_DEBRUIJN32 = np.zeros(32, dtype=np.int64)
for _i in range(32):
    _DEBRUIJN32[(((1 << _i) * 0x077CB531) & 0xFFFFFFFF) >> 27] = _i
del _i

@numba.njit(cache=True, nogil=True)
def decode_evt21(words, state, out, width, height, legacy):
    """EVT 2.1, 64-bit little-endian words, ``type = bits [63:60]``; ``legacy`` swaps the two 32-bit halves first
    (IMX636 order, header option ``endianness=legacy``).

    Event_2D: ts low 6 bits [59:54], x base [53:43], y [42:32], valid mask [31:0]: one event per set bit i at
    x base + i, polarity = type. TIME_HIGH: [59:32] = ts bits 33..6, loops as in EVT 2.0.
    """
    have = state[S_HAVE_TIME]
    base = state[S_TIME_BASE]
    last_hi = state[S_LAST_HIGH]
    loops = state[S_LOOPS]
    tmax = state[S_T_MAX]
    dropped = state[S_DROPPED]
    late = state[S_LATE]
    unknown = state[S_UNKNOWN]

    nw = words.shape[0]
    cap = out.shape[0] - 32
    n = 0
    i = 0
    while i < nw:
        if n > cap:
            break
        w = words[i]
        if legacy:
            w = (w >> np.uint64(32)) | (w << np.uint64(32))
        hi32 = np.int64(w >> np.uint64(32))
        lo32 = np.int64(w & np.uint64(0xFFFFFFFF))
        typ = hi32 >> 28
        if typ < 2:
            if have and lo32 != 0:
                y = hi32 & 0x7FF
                xb = (hi32 >> 11) & 0x7FF
                t = base + ((hi32 >> 22) & 0x3F)
                y_ok = y < height
                n0 = n
                m = lo32
                while m:  # one event per set bit, lowest first
                    lsb = m & -m
                    m ^= lsb
                    x = xb + _DEBRUIJN32[((lsb * 0x077CB531) & 0xFFFFFFFF) >> 27]
                    if y_ok and x < width:
                        e = out[n]
                        e.t = t
                        e.x = x
                        e.y = y
                        e.p = typ
                        n += 1
                    else:
                        dropped += 1
                if n > n0:
                    if t < tmax:
                        late += n - n0
                    else:
                        tmax = t
        elif typ == 0x8:
            hi = hi32 & 0xFFFFFFF
            if have:
                if last_hi - hi >= 134217728:
                    loops += 1
                    state[S_LOOP_EVENTS] += 1
            else:
                have = 1
            last_hi = hi
            base = (hi << 6) + (loops << 34)
        elif typ == 0xA or typ == 0xE or typ == 0xF:
            pass
        else:
            unknown += 1
        i += 1

    state[S_HAVE_TIME] = have
    state[S_TIME_BASE] = base
    state[S_LAST_HIGH] = last_hi
    state[S_LOOPS] = loops
    state[S_T_MAX] = tmax
    state[S_DROPPED] = dropped
    state[S_LATE] = late
    state[S_UNKNOWN] = unknown
    return n, i


# ---------------------------------------------------------------------------- DAT
@numba.njit(cache=True, nogil=True)
def decode_dat(words, state, out, width, height):
    """DAT CD records as pairs of 32-bit words ``(t, w)``: ``x = w & 0x3FFF``, ``y = (w >> 14) & 0x3FFF``,
    ``p = (w >> 28) & 0xF`` (non-zero = ON). The 32-bit µs timestamp wraps every 2^32 µs; a loop is counted when
    it drops by at least 2^31. ``words`` holds 2 entries per record; the return value counts records.
    """
    have = state[S_HAVE_TIME]
    last = state[S_LAST_HIGH]
    loops = state[S_LOOPS]
    tmax = state[S_T_MAX]
    dropped = state[S_DROPPED]
    late = state[S_LATE]

    nr = words.shape[0] // 2
    cap = out.shape[0]
    if nr > cap:
        nr = cap
    n = 0
    for i in range(nr):
        ts = np.int64(words[2 * i])
        w = np.int64(words[2 * i + 1])
        if have:
            if last - ts >= 2147483648:
                loops += 1
                state[S_LOOP_EVENTS] += 1
        else:
            have = 1
        last = ts
        x = w & 0x3FFF
        y = (w >> 14) & 0x3FFF
        if x < width and y < height:
            t = ts + (loops << 32)
            e = out[n]
            e.t = t
            e.x = x
            e.y = y
            e.p = 1 if (w >> 28) & 0xF else 0
            n += 1
            if t < tmax:
                late += 1
            else:
                tmax = t
        else:
            dropped += 1

    state[S_HAVE_TIME] = have
    state[S_LAST_HIGH] = last
    state[S_LOOPS] = loops
    state[S_T_MAX] = tmax
    state[S_DROPPED] = dropped
    state[S_LATE] = late
    return n, nr


# ---------------------------------------------------------------------------- encoders (tests, benchmarks, export)
@numba.njit(cache=True, nogil=True)
def encode_evt3(t, x, y, p, out, vectorize, th_every_us):
    """Encode events as EVT 3.0 words into ``out`` (uint16, large enough: 4 + 6 per event is always enough).

    Events are encoded in the given order, which the decoder reproduces exactly: TIME_HIGH when the high part
    changes (intermediate TIME_HIGH words are inserted across gaps, at least every ``th_every_us`` µs, so wraps
    are never missed), TIME_LOW when the low part changes, ADDR_Y when the row changes. With ``vectorize``, a run
    of ≥ 3 consecutive events with equal t, y, p and increasing x (steps of at most 12 columns) becomes
    VECT_BASE_X + VECT_12 / VECT_8 words. Timestamps must be ≥ 0; the decoder returns them modulo 2^24 µs plus
    the loops it counts from the first TIME_HIGH (so a stream starting after 16.7 s decodes with an offset).
    Returns the number of words written.
    """
    n = t.shape[0]
    k = 0
    cur_abs_hi = -1  # absolute high part (t >> 12) of the last TIME_HIGH written
    cur_lo = -1
    cur_y = -1
    step = th_every_us >> 12
    if step < 1:
        step = 1
    i = 0
    while i < n:
        ti = t[i]
        abs_hi = ti >> 12
        lo = ti & 0xFFF
        if abs_hi != cur_abs_hi:
            if cur_abs_hi >= 0 and abs_hi > cur_abs_hi:
                h = cur_abs_hi + step
                while h < abs_hi:
                    out[k] = 0x8000 | (h & 0xFFF)
                    k += 1
                    h += step
            out[k] = 0x8000 | (abs_hi & 0xFFF)
            k += 1
            cur_lo = 0  # the decoder resets the low part on the first and on every changing TIME_HIGH
            cur_abs_hi = abs_hi
        if lo != cur_lo:
            out[k] = 0x6000 | lo
            k += 1
            cur_lo = lo
        if y[i] != cur_y:
            out[k] = np.uint16(y[i] & 0x7FF)
            k += 1
            cur_y = y[i]
        # a run for a vector: same t, y, p, increasing x with gaps of at most 12 columns
        j = i + 1
        if vectorize:
            while (j < n and t[j] == ti and y[j] == y[i] and p[j] == p[i] and x[j] > x[j - 1]
                   and x[j] - x[j - 1] <= 12 and x[j] < 2048):
                j += 1
        if j - i >= 3:
            x0 = np.int64(x[i])
            out[k] = 0x3000 | (np.int64(p[i] & 1) << 11) | x0
            k += 1
            span = np.int64(x[j - 1]) - x0 + 1
            off = 0
            q = i
            while off < span:
                nb = 12 if span - off > 8 else 8
                m = np.int64(0)
                while q < j and np.int64(x[q]) - x0 < off + nb:
                    m |= np.int64(1) << (np.int64(x[q]) - x0 - off)
                    q += 1
                out[k] = (0x4000 if nb == 12 else 0x5000) | m
                k += 1
                off += nb
            i = j
        else:
            out[k] = 0x2000 | (np.int64(p[i] & 1) << 11) | (np.int64(x[i]) & 0x7FF)
            k += 1
            i += 1
    return k


@numba.njit(cache=True, nogil=True)
def encode_evt2(t, x, y, p, out, th_every_us):
    """Encode events as EVT 2.0 words into ``out`` (uint32, 2 per event + gaps is enough); given order kept.
    A TIME_HIGH is written whenever ``t >> 6`` changes, and at least every ``th_every_us`` across gaps."""
    n = t.shape[0]
    k = 0
    cur = -1
    step = th_every_us >> 6
    if step < 1:
        step = 1
    for i in range(n):
        hi = t[i] >> 6
        if hi != cur:
            if cur >= 0 and hi > cur:
                h = cur + step
                while h < hi:
                    out[k] = np.uint32(0x80000000 | (h & 0xFFFFFFF))
                    k += 1
                    h += step
            out[k] = np.uint32(0x80000000 | (hi & 0xFFFFFFF))
            k += 1
            cur = hi
        out[k] = np.uint32((np.int64(p[i] & 1) << 28) | ((t[i] & 0x3F) << 22) | (np.int64(x[i]) << 11)
                           | np.int64(y[i]))
        k += 1
    return k


@numba.njit(cache=True, nogil=True)
def encode_evt21(t, x, y, p, out, legacy, th_every_us):
    """Encode events as EVT 2.1 words into ``out`` (uint64, 2 per event + gaps is enough); given order kept.
    Consecutive events with equal t, y, p and strictly increasing x within 32 columns share one word."""
    n = t.shape[0]
    k = 0
    cur = -1
    step = th_every_us >> 6
    if step < 1:
        step = 1
    i = 0
    while i < n:
        hi = t[i] >> 6
        if hi != cur:
            if cur >= 0 and hi > cur:
                h = cur + step
                while h < hi:
                    w = np.uint64((0x8 << 28) | (h & 0xFFFFFFF)) << np.uint64(32)
                    if legacy:
                        w = (w >> np.uint64(32)) | (w << np.uint64(32))
                    out[k] = w
                    k += 1
                    h += step
            w = np.uint64((0x8 << 28) | (hi & 0xFFFFFFF)) << np.uint64(32)
            if legacy:
                w = (w >> np.uint64(32)) | (w << np.uint64(32))
            out[k] = w
            k += 1
            cur = hi
        j = i + 1
        while j < n and t[j] == t[i] and y[j] == y[i] and p[j] == p[i] and x[j] > x[j - 1] and x[j] - x[i] < 32:
            j += 1
        x0 = np.int64(x[i])
        m = np.int64(0)
        for q in range(i, j):
            m |= np.int64(1) << (np.int64(x[q]) - x0)
        high = (np.int64(p[i] & 1) << 28) | ((t[i] & 0x3F) << 22) | (x0 << 11) | np.int64(y[i])
        w = (np.uint64(high) << np.uint64(32)) | np.uint64(m)
        if legacy:
            w = (w >> np.uint64(32)) | (w << np.uint64(32))
        out[k] = w
        k += 1
        i = j
    return k
