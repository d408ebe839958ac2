"""A bounded single-producer / single-consumer event ring that never blocks the camera thread.

Why it is like this:

* The producer (a camera or replay thread) must never wait for the consumer: a USB camera whose reader stalls
  loses data inside the driver, where nobody counts it. So the ring has a fixed capacity and, when full, the
  producer overwrites the oldest events and counts them in ``dropped_events``.
* No lock is shared with the consumer. Every event has a global index (0, 1, 2, … since the ring was made).
  The producer announces the range it is about to overwrite (``_reserved``), copies, then publishes ``_head``.
  The consumer copies a range and then re-reads ``_reserved``: whatever part of its copy the producer may have
  overwritten meanwhile is cut off and counted as dropped. Each of these integers is written by one thread
  only, and CPython makes each single assignment atomic, so this is a seqlock without the lock.
* Time-sliced reads bisect a contiguous int64 copy of the timestamps (``np.searchsorted`` on the strided
  ``t`` field of the structured array would copy the whole array first).
* The consumer releases what it no longer needs (``release(index)``); only events overwritten before release
  count as dropped, so a live viewer that skips to the newest window does not report phantom drops.
* Latency needs to know when the events of a window reached the host. Every non-empty push also records
  ``(global index one past its last event, host time)`` in a small circular table (``arrivals`` packets, 4096
  by default: seconds of history at any packet rate a camera produces), with the same reserve / write / publish
  order as the events, so :meth:`EventRing.host_time_of` can say when event ``i`` arrived without a lock, or NaN
  once its packet has left the table.
"""

from __future__ import annotations

import numpy as np

from .errors import SourceError
from .events import EVENT_DTYPE, EVENT_VOID


class EventRing:
    """Bounded SPSC ring of :data:`EVENT_DTYPE` events with global indices.

    Args:
        capacity: number of events kept.
        arrivals: packets whose host arrival time is kept (for :meth:`host_time_of`).

    Example:
        >>> ring = EventRing(1 << 20)
        >>> ring.push(events)                       # doctest: +SKIP   (producer thread)
        >>> window = ring.read_time(t0_us, t1_us)   # doctest: +SKIP   (consumer thread)
    """

    def __init__(self, capacity: int, arrivals: int = 4096) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive (got {capacity})")
        if arrivals <= 0:
            raise ValueError(f"arrivals must be positive (got {arrivals})")
        self.capacity = int(capacity)
        self._ev = np.empty(self.capacity, dtype=EVENT_DTYPE)
        self._evv = self._ev.view(EVENT_VOID)  # memcpy-speed view of the same storage
        self._t = np.empty(self.capacity, dtype=np.int64)
        self._ev.view(np.uint8).fill(0)  # touch every page now, not as page faults in the camera thread
        self._t.fill(0)
        self._head = 0  # producer: one past the newest readable event
        self._reserved = 0  # producer: one past the newest event being written (>= _head)
        self._floor = 0  # lowest index ever stored in the current storage (see grow)
        self._released = 0  # consumer: events below this index are no longer needed (may be ahead of head)
        self._released_t = np.iinfo(np.int64).min  # consumer: events before this time are no longer needed
        self._dropped = 0  # written by the producer only
        self._last_t = np.iinfo(np.int64).min
        self.t_end_us: int | None = None  # producer: the end of the newest packet's time range
        # per packet: global index one past its last event, and its host arrival time (monotonic seconds)
        self._arr_cap = int(arrivals)
        self._arr_end = np.zeros(self._arr_cap, dtype=np.int64)
        self._arr_host = np.zeros(self._arr_cap, dtype=np.float64)
        self._arr_count = 0  # producer: entries published
        self._arr_reserved = 0  # producer: entries being written (>= _arr_count)

    # ------------------------------------------------------------------ producer side
    def push(self, events: np.ndarray, t_end_us: int | None = None, host_time_s: float | None = None) -> None:
        """Append time-sorted events (never blocks). ``t_end_us``: end of the time range they cover;
        ``host_time_s``: when they reached the host (``time.monotonic()``), for :meth:`host_time_of`."""
        n = int(events.shape[0])
        if n:
            if int(events["t"][0]) < self._last_t:
                raise SourceError(f"ring buffer: packet starts at t={int(events['t'][0])} µs, before the previous "
                                  f"packet's last event t={self._last_t} µs")
            cap = self.capacity
            head = self._head
            skip = max(0, n - cap)
            if skip:  # an oversized packet: its oldest `skip` events are never stored
                needed = events[:skip]
                first_needed = max(0, self._released - head)  # index release may lie ahead of head
                if self._released_t > np.iinfo(np.int64).min:
                    first_needed = max(first_needed, int(np.searchsorted(needed["t"], self._released_t, "left")))
                self._dropped += max(0, skip - first_needed)
                events = events[skip:]
                n = cap
            new_head = head + skip + n
            self._dropped += self._unreleased_lost(new_head, head, cap)
            head += skip
            self._reserved = new_head
            start = head % cap
            first = min(n, cap - start)
            ev_v = np.ascontiguousarray(events).view(EVENT_VOID)
            t = events["t"]
            self._evv[start:start + first] = ev_v[:first]
            self._t[start:start + first] = t[:first]
            if first < n:
                self._evv[: n - first] = ev_v[first:]
                self._t[: n - first] = t[first:]
            self._head = new_head
            self._last_t = int(events["t"][-1])
            if host_time_s is not None:
                self._record_arrival(new_head, host_time_s)
        if t_end_us is not None:
            self.t_end_us = int(t_end_us)
        elif n:
            self.t_end_us = self._last_t + 1

    def _record_arrival(self, end_index: int, host_time_s: float) -> None:
        k = self._arr_count
        self._arr_reserved = k + 1  # announce before writing: a reader of entry k - cap sees it may be gone
        self._arr_end[k % self._arr_cap] = end_index
        self._arr_host[k % self._arr_cap] = host_time_s
        self._arr_count = k + 1

    def _unreleased_lost(self, new_head: int, old_head: int, cap: int) -> int:
        """How many stored, not-yet-released events writing up to ``new_head`` overwrites."""
        lo = max(old_head - cap, self._released, self._floor)
        hi = min(new_head - cap, old_head)
        if hi <= lo:
            return 0
        released_t = self._released_t
        if released_t > np.iinfo(np.int64).min:  # events older than the release time are not needed either
            lo = max(lo, min(hi, self._index_at_time_in(released_t, lo, hi)))
        return max(0, hi - lo)

    def grow(self, capacity: int) -> None:
        """Enlarge the ring, keeping stored events and their global indices (not thread-safe: offline use)."""
        if capacity <= self.capacity:
            return
        lo, head = self.oldest, self._head
        keep_ev = self._copy(self._evv, lo, head)
        keep_t = self._copy(self._t, lo, head)
        self.capacity = int(capacity)
        self._ev = np.empty(self.capacity, dtype=EVENT_DTYPE)
        self._evv = self._ev.view(EVENT_VOID)
        self._t = np.empty(self.capacity, dtype=np.int64)
        self._floor = lo  # indices below this were never kept in the new storage
        a = lo % self.capacity
        first = min(head - lo, self.capacity - a)
        self._evv[a:a + first] = keep_ev[:first]
        self._t[a:a + first] = keep_t[:first]
        self._evv[: head - lo - first] = keep_ev[first:]
        self._t[: head - lo - first] = keep_t[first:]

    # ------------------------------------------------------------------ consumer side
    @property
    def unreleased(self) -> int:
        """Events pushed but not yet released by the consumer."""
        lo = max(self._released, self.oldest)
        if self._released_t > np.iinfo(np.int64).min:
            lo = max(lo, self.index_at_time(self._released_t))
        return max(0, self._head - lo)

    @property
    def head(self) -> int:
        """Global index one past the newest readable event (= events pushed so far)."""
        return self._head

    @property
    def oldest(self) -> int:
        """Global index of the oldest event still stored."""
        return max(self._floor, self._reserved - self.capacity)

    @property
    def dropped_events(self) -> int:
        """Events overwritten (or never stored) before the consumer released them."""
        return self._dropped

    @property
    def backlog_us(self) -> int:
        """Time span of the stored, unreleased events (0 when empty)."""
        head = self._head
        lo = max(self._released, self.oldest)
        if self._released_t > np.iinfo(np.int64).min:
            lo = max(lo, self.index_at_time(self._released_t))
        if head <= lo:
            return 0
        return int(self._t[(head - 1) % self.capacity] - self._t[lo % self.capacity])

    @property
    def first_t_us(self) -> int | None:
        """Timestamp of the oldest stored event (None when empty)."""
        if self._head <= self.oldest:
            return None
        return int(self._t[self.oldest % self.capacity])

    def release(self, index: int) -> None:
        """Mark events below global ``index`` as no longer needed (``index`` may lie ahead of ``head``)."""
        if index > self._released:
            self._released = int(index)

    def release_time(self, t_us: int) -> None:
        """Mark events with ``t < t_us`` as no longer needed, including ones not pushed yet."""
        if t_us > self._released_t:
            self._released_t = int(t_us)

    def read_index(self, i0: int, i1: int) -> np.ndarray:
        """Copy of events with global indices ``[i0, i1)``; the part already overwritten is left out."""
        i1 = min(i1, self._head)
        i0 = max(i0, self.oldest)
        if i1 <= i0:
            return np.empty(0, dtype=EVENT_DTYPE)
        out = self._copy(self._evv, i0, i1).view(EVENT_DTYPE)
        lost = self._reserved - self.capacity - i0  # overwritten while we copied (the producer counted them)
        return out[lost:] if lost > 0 else out

    def _copy(self, arr: np.ndarray, i0: int, i1: int) -> np.ndarray:
        cap = self.capacity
        a, b = i0 % cap, i1 % cap
        if i1 - i0 == cap or b <= a:
            return np.concatenate([arr[a:], arr[:b]])[: i1 - i0]
        return arr[a:b].copy()

    def index_at_time(self, t_us: int) -> int:
        """Global index of the first stored event with ``t >= t_us`` (clamped to the stored range)."""
        return self._index_at_time_in(t_us, self.oldest, self._head)

    def _index_at_time_in(self, t_us: int, lo: int, hi: int) -> int:
        if hi <= lo:
            return hi
        cap = self.capacity
        a, b = lo % cap, hi % cap
        if b > a:
            return lo + int(np.searchsorted(self._t[a:b], t_us, side="left"))
        # wrapped: [a, cap) holds the older part, [0, b) the newer
        older = self._t[a:]
        if older.size and t_us <= older[-1]:
            return lo + int(np.searchsorted(older, t_us, side="left"))
        return lo + older.size + int(np.searchsorted(self._t[:b], t_us, side="left"))

    def host_time_of(self, index: int) -> float:
        """Host arrival time (``time.monotonic()`` seconds) of the packet that carried event ``index``; NaN when that
        packet pushed no host time, is not pushed yet, or is older than the arrivals table."""
        count, cap = self._arr_count, self._arr_cap
        lo = max(0, count - cap)
        if count <= lo:
            return float("nan")
        a, b = lo % cap, count % cap
        if b > a:  # entries lo..count-1 lie in order in [a, b)
            k = lo + int(np.searchsorted(self._arr_end[a:b], index, side="right"))
        else:  # wrapped: [a, cap) holds the older entries, [0, b) the newer
            older = self._arr_end[a:]
            if older.size and index < older[-1]:
                k = lo + int(np.searchsorted(older, index, side="right"))
            else:
                k = lo + older.size + int(np.searchsorted(self._arr_end[:b], index, side="right"))
        if k >= count or (k == lo and lo > 0):  # not pushed yet, or its packet may have left the table
            return float("nan")
        host = float(self._arr_host[k % cap])
        start = int(self._arr_end[(k - 1) % cap]) if k > 0 else 0
        end = int(self._arr_end[k % cap])
        if self._arr_reserved - cap > max(0, k - 1) or not start <= index < end:  # overwritten while we looked
            return float("nan")
        return host

    def read_time(self, t0_us: int, t1_us: int) -> tuple[np.ndarray, int, int]:
        """Events with ``t0_us <= t < t1_us`` and their global index range ``(events, i0, i1)``."""
        i0 = self.index_at_time(t0_us)
        i1 = self.index_at_time(t1_us)
        return self.read_index(i0, i1), i0, i1
