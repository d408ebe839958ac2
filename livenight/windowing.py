"""Cutting the event stream into reconstruction windows.

Why it is like this:

* Window boundaries are integer arithmetic from a fixed origin: window k is
  ``[origin + k·stride_us, origin + k·stride_us + window_us)``. Nothing is accumulated, so a recording of hours
  has no drift, and a skipped window does not shift later ones.
* Three policies, one per way models are trained: fixed time, fixed event count, and the RLED protocol (image i
  gets events ``event_indices[i,0]:event_indices[i,1]``, ±10 ms around its exposure midpoint). Policies are
  frozen configuration; the :class:`Windower` is the one stateful object.
* The windower reads from the :class:`~livenight.ring.EventRing`: time windows by bisection on the ring's
  timestamps, count and RLED windows by global event index. A window is complete once the producer has covered
  its end (``ring.t_end_us`` for time, ``ring.head`` for indices).
* Offline (``live=False``) every window is produced in order. Live, when downstream is slower than real time,
  the windower jumps to the newest complete window and counts the ones it skipped, instead of queueing: the
  picture stays current and latency bounded.
* A gap in the events longer than ``max_gap_us``, or a change of sensor size, marks the next window
  ``reset=True``: the recurrent state must start again (it would otherwise carry a scene that is gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .ring import EventRing


@dataclass(frozen=True)
class TimeWindows:
    """Fixed-duration windows every ``stride_us``; ``origin_us=None`` takes the stream's first timestamp."""

    window_us: int = 40_000
    stride_us: int = 40_000
    origin_us: int | None = None

    def __post_init__(self) -> None:
        if self.window_us <= 0 or self.stride_us <= 0:
            raise ValueError(f"window_us and stride_us must be positive (got {self.window_us}, {self.stride_us})")

    def bounds(self, k: int, origin_us: int) -> tuple[int, int]:
        t0 = origin_us + k * self.stride_us
        return t0, t0 + self.window_us


@dataclass(frozen=True)
class CountWindows:
    """Windows of ``count`` events, a new one every ``stride`` events (default: non-overlapping)."""

    count: int = 50_000
    stride: int | None = None

    def __post_init__(self) -> None:
        if self.count <= 0 or (self.stride is not None and self.stride <= 0):
            raise ValueError(f"count and stride must be positive (got {self.count}, {self.stride})")

    @property
    def step(self) -> int:
        return self.stride or self.count


@dataclass(frozen=True)
class RledWindows:
    """The RLED / NER-Net protocol: window i is events ``[indices[i,0], indices[i,1])``.

    ``skip_last`` reproduces the official inference, which never reconstructs the last image.
    """

    event_indices: np.ndarray
    skip_last: bool = True

    def __post_init__(self) -> None:
        idx = np.asarray(self.event_indices)
        if idx.ndim != 2 or idx.shape[1] != 2:
            raise ValueError(f"event_indices must have shape (n, 2) (got {idx.shape})")

    def __len__(self) -> int:
        n = int(np.asarray(self.event_indices).shape[0])
        return max(0, n - 1) if self.skip_last else n

    def __hash__(self) -> int:  # arrays are unhashable; identity is enough for a config object
        return id(self)


WindowPolicy = Union[TimeWindows, CountWindows, RledWindows]


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
        live: skip to the newest complete window (counting skips) instead of producing every window.
        max_gap_us: an event gap longer than this asks for a state reset.
    """

    def __init__(self, policy: WindowPolicy, ring: EventRing, live: bool = False,
                 max_gap_us: int = 1_000_000) -> None:
        self.policy = policy
        self.ring = ring
        self.live = live
        self.max_gap_us = int(max_gap_us)
        self.next_k = 0
        self.skipped_windows = 0
        self.origin_us: int | None = policy.origin_us if isinstance(policy, TimeWindows) else None
        self._last_event_t: int | None = None
        self._reset_pending = True
        self._reset_requests = 0  # incremented by other threads (request_reset)
        self._reset_seen = 0
        self._sensor_size: tuple[int, int] | None = None
        if isinstance(policy, RledWindows):
            self._idx = np.asarray(policy.event_indices, dtype=np.int64)

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

    # ------------------------------------------------------------------ completion
    def _last_complete(self) -> int:
        """Largest window number whose events are all in the ring (−1 when none)."""
        p, ring = self.policy, self.ring
        if isinstance(p, TimeWindows):
            if ring.t_end_us is None:
                return -1
            if self.origin_us is None:
                if ring.head == 0:
                    return -1
                self.origin_us = ring.first_t_us  # the first event seen
            return (ring.t_end_us - self.origin_us - p.window_us) // p.stride_us
        if isinstance(p, CountWindows):
            return (ring.head - p.count) // p.step
        n = len(p)
        ends = self._idx[:n, 1]
        return int(np.searchsorted(ends, ring.head, side="right")) - 1 if n else -1

    def _window(self, k: int, skipped: int) -> Window:
        p, ring = self.policy, self.ring
        if isinstance(p, TimeWindows):
            t0, t1 = p.bounds(k, self.origin_us)
            events, i0, i1 = ring.read_time(t0, t1)
            ring.release_time(p.bounds(k + 1, self.origin_us)[0])
            next_start = i0
        elif isinstance(p, CountWindows):
            i0 = k * p.step
            i1 = i0 + p.count
            events = ring.read_index(i0, i1)
            t0 = int(events["t"][0]) if events.size else 0
            t1 = int(events["t"][-1]) + 1 if events.size else t0
            next_start = (k + 1) * p.step
        else:
            i0, i1 = (int(v) for v in self._idx[k])
            events = ring.read_index(i0, i1)
            t0 = int(events["t"][0]) if events.size else 0
            t1 = int(events["t"][-1]) + 1 if events.size else t0
            next_start = int(self._idx[k + 1, 0]) if k + 1 < self._idx.shape[0] else i1
        ring.release(next_start)  # nothing before the next window's start is needed again
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

    # ------------------------------------------------------------------ public
    def poll(self) -> list[Window]:
        """Windows that became complete since the last call (live: at most the newest one)."""
        last = self._last_complete()
        if isinstance(self.policy, RledWindows):
            last = min(last, len(self.policy) - 1)
        if last < self.next_k:
            return []
        if self.live:
            skipped = last - self.next_k
            self.skipped_windows += skipped
            self.next_k = last + 1
            return [self._window(last, skipped)]
        out = [self._window(k, 0) for k in range(self.next_k, last + 1)]
        self.next_k = last + 1
        return out

    def partial_window(self) -> Window | None:
        """At the end of a finite stream too short for one complete time window: the first window, partial (so a
        short recording still gives a frame). None for other policies or when windows were already produced."""
        if not isinstance(self.policy, TimeWindows) or self.next_k > 0 or self.ring.head == 0:
            return None
        if self.origin_us is None:
            self.origin_us = self.ring.first_t_us
        self.next_k = 1
        return self._window(0, 0)

    def expected_windows(self, t_end_us: int | None = None, num_events: int | None = None) -> int | None:
        """How many windows a finite stream ending at ``t_end_us`` / with ``num_events`` gives (for progress)."""
        p = self.policy
        if isinstance(p, RledWindows):
            return len(p)
        if isinstance(p, CountWindows) and num_events is not None:
            return max(0, (num_events - p.count) // p.step + 1)
        if isinstance(p, TimeWindows) and t_end_us is not None and self.origin_us is not None:
            return max(0, (t_end_us - self.origin_us - p.window_us) // p.stride_us + 1)
        return None
