"""Event Trail Suppression (ETS), the offline preprocessing of NER-Net, exact and fast, in memory and on files.

In low light a brightness edge leaves a *trail* at a pixel: a run of same-polarity events with growing gaps.
ETS keeps every event but rewrites the timestamps of each trail to its first timestamp plus 1 µs per further
event, then re-sorts the stream. Count, x, y and p are unchanged.

The rule (official ``Event_Trail_Suppression/ets.py``, reproduced from its description, quirks included). Per
pixel, events in time order; the first event of a pixel starts a potential trail (``num = 0``, ``gap = 0``,
``start = prev_t = t``, ``prev_p = p``). Every later event, with ``thr`` chosen by **its own** polarity
(``t_on`` for ON, ``t_off`` for OFF) and ``d = t − prev_t`` measured from the previous event's **original**
timestamp, continues the trail when ``p == prev_p and d > gap and d < thr`` (strict): then ``num += 1``,
``gap = d − soft``, ``prev_t = t`` and its timestamp becomes ``start + num``. Otherwise it restarts (state as
for a first event, timestamp unchanged). Consequences: the second event after a restart is a trail member
whenever ``0 < d < thr``; two equal timestamps restart whenever ``gap >= 0`` (always with the default
``soft = 0``); a polarity change restarts. Finally all events are sorted **stably** by the new timestamp,
ties in raster-pixel order (``y·W + x``), then in per-pixel order. Defaults: ``t_on = t_off = 1e6 µs``,
``soft = 0``.

Equal timestamps at one pixel. The official script orders each pixel's events with NumPy's default
(non-stable) argsort, so the order among a pixel's equal timestamps is whatever its quicksort produced (in the
NumPy <= 1.23 the script needs: stream order for pixels with at most 16 events, where the introsort is a plain
insertion sort; unspecified beyond). Here it is
always **stream order** (a stable sort). It matters only when such events differ in polarity, or when
``soft > 0`` lets an equal timestamp continue a trail: identical (t, x, y, p) rows are interchangeable.

How it is computed (:func:`ets`, :class:`EtsStream`). For time-sorted input, visiting events in stream order
with one state row per pixel visits each pixel's events in its stable time order, so no grouping sort is
needed: one numba pass over the events applies the rule (this equals grouping with a stable
``lexsort((t, y·W + x))`` and looping per pixel; unsorted input is first put in stable time order, which gives
the same per-pixel order as that lexsort). Each event is packed into one int64 key
``(tc − base) << S | y << (xb+1) | x << 1 | p``; the output order (corrected t, raster pixel, per-pixel order)
is a stable sort of the keys on bits ``[1, 64)`` over stream order: an LSD radix sort on the time bits
(1024-bucket passes), then an insertion pass that orders pixels within runs of equal time (a radix sort on all
bits when those runs are long), then the keys are unpacked. A stable ``np.lexsort`` takes over when the
time span does not fit a 62-bit key (about ``2**(62 − S)`` µs: 12 days at 1280x720). The results equal
:func:`ets_reference`, a plain per-pixel Python port used as the test oracle and benchmark baseline.

Streaming (:class:`EtsStream`, :func:`ets_file`). The per-pixel state (prev_t, prev_p, start, num, gap) is
carried from chunk to chunk, so corrected timestamps equal a whole-file run. Corrected timestamps move earlier
(with ``soft <= 0``, ``start + num <= t``), by an amount that is *not* bounded by ``max(t_on, t_off)``: a trail
whose gaps keep growing below the threshold may last up to about ``thr²/2`` µs, and with ``soft > 0`` gaps need
not even grow (and a corrected time may exceed the original). So instead of a fixed look-behind, every chunk
computes the exact lower bound ``L`` on the corrected timestamp of any event still to come, from the carried
state (proof in :func:`livenight._ets_kernel.future_lower_bound`):

    L = min(t_end, min over live pixels q of start_q + num_q + 1),

where ``t_end`` is the last timestamp read and a pixel is *live* when ``t_end − prev_t_q < thr(prev_p_q)``
(only then can a future event, whose ``t >= t_end``, still continue its trail; any other future event restarts
and keeps a timestamp ``>= t_end``, and trail members after such a restart get ``>= t_end + 1``). Each chunk is
sorted into a run; events with corrected time ``< L`` leave (the runs' heads, merged by a stable sort of their
concatenation in stream order); those ``>= L`` are held, since a future event may tie with them at a lower
pixel index. The output is therefore globally sorted and identical to the whole-array result. The hold-back
spans from the oldest trail that can still continue: at least ``thr`` of events on dense recordings (a pixel
that fired within the last ``thr`` may still continue from ``start + num + 1``), and seconds when trails decay
slowly (on a simulated 2 s night recording with the default 1 s thresholds, nearly all of it). Held events
cost 16 bytes each; :attr:`EtsStream.peak_held` reports the largest count.

Differences from the official tool (``ets.py`` / ``ets_utils.py``): input and output are :data:`EVENT_DTYPE`
(int64 µs) instead of float64 ``[t, x, y, p]`` rows; per-pixel order among equal timestamps is stream order (see
above); the h5 output is a valid RLED file: images are copied with their timestamps and ``event_indices`` /
``num_imgs`` are recomputed for the new timestamps (the official writes ``num_imgs = 0`` and no
``event_indices``); no ``--cut`` cropping, event-frame PNGs or ``.npy`` output; works on NumPy >= 1.24.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._optional import require
from .errors import ShapeError, SourceError
from .events import EVENT_DTYPE, check_sensor_size

DEFAULT_T_ON_US = 1_000_000
DEFAULT_T_OFF_US = 1_000_000
DEFAULT_SOFT_US = 0
DEFAULT_CHUNK_EVENTS = 1 << 20
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min
_MAX_KEY_BITS = 62

_kern = None


def _kernels():
    global _kern
    if _kern is None:
        require("numba", "Event Trail Suppression (livenight.ets)")
        from . import _ets_kernel

        _kern = _ets_kernel
    return _kern


# ---------------------------------------------------------------------------- parameters
def _real(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of µs (got {value!r})") from None
    if math.isnan(v):
        raise ValueError(f"{name} must be a number of µs (got NaN)")
    return v


def _threshold(value, name: str) -> int:
    """``ceil(thr)`` as int64: for integer ``d``, ``d < thr`` ⇔ ``d < ceil(thr)``; ±inf clamp to int64."""
    v = _real(value, name)
    if v == math.inf:
        return _INT64_MAX
    if v == -math.inf:
        return -_INT64_MAX
    if isinstance(value, (int, np.integer)):
        return max(-_INT64_MAX, min(_INT64_MAX, int(value)))
    return max(-_INT64_MAX, min(_INT64_MAX, math.ceil(v)))


def _soft_ceil(value) -> int:
    """``ceil(soft)``: for integer ``d``, ``d > d_prev − soft`` ⇔ ``d > d_prev − ceil(soft)``."""
    v = _real(value, "soft_us")
    if math.isinf(v) or abs(v) > 2**52:
        raise ValueError(f"soft_us must be a finite number of µs below 2**52 in magnitude (got {value!r})")
    return int(value) if isinstance(value, (int, np.integer)) else math.ceil(v)


def _check_dtype(events, what: str) -> None:
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        got = getattr(events, "dtype", type(events).__name__)
        raise ShapeError(f"{what}: expected a 1-D array of livenight.events.EVENT_DTYPE (got {got})")


def _raise_fault(events: np.ndarray, code: int, i: int, sensor: tuple[int, int], what: str,
                 t_prev: int | None = None) -> None:
    k = _kernels()
    e = events[i]
    if code == k.OFF_SENSOR:
        raise SourceError(f"{what}: event {i} at (x={int(e['x'])}, y={int(e['y'])}) lies outside the "
                          f"{sensor[0]}x{sensor[1]} sensor")
    if code == k.BAD_POLARITY:
        raise SourceError(f"{what}: event {i} has polarity {int(e['p'])}; EVENT_DTYPE uses 1 = ON, 0 = OFF")
    if code == k.UNSORTED:
        if i == 0:
            raise SourceError(f"{what}: t={int(e['t'])} µs precedes the previous chunk's last event (t={t_prev} µs)")
        raise SourceError(f"{what}: timestamps not sorted at index {i}: t={int(e['t'])} µs after "
                          f"t={int(events[i - 1]['t'])} µs")


# ---------------------------------------------------------------------------- the streaming core
_MAX_DIGIT_BITS = 10  # 1024-bucket radix passes: histograms and write heads stay in L1
_MOVES_PER_EVENT = 8  # insertion moves allowed per event when ordering pixels within equal times (see sort_keys)


def _digit_bits(t_bits: int) -> int:
    """Digit width for radix passes over ``t_bits`` bits: as few passes as 10-bit digits need, evenly split."""
    if t_bits <= 0:
        return _MAX_DIGIT_BITS
    return -(-t_bits // -(-t_bits // _MAX_DIGIT_BITS))


class EtsStream:
    """ETS over a time-sorted event stream fed in chunks; output is sorted and equals :func:`ets` on the whole.

    ``push(chunk)`` returns the events whose corrected timestamp can no longer be preceded by a later event
    (sorted, :data:`EVENT_DTYPE`); ``flush()`` returns the rest at the end of the stream. The per-pixel state
    costs 32 bytes per pixel (30 MB at 1280x720); held-back events 16 bytes each.

    Example:
        >>> s = EtsStream((346, 260))                              # doctest: +SKIP
        >>> out = np.concatenate([s.push(c) for c in chunks] + [s.flush()])
    """

    def __init__(self, sensor_size: tuple[int, int], t_on_us: float = DEFAULT_T_ON_US,
                 t_off_us: float = DEFAULT_T_OFF_US, soft_us: float = DEFAULT_SOFT_US) -> None:
        self._k = _kernels()
        self.sensor_size = check_sensor_size(sensor_size)
        width, height = self.sensor_size
        self.num_pixels = width * height
        self._xb = max(1, (width - 1).bit_length())
        self._yb = max(1, (height - 1).bit_length())
        self._shift = self._xb + self._yb + 1  # key bits below the time: y, x, p
        # thresholds indexed by polarity (OFF, ON), as ceilings
        self._thr = np.array([_threshold(t_off_us, "t_off_us"), _threshold(t_on_us, "t_on_us")], np.int64)
        self._soft = _soft_ceil(soft_us)
        self._state = np.zeros((self.num_pixels, 4), dtype=np.int64)  # zeros = no pixel has fired
        # held-back events: one sorted run per pushed chunk, in stream order, as (corrected t, low key part)
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._last_t: int | None = None
        self._finished = False
        #: events pushed / returned, trails begun, events whose timestamp changed, largest shift (µs), largest
        #: number of events held back at once
        self.events_in = 0
        self.events_out = 0
        self.trails = 0
        self.moved = 0
        self.max_shift_us = 0
        self.peak_held = 0

    @property
    def held(self) -> int:
        """Events processed but not returned yet."""
        return sum(int(r[0].shape[0]) for r in self._runs)

    def push(self, events: np.ndarray) -> np.ndarray:
        """Process a time-sorted chunk (not earlier than the previous one); return what is safe to emit, sorted."""
        return self._push(events, final=False)

    def flush(self) -> np.ndarray:
        """End of stream: return every held event (sorted). The stream accepts nothing afterwards."""
        out = self._push(np.empty(0, dtype=EVENT_DTYPE), final=True)
        self._finished = True
        return out

    def _sort(self, tc: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stable sort of (tc, low) pairs by (tc, pixel); ties keep their order (stream order)."""
        n = tc.shape[0]
        if n < 2:
            return tc, low
        k, s = self._k, self._shift
        t_min = int(tc.min())
        nbits = (int(tc.max()) - t_min).bit_length() + s
        if nbits > _MAX_KEY_BITS:  # a span too long for one 62-bit key (about 2**(62 − s) µs): exact, slower
            order = np.lexsort((low >> 1, tc))
            return tc[order], low[order]
        keys = k.sort_keys(k.make_keys(tc, low, t_min, s), s, nbits, _digit_bits(nbits - s),
                           _MOVES_PER_EVENT * n + 64)
        return k.split_keys(keys, t_min, s)

    def _whole(self, events: np.ndarray) -> np.ndarray:
        """A fresh stream given a whole non-empty array: one pass that checks and applies the rule, one sort.

        Keys are written by the rule kernel, relative to ``t_base = t[0]``: every corrected time is
        ``start + num >= start >= t[0]``, and at most ``t[-1]`` when ``soft <= 0`` (each trail step then needs
        ``d >= 1``, so ``start + num <= t``), at most ``t[-1] + n`` otherwise (``num < n``). Unsorted input is
        detected on the way and redone in stable time order. No statistics are kept.
        """
        k, s = self._k, self._shift
        n = int(events.shape[0])
        t_base = int(events["t"][0])
        t_bits = (int(events["t"].max()) - t_base + (n if self._soft > 0 else 0)).bit_length()
        if t_bits + s <= _MAX_KEY_BITS:
            keys = np.empty(n, np.int64)
            code, i = k.process_keys(events, self.sensor_size[0], self.sensor_size[1], self._xb, self._state,
                                     self._thr, self._soft, t_base, s, keys)
            if code == k.OK:
                keys = k.sort_keys(keys, s, t_bits + s, _digit_bits(t_bits), _MOVES_PER_EVENT * n + 64)
                out = np.empty(n, dtype=EVENT_DTYPE)
                k.decode(keys, t_base, s, self._xb, self._yb, out)
                self._finished = True
                return out
            self._state[:] = 0
        # unsorted, a fault, or a time span too long for one 62-bit key (the generic path, lexsort, exact)
        code, i = k.validate(events, self.sensor_size[0], self.sensor_size[1], _INT64_MIN)
        if code not in (k.OK, k.UNSORTED):  # indices of the caller's array
            _raise_fault(events, code, i, self.sensor_size, "ets")
        if code == k.UNSORTED:
            events = events[np.argsort(events["t"], kind="stable")]
            if t_bits + s <= _MAX_KEY_BITS:
                return self._whole(events)
        self._runs.append(self._sort(*self._process(events)))
        return self._push(np.empty(0, dtype=EVENT_DTYPE), final=True)

    def _process(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = int(events.shape[0])
        tc = np.empty(n, np.int64)
        low = np.empty(n, np.int64)
        trails, moved, shift = self._k.process(events, self.sensor_size[0], self._xb, self._state, self._thr,
                                               self._soft, tc, low)
        self.trails += int(trails)
        self.moved += int(moved)
        self.max_shift_us = max(self.max_shift_us, int(shift))
        self._last_t = int(events["t"][-1])
        self.events_in += n
        return tc, low

    def _push(self, events: np.ndarray, final: bool) -> np.ndarray:
        if self._finished:
            raise RuntimeError("EtsStream: flush() was called; start a new stream")
        what = "EtsStream.push"
        k = self._k
        _check_dtype(events, what)
        code, i = k.validate(events, self.sensor_size[0], self.sensor_size[1],
                             _INT64_MIN if self._last_t is None else self._last_t)
        if code != k.OK:
            _raise_fault(events, code, i, self.sensor_size, what, self._last_t)
        if events.size:
            self._runs.append(self._sort(*self._process(events)))
        if final:
            bound = None
        elif self._last_t is None:
            bound = _INT64_MIN  # nothing seen yet: nothing to emit
        else:
            bound = int(k.future_lower_bound(self._state, self._last_t, self._thr))
        # every run is sorted; its events below the bound go out now, the rest stays (a suffix of the run)
        heads, runs = [], []
        for rt, rl in self._runs:
            m = rt.shape[0]
            cut = m if bound is None else int(np.searchsorted(rt, bound, side="left"))
            if cut:
                heads.append((rt[:cut], rl[:cut]))
            if cut < m:
                # a short tail is copied so that the emitted part of a big run can be freed
                runs.append((rt[cut:], rl[cut:]) if 2 * (m - cut) > m else (rt[cut:].copy(), rl[cut:].copy()))
        self._runs = runs
        if len(heads) == 1:
            tc, low = heads[0]
        elif heads:  # runs are in stream order, so a stable sort of their concatenation keeps ties in order
            tc, low = self._sort(np.concatenate([h[0] for h in heads]), np.concatenate([h[1] for h in heads]))
        else:
            tc = low = np.empty(0, np.int64)
        out = np.empty(tc.shape[0], dtype=EVENT_DTYPE)
        k.decode_pairs(tc, low, self._xb, self._yb, out)
        self.peak_held = max(self.peak_held, self.held)
        self.events_out += out.shape[0]
        return out


# ---------------------------------------------------------------------------- in memory
def ets(events: np.ndarray, sensor_size: tuple[int, int], t_on_us: float = DEFAULT_T_ON_US,
        t_off_us: float = DEFAULT_T_OFF_US, soft_us: float = DEFAULT_SOFT_US) -> np.ndarray:
    """Event Trail Suppression of ``events`` (:data:`EVENT_DTYPE`) on a ``(width, height)`` sensor.

    Returns a new :data:`EVENT_DTYPE` array with the same events, trail timestamps rewritten to
    ``start + 1, start + 2, …`` µs, sorted stably by the new timestamp (ties in raster-pixel, then per-pixel
    order), exactly as the official script (see the module docstring for the rule and the one convention on
    equal timestamps). ``events`` is never modified; unsorted input is first put in stable time order.

    Args:
        t_on_us, t_off_us: a trail continues only while the gap is below this (µs), chosen by the polarity of
            the event being tested (ON / OFF). Any real number; ``math.inf`` disables the limit.
        soft_us: tolerance: the next gap must exceed the previous gap minus ``soft_us``.
    """
    sensor = check_sensor_size(sensor_size)
    _check_dtype(events, "ets")
    stream = EtsStream(sensor, t_on_us, t_off_us, soft_us)
    return stream._whole(events) if events.size else np.empty(0, dtype=EVENT_DTYPE)


def ets_reference(events: np.ndarray, sensor_size: tuple[int, int], t_on_us: float = DEFAULT_T_ON_US,
                  t_off_us: float = DEFAULT_T_OFF_US, soft_us: float = DEFAULT_SOFT_US) -> np.ndarray:
    """The same rule as :func:`ets`, written as plainly as possible in pure Python (test oracle, benchmark baseline).

    Follows the official structure: relative times, per-pixel lists, pixels visited in raster order, a stable
    per-pixel time sort, the sequential rule with the raw (float-capable) parameters, then a stable sort by time.
    """
    width, height = check_sensor_size(sensor_size)
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise ShapeError("ets_reference: expected a 1-D array of livenight.events.EVENT_DTYPE")
    if events.size and (int(events["x"].max()) >= width or int(events["y"].max()) >= height):
        raise SourceError(f"ets_reference: events lie outside the {width}x{height} sensor")
    if events.size == 0:
        return np.empty(0, dtype=EVENT_DTYPE)
    ts = events["t"].tolist()
    t0 = ts[0]
    pixels: dict[int, list[tuple[int, int]]] = {}
    for t, x, y, p in zip(ts, events["x"].tolist(), events["y"].tolist(), events["p"].tolist()):
        pixels.setdefault(y * width + x, []).append((t - t0, p))
    rows = []
    for q in sorted(pixels):  # raster order
        x, y = q % width, q // width
        evs = sorted(pixels[q], key=lambda e: e[0])  # stable: equal timestamps keep stream order
        num = gap = start = prev_t = prev_p = 0
        for n, (t, p) in enumerate(evs):
            if n == 0:
                num, prev_p, prev_t, start, gap = 0, p, t, t, 0
            else:
                thr = t_on_us if p == 1 else t_off_us
                d = t - prev_t
                if p == prev_p and d > gap and d < thr:
                    num += 1
                    gap = d - soft_us
                    prev_t = t
                    t = start + num
                    prev_p = p
                else:
                    num, prev_p, prev_t, start, gap = 0, p, t, t, 0
            rows.append((t + t0, x, y, p))
    rows.sort(key=lambda r: r[0])  # stable
    out = np.empty(len(rows), dtype=EVENT_DTYPE)
    out["t"] = [r[0] for r in rows]
    out["x"] = [r[1] for r in rows]
    out["y"] = [r[2] for r in rows]
    out["p"] = [r[3] for r in rows]
    return out


# ---------------------------------------------------------------------------- files
@dataclass(frozen=True)
class EtsSummary:
    """What :func:`ets_file` did."""

    in_path: str
    out_path: str
    sensor_size: tuple[int, int]
    num_events: int
    num_images: int
    trails: int
    moved_events: int
    max_shift_us: int
    peak_held_events: int
    seconds: float
    event_indices: str  # how the output's event_indices were made

    @property
    def events_per_s(self) -> float:
        return self.num_events / self.seconds if self.seconds > 0 else float("inf")


def ets_file(in_path: str | os.PathLike, out_path: str | os.PathLike, t_on_us: float = DEFAULT_T_ON_US,
             t_off_us: float = DEFAULT_T_OFF_US, soft_us: float = DEFAULT_SOFT_US,
             chunk_events: int = DEFAULT_CHUNK_EVENTS, progress: bool = True, ts_unit: str = "auto",
             sensor_size: tuple[int, int] | None = None, exposure_us: int | None = None,
             window_half_us: int = 10_000) -> EtsSummary:
    """ETS of an RLED h5 recording, chunk by chunk, into a new valid RLED file; the result equals :func:`ets`.

    Images are copied with their timestamps. ``event_indices`` is recomputed for the new timestamps, keeping
    each image's window in *time*:

    * ``exposure_us=None`` and the input has ``event_indices``: image *i*'s window is
      ``[t_in[a_i], t_in[b_i])`` with ``(a_i, b_i)`` the input's row (an end at the last event means "to the
      end"), i.e. the input's time window; the output row counts the new events before each bound. When the
      input's windows were cut by time (RLED: ±10 ms around the exposure midpoint) and ETS changes nothing,
      the rows are unchanged.
    * otherwise: ±``window_half_us`` around ``timestamp − exposure_us // 2`` (exposure 0 when None), as
      :class:`~livenight.drivers.rled.RledWriter` computes it.

    Memory: the per-pixel state plus one chunk plus the held-back events (see the module docstring). On an
    error the partial output file is removed.
    """
    from tqdm import tqdm

    from livenight.drivers.rled import RledFile, RledWriter

    if int(chunk_events) <= 0:
        raise ValueError(f"chunk_events must be a positive integer (got {chunk_events!r})")
    chunk_events = int(chunk_events)
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.exists() and in_path.exists() and os.path.samefile(in_path, out_path):
        raise ValueError(f"{out_path}: the output would overwrite the input; choose another path")
    t_start = time.perf_counter()
    with RledFile(in_path, ts_unit=ts_unit, sensor_size=sensor_size) as f:
        stream = EtsStream(f.sensor_size, t_on_us, t_off_us, soft_us)  # parameters checked before writing
        n_img = f.num_images
        img_ts = f.image_timestamps_us() if n_img else np.empty(0, np.int64)
        in_idx = f.event_indices
        from_input = bool(exposure_us is None and in_idx is not None and n_img and in_idx.shape[0] == n_img)
        if from_input:
            # time bounds of every window, filled in as the chunks holding them are read. A bound not read yet
            # lies at or after the last timestamp read, so it stays INT64_MAX meanwhile: every event emitted
            # so far (corrected t < L <= last t read) lies before it, which is what INT64_MAX counts.
            bound_idx = in_idx.reshape(-1)
            bounds = np.full(bound_idx.shape[0], _INT64_MAX, np.int64)
            counts = np.zeros(bound_idx.shape[0], np.int64)
            how = "input windows kept in time"
        else:
            exp = 0 if exposure_us is None else int(exposure_us)
            how = f"±{window_half_us} µs around image timestamp − {exp // 2} µs"
        writer = RledWriter(out_path, f.sensor_size, window_half_us=window_half_us)
        try:
            for i in range(n_img):
                writer.add_image(f.image(i), int(img_ts[i]), 0 if from_input else exp)

            def emit(batch: np.ndarray) -> None:
                if batch.size:
                    if from_input:
                        counts[:] += np.searchsorted(batch["t"], bounds, side="left")
                    writer.add_events(batch)

            with tqdm(total=f.num_events, unit="ev", unit_scale=True, disable=not progress,
                      desc=f"ets {in_path.name}") as bar:
                for a0, ev in f.iter_chunks(chunk_events):
                    if from_input:
                        inside = (bound_idx >= a0) & (bound_idx < a0 + ev.shape[0])
                        bounds[inside] = ev["t"][bound_idx[inside] - a0]
                    emit(stream.push(ev))
                    bar.update(ev.shape[0])
                emit(stream.flush())
            if from_input:
                writer.set_event_indices(counts.reshape(-1, 2))
        except BaseException:
            writer.close()
            out_path.unlink(missing_ok=True)  # no half-written recording left behind
            raise
        writer.close()
    return EtsSummary(str(in_path), str(out_path), stream.sensor_size, stream.events_out, n_img, stream.trails,
                      stream.moved, stream.max_shift_us, stream.peak_held, time.perf_counter() - t_start, how)


def run_ets_command(in_path: str | os.PathLike, out_path: str | os.PathLike, t_on_us: float | None = None,
                    t_off_us: float | None = None, soft_us: float | None = None, chunk_events: int | None = None,
                    progress: bool = True) -> int:
    """``livenight ets IN.h5 OUT.h5``: run :func:`ets_file` and print a summary; returns the exit status 0.

    ``None`` takes the default (t_on = t_off = 1e6 µs, soft = 0, 2**20 events per chunk).
    """
    summary = ets_file(in_path, out_path,
                       t_on_us=DEFAULT_T_ON_US if t_on_us is None else t_on_us,
                       t_off_us=DEFAULT_T_OFF_US if t_off_us is None else t_off_us,
                       soft_us=DEFAULT_SOFT_US if soft_us is None else soft_us,
                       chunk_events=DEFAULT_CHUNK_EVENTS if chunk_events is None else chunk_events,
                       progress=progress)
    s = summary
    share = s.moved_events / s.num_events if s.num_events else 0.0
    w, h = s.sensor_size
    print(f"ets: {s.in_path} -> {s.out_path}")
    print(f"  {s.num_events} events ({w}x{h}), {s.num_images} images; event_indices: {s.event_indices}")
    print(f"  {s.trails} trails; {s.moved_events} timestamps moved ({share:.1%}), largest shift "
          f"{s.max_shift_us} µs; at most {s.peak_held_events} events held back for ordering")
    print(f"  {s.seconds:.2f} s ({s.events_per_s / 1e6:.2f} M events/s)")
    return 0
