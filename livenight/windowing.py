"""Cutting the event stream into reconstruction windows.

Why it is like this:

* Window boundaries are integer arithmetic from a fixed origin: window k is
  ``[origin + k·stride_us, origin + k·stride_us + window_us)``. Nothing is accumulated, so a recording of hours
  has no drift, and a skipped window does not shift later ones.
* Three policies, one per way models are trained: fixed time, fixed event count, and the RLED protocol (image i
  gets events ``event_indices[i,0]:event_indices[i,1]``, ±10 ms around its exposure midpoint). A policy is frozen
  configuration that carries its own behaviour (bounds of window k, the newest complete window, a description, a
  rescaled copy, which reference frame belongs to a window); the :class:`Windower` is the one stateful object
  and never asks which policy it has. A new policy is one class here.
* The windower reads from the :class:`~livenight.ring.EventRing`: time windows by bisection on the ring's
  timestamps, count and RLED windows by global event index. A window is complete once the producer has covered
  its end (``ring.t_end_us`` for time, ``ring.head`` for indices).
* Windows are produced lazily (:meth:`Windower.windows` is a generator), so a consumer that stops after ``max_frames`` stops the
  windower too. Offline every window is produced in order. Live, when downstream is slower than real time, the
  windower jumps to the newest complete window and counts the ones it skipped, instead of queueing. A backlog of
  up to ``max_backlog`` windows is still worked off in order: a single slow frame (a page fault, the first
  frame's kernel set-up, a scheduler hiccup on a shared CPU) costs a little latency instead of a lost window,
  while an engine that is slower than real time for good still falls back to the newest window.
* A gap in the events longer than ``max_gap_us``, or a change of sensor size, marks the next window
  ``reset=True``: the recurrent state must start again. A time jump (a corrupt timestamp, a paused camera) is a
  gap too: the windower jumps over the empty windows to the one holding the next event instead of enumerating
  every window in between (an hour-long jump would otherwise be 90,000 empty frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

import numpy as np

from .ring import EventRing

#: limits of the +/− rescaling (viewer keys)
MIN_WINDOW_US, MAX_WINDOW_US = 1_000, 4_000_000
MIN_WINDOW_EVENTS, MAX_WINDOW_EVENTS = 1_000, 20_000_000


def _last_before(ref_t_us: np.ndarray, t_us: int) -> int | None:
    i = int(np.searchsorted(ref_t_us, t_us, side="right")) - 1  # the last frame exposed before t_us
    return i if i >= 0 else None


@dataclass(frozen=True)
class TimeWindows:
    """Fixed-duration windows every ``stride_us``; ``origin_us=None`` takes the stream's first timestamp."""

    window_us: int = 40_000
    stride_us: int = 40_000
    origin_us: int | None = None

    #: an event gap longer than this resets the state (µs)
    default_max_gap_us = 1_000_000
    #: windows can be empty (silences, time jumps)
    has_gaps = True

    def __post_init__(self) -> None:
        if self.window_us <= 0 or self.stride_us <= 0:
            raise ValueError(f"window_us and stride_us must be positive (got {self.window_us}, {self.stride_us})")

    def bounds(self, k: int, origin_us: int) -> tuple[int, int]:
        t0 = origin_us + k * self.stride_us
        return t0, t0 + self.window_us

    def describe(self) -> str:
        if self.window_us == self.stride_us:
            return f"contiguous {self.window_us / 1000:g} ms windows ({1e6 / self.stride_us:g} frames/s)"
        return f"{self.window_us / 1000:g} ms windows every {self.stride_us / 1000:g} ms"

    def to_json(self) -> dict:
        return {"kind": "time", "window_us": self.window_us, "stride_us": self.stride_us}

    # --- used by the Windower
    def start(self, windower: "Windower") -> None:
        windower.origin_us = self.origin_us

    def last_complete(self, w: "Windower") -> int:
        ring = w.ring
        if ring.t_end_us is None:
            return -1
        if w.origin_us is None:
            if ring.head == 0:
                return -1
            w.origin_us = ring.first_t_us  # the first event seen
        return (ring.t_end_us - w.origin_us - self.window_us) // self.stride_us

    def read(self, w: "Windower", k: int):
        t0, t1 = self.bounds(k, w.origin_us)
        events, i0, i1 = w.ring.read_time(t0, t1)
        w.ring.release_time(self.bounds(k + 1, w.origin_us)[0])
        return events, t0, t1, i0, i1, i0

    def jump_over_gap(self, w: "Windower", k: int) -> int:
        """The first window to produce at or after ``k``: past an empty stretch longer than the gap limit, the
        window holding the next event (so a time jump costs one reset, not millions of empty windows)."""
        t0, _ = self.bounds(k, w.origin_us)
        i = w.ring.index_at_time(t0)
        if i >= w.ring.head:  # nothing stored past t0 yet: the covered end of the stream is the earliest next event
            t_next = w.ring.t_end_us
            if t_next is None:
                return k
        else:
            t_next = int(w.ring.read_index(i, i + 1)["t"][0])
        if t_next - t0 <= w.max_gap_us:
            return k
        return max(k, (t_next - w.origin_us - self.window_us) // self.stride_us + 1)

    def expected(self, w: "Windower", t_end_us: int | None, num_events: int | None) -> int | None:
        if t_end_us is None or w.origin_us is None:
            return None
        return max(0, (t_end_us - w.origin_us - self.window_us) // self.stride_us + 1)

    def rescaled(self, factor: float, w: "Windower") -> tuple["TimeWindows", str]:
        new_len = int(min(MAX_WINDOW_US, max(MIN_WINDOW_US, round(self.window_us * factor))))
        if new_len == self.window_us:
            return self, f"window stays {self.window_us / 1000:g} ms (limit)"
        stride = max(1, round(self.stride_us * new_len / self.window_us))
        origin = None if w.origin_us is None else w.origin_us + w.next_k * self.stride_us
        w.origin_us, w.next_k = origin, 0  # the new policy starts where the next window would have started
        return TimeWindows(new_len, stride, origin_us=origin), f"window {new_len / 1000:g} ms"

    def reference_index(self, window: "Window", ref_t_us: np.ndarray) -> int | None:
        return _last_before(ref_t_us, window.t1_us)

    def partial_ok(self) -> bool:
        return True


@dataclass(frozen=True)
class CountWindows:
    """Windows of ``count`` events, a new one every ``stride`` events (default: non-overlapping)."""

    count: int = 50_000
    stride: int | None = None

    default_max_gap_us = 1_000_000
    has_gaps = False

    def __post_init__(self) -> None:
        if self.count <= 0 or (self.stride is not None and self.stride <= 0):
            raise ValueError(f"count and stride must be positive (got {self.count}, {self.stride})")

    @property
    def step(self) -> int:
        return self.stride or self.count

    def describe(self) -> str:
        every = "" if self.stride is None else f" every {self.stride} events"
        return f"{self.count} events per window{every}"

    def to_json(self) -> dict:
        return {"kind": "count", "count": self.count, "stride": self.stride}

    def start(self, windower: "Windower") -> None:
        pass

    def last_complete(self, w: "Windower") -> int:
        return (w.ring.head - self.count) // self.step

    def read(self, w: "Windower", k: int):
        i0 = k * self.step
        i1 = i0 + self.count
        events = w.ring.read_index(i0, i1)
        t0 = int(events["t"][0]) if events.size else 0
        t1 = int(events["t"][-1]) + 1 if events.size else t0
        return events, t0, t1, i0, i1, (k + 1) * self.step

    def jump_over_gap(self, w: "Windower", k: int) -> int:
        return k  # every count window holds events: nothing to jump over

    def expected(self, w: "Windower", t_end_us: int | None, num_events: int | None) -> int | None:
        return None if num_events is None else max(0, (num_events - self.count) // self.step + 1)

    def rescaled(self, factor: float, w: "Windower") -> tuple["CountWindows", str]:
        new_count = int(min(MAX_WINDOW_EVENTS, max(MIN_WINDOW_EVENTS, round(self.count * factor))))
        if new_count == self.count:
            return self, f"window stays {self.count} events (limit)"
        start = w.next_k * self.step
        stride = None if self.stride is None else max(1, round(self.stride * new_count / self.count))
        new = CountWindows(new_count, stride)
        w.next_k = -(-start // new.step)
        return new, f"window {new_count} events"

    def reference_index(self, window: "Window", ref_t_us: np.ndarray) -> int | None:
        return _last_before(ref_t_us, window.t1_us)

    def partial_ok(self) -> bool:
        return False


@dataclass(frozen=True)
class RledWindows:
    """The RLED / NER-Net protocol: window i is events ``[indices[i,0], indices[i,1])``.

    ``skip_last`` reproduces the official inference, which never reconstructs the last image. The state is reset
    only per file, as the official inference does (no gap resets).
    """

    event_indices: np.ndarray
    skip_last: bool = True

    default_max_gap_us = 2**62
    has_gaps = False

    def __post_init__(self) -> None:
        idx = np.asarray(self.event_indices)
        if idx.ndim != 2 or idx.shape[1] != 2:
            raise ValueError(f"event_indices must have shape (n, 2) (got {idx.shape})")

    def __len__(self) -> int:
        n = int(np.asarray(self.event_indices).shape[0])
        return max(0, n - 1) if self.skip_last else n

    def __hash__(self) -> int:  # arrays are unhashable; identity is enough for a config object
        return id(self)

    def describe(self) -> str:
        return "RLED event_indices windows (±10 ms around each reference image)"

    def to_json(self) -> dict:
        return {"kind": "rled"}

    def start(self, windower: "Windower") -> None:
        windower._idx = np.asarray(self.event_indices, dtype=np.int64)

    def last_complete(self, w: "Windower") -> int:
        n = len(self)
        if not n:
            return -1
        last = int(np.searchsorted(w._idx[:n, 1], w.ring.head, side="right")) - 1
        return min(last, n - 1)

    def read(self, w: "Windower", k: int):
        i0, i1 = (int(v) for v in w._idx[k])
        events = w.ring.read_index(i0, i1)
        t0 = int(events["t"][0]) if events.size else 0
        t1 = int(events["t"][-1]) + 1 if events.size else t0
        next_start = int(w._idx[k + 1, 0]) if k + 1 < w._idx.shape[0] else i1
        return events, t0, t1, i0, i1, next_start

    def jump_over_gap(self, w: "Windower", k: int) -> int:
        return k

    def expected(self, w: "Windower", t_end_us: int | None, num_events: int | None) -> int | None:
        return len(self)

    def rescaled(self, factor: float, w: "Windower") -> tuple["RledWindows", str]:
        return self, "RLED windows come from the file; +/− does not change them"

    def reference_index(self, window: "Window", ref_t_us: np.ndarray) -> int | None:
        return window.index if window.index < len(ref_t_us) else None

    def partial_ok(self) -> bool:
        return False


WindowPolicy = Union[TimeWindows, CountWindows, RledWindows]


def windows_from_meta(meta: dict | None) -> WindowPolicy | None:
    """The window policy a model's metadata names (``meta["windows"]`` in ``to_json`` form), or None."""
    spec = (meta or {}).get("windows")
    return policy_from_json(spec) if isinstance(spec, dict) else None


def policy_from_json(d: dict) -> WindowPolicy:
    """A time or count policy from its ``to_json`` form (bundled models' metadata, configs)."""
    kind = d.get("kind")
    if kind == "time":
        return TimeWindows(int(d["window_us"]), int(d.get("stride_us", d["window_us"])))
    if kind == "count":
        return CountWindows(int(d["count"]), None if d.get("stride") is None else int(d["stride"]))
    raise ValueError(f"window policy kind must be 'time' or 'count' (got {kind!r} in {d!r})")


#: the resolution the default windows were chosen for (DAVIS346: the RLED dataset, the simulated nights)
REFERENCE_SENSOR = (346, 260)
#: per-sensor adjustment never makes a time window shorter than this
MIN_SENSOR_WINDOW_US = 10_000


def windows_for_sensor(policy: WindowPolicy, sensor_size: tuple[int, int],
                       trained_size: tuple[int, int] | None = None) -> tuple[WindowPolicy, str]:
    """A model's default windows adjusted to a sensor larger than the one they were chosen for, and why.

    For the same field of view and motion, an edge crosses ``r = sqrt(pixels / trained pixels)`` times more pixels
    per second on a larger sensor, so a window of the trained length would show trails ``r`` times longer (in
    pixels) than the model saw in training. Time windows are therefore shortened by ``r`` (the stride with them
    when windows are contiguous, else kept), never below 10 ms; count windows grow by ``r²`` (the same events per
    pixel). RLED windows are a protocol and stay; sensors no larger than the trained one keep the defaults.

    Example:
        >>> windows_for_sensor(TimeWindows(40_000, 40_000), (1280, 720))[0]
        TimeWindows(window_us=12000, stride_us=12000, origin_us=None)
    """
    tw, th = trained_size or REFERENCE_SENSOR
    w, h = sensor_size
    r = float(np.sqrt((w * h) / (tw * th)))
    base = f"{w}x{h} sensor"
    if r <= 1.0 or isinstance(policy, RledWindows):
        return policy, f"{base}: the model's default windows"
    if isinstance(policy, CountWindows):
        count = int(min(MAX_WINDOW_EVENTS, round(policy.count * r * r, -3)))
        stride = None if policy.stride is None else int(round(policy.stride * r * r, -3))
        return (CountWindows(count, stride),
                f"{base}: {policy.count} events per window at {tw}x{th} scaled by the pixel count ({r * r:.2g}x)")
    window_us = max(MIN_SENSOR_WINDOW_US, int(round(policy.window_us / r, -3)))
    if window_us >= policy.window_us:
        return policy, f"{base}: the model's default windows"
    stride_us = window_us if policy.stride_us == policy.window_us else policy.stride_us
    return (TimeWindows(window_us, stride_us),
            f"{base}: windows shortened {r:.2g}x from {policy.window_us / 1000:g} ms at {tw}x{th}, so motion trails "
            "stay as long in pixels as in training")


@dataclass(frozen=True)
class Window:
    """One reconstruction window: its events and what downstream must know about it."""

    index: int  # k for time / count windows, the image number for RLED windows
    t0_us: int
    t1_us: int  # half-open: events satisfy t0_us <= t < t1_us for time windows
    events: np.ndarray
    reset: bool  # zero the recurrent state before this window
    skipped: int  # windows skipped right before this one (live mode)
    i0: int = 0  # global event index range in the stream
    i1: int = 0


class Windower:
    """Produce :class:`Window` objects from an :class:`EventRing` as the producer fills it.

    Args:
        policy: :class:`TimeWindows`, :class:`CountWindows` or :class:`RledWindows`.
        ring: the ring the source writes into.
        live: skip to the newest complete window (counting skips) instead of producing every window, once more
            than ``max_backlog`` complete windows wait.
        max_gap_us: an event gap longer than this asks for a state reset (None: the policy's default).
        max_backlog: live: complete windows that may wait and still be reconstructed in order (0: always jump to
            the newest; the default 2 adds at most two windows of latency, 80 ms at 25 frames/s).
    """

    def __init__(self, policy: WindowPolicy, ring: EventRing, live: bool = False,
                 max_gap_us: int | None = None, max_backlog: int = 2) -> None:
        if max_backlog < 0:
            raise ValueError(f"max_backlog must be >= 0 (got {max_backlog})")
        self.policy = policy
        self.ring = ring
        self.live = live
        self.max_backlog = int(max_backlog)
        self.max_gap_us = int(policy.default_max_gap_us if max_gap_us is None else max_gap_us)
        self.next_k = 0
        self.skipped_windows = 0
        self.gap_jumps = 0  # time jumps beyond the gap limit that were jumped over
        self.origin_us: int | None = None
        self._last_event_t: int | None = None
        self._reset_pending = True
        self._reset_requests = 0  # incremented by other threads (request_reset)
        self._reset_seen = 0
        self._sensor_size: tuple[int, int] | None = None
        policy.start(self)

    def notice_sensor_size(self, sensor_size: tuple[int, int] | None) -> None:
        """Call with every packet's sensor size: a change marks the next window for a reset."""
        if sensor_size is None:
            return
        if self._sensor_size is not None and tuple(sensor_size) != self._sensor_size:
            self._reset_pending = True
        self._sensor_size = tuple(sensor_size)

    def request_reset(self) -> None:
        """Ask for a state reset at the next window; safe to call from any thread (a counter, never cleared)."""
        self._reset_requests += 1

    def rescale(self, factor: float) -> str:
        """Scale the window length by ``factor`` from the next window on (viewer +/−); returns a message.
        Must run on the thread that polls (the reconstruction thread)."""
        self.policy, message = self.policy.rescaled(factor, self)
        return message

    # ------------------------------------------------------------------ producing
    def _window(self, k: int, skipped: int) -> Window:
        events, t0, t1, i0, i1, next_start = self.policy.read(self, k)
        self.ring.release(next_start)  # nothing before the next window's start is needed again
        requests = self._reset_requests
        reset = self._reset_pending or requests != self._reset_seen
        self._reset_seen = requests
        if events.size:
            t = events["t"]
            first = int(t[0])
            if self._last_event_t is not None and first - self._last_event_t > self.max_gap_us:
                reset = True  # the scene the state holds is gone
            elif t.size > 1 and int((t[1:] - t[:-1]).max()) > self.max_gap_us:
                reset = True  # a gap inside the window (possible with count / RLED windows)
            self._last_event_t = int(t[-1])
        self._reset_pending = False
        return Window(k, t0, t1, events, reset, skipped, i0, i1)

    def poll(self) -> list[Window]:
        """Windows that became complete since the last call, as a list (see :meth:`windows`)."""
        return list(self.windows())

    def windows(self) -> Iterator[Window]:
        """Windows that became complete since the last call, lazily: a consumer that stops early (``max_frames``)
        leaves the rest unbuilt (live, when more than ``max_backlog`` wait: only the newest one)."""
        last = self.policy.last_complete(self)
        if last < self.next_k:
            return
        if self.live and last - self.next_k > self.max_backlog:
            skipped = self._count_skipped(last)
            self.skipped_windows += skipped
            self.next_k = last + 1
            yield self._window(last, skipped)
            return
        while self.next_k <= last:
            k = self.next_k = self._jump(self.next_k)
            if k > last:
                return
            self.next_k = k + 1
            yield self._window(k, 0)

    def _count_skipped(self, last: int) -> int:
        """Live: windows ``next_k … last − 1`` not shown. Stretches longer than the gap limit (a silence, a corrupt
        time jump) are jumped over and not counted: nothing was there to show."""
        if not self.policy.has_gaps:
            return max(0, last - self.next_k)
        skipped, k = 0, self.next_k
        while k < last:
            j = self._jump(k)
            if j == k:
                skipped, k = skipped + 1, k + 1
            else:
                k = j
        return skipped

    def _jump(self, k: int) -> int:
        """Window ``k``, or past an empty stretch longer than the gap limit the one holding the next event (counted
        in ``gap_jumps``; the state is reset there)."""
        target = self.policy.jump_over_gap(self, k)
        if target != k:
            self.gap_jumps += 1
            self._reset_pending = True
        return target

    def partial_window(self) -> Window | None:
        """At the end of a finite stream too short for one complete time window: the first window, partial (so a
        short recording still gives a frame). None for other policies or when windows were already produced."""
        if not self.policy.partial_ok() or self.next_k > 0 or self.ring.head == 0:
            return None
        if self.origin_us is None:
            self.origin_us = self.ring.first_t_us
        self.next_k = 1
        return self._window(0, 0)

    def expected_windows(self, t_end_us: int | None = None, num_events: int | None = None) -> int | None:
        """How many windows a finite stream ending at ``t_end_us`` / with ``num_events`` gives (for progress)."""
        return self.policy.expected(self, t_end_us, num_events)
