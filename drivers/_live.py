"""Shared pieces of the live drivers (DAVIS, network, Prophesee): packet timing and a bounded frame store.

Why it is like this:

* A live batch ends wherever the USB or network transfer happened to end, which may be in the middle of a run of
  events sharing one timestamp. :class:`LivePacketizer` holds back the run at the newest timestamp until a later
  batch (or an idle tick) shows that the run is complete, so packets tile time like the file sources do:
  packet k covers ``[t_start_us, t_end_us)`` and ``t_end_us`` of one packet is ``t_start_us`` of the next.
* When nothing arrives for ``idle_timeout_s`` the driver asks for an *idle* packet: it releases the held-back run
  and advances the end time to an estimate of the sensor clock, ``t_last + (now − host_time_at_t_last) − lag``,
  so time windows complete in a quiet scene (at night most of the scene is quiet). The estimate lags by
  ``idle_lag_us`` because events already timestamped by the sensor may still be in transit; an event that
  arrives later than that anyway is still delivered, inside the next packet, and counted in ``late_events``.
* Before the first event the sensor clock is unknown, so idle packets are empty and zero-length at ``t = 0``;
  they only let the consumer loop run (stop checks). The first packet with events starts at its first event.
* **Nothing is lost before the first iteration.** A camera or server starts sending when it is opened, but the
  pipeline iterates only once its engine is ready (loading a model takes seconds). :class:`ConnectBuffer` drains
  the device on a thread from the moment it is opened until iteration begins; the first packets of the
  iteration are those batches, with their original arrival times. It holds at most ``max_events`` (the oldest
  are dropped and counted beyond that), and says how many events it received and dropped.
* :class:`LatestFrames` keeps the newest ``keep`` reference images with *stable* indices (frame i stays frame
  i), because the pipeline looks a frame up by time in one call and fetches it in the next while the capture
  thread keeps adding: ``t_us`` grows (8 bytes per frame), images of evicted frames read as ``None``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from livenight.errors import SourceError
from livenight.events import EVENT_DTYPE, EventPacket

_EMPTY = np.empty(0, dtype=EVENT_DTYPE)


class BufferedCounts:
    """``received_events`` / ``dropped_events`` of a live source that buffers from the moment it connects (a
    ``ConnectBuffer`` / ``IteratorBuffer`` in ``self._buffer``, or None) and counts later events in
    ``self._received_live``."""

    _buffer = None
    _received_live = 0

    @property
    def received_events(self) -> int:
        """Events received from the camera, including any dropped while waiting for the first iteration."""
        return (self._buffer.received_events if self._buffer else 0) + self._received_live

    @property
    def dropped_events(self) -> int:
        """Events dropped before the first iteration because more than ``buffer_events`` were waiting."""
        return self._buffer.dropped_events if self._buffer else 0


class LivePacketizer:
    """Turn a live sequence of time-sorted event batches into :class:`EventPacket` objects that tile time.

    Args:
        sensor_size: ``(width, height)`` stamped on every packet.
        what: a name for error messages (the camera or URI).
        idle_lag_us: how far behind the extrapolated sensor clock an idle packet ends.
    """

    def __init__(self, sensor_size: tuple[int, int], what: str, idle_lag_us: int = 20_000) -> None:
        if idle_lag_us < 0:
            raise ValueError(f"idle_lag_us must be >= 0 (got {idle_lag_us})")
        self.sensor_size = tuple(sensor_size)
        self.what = what
        self.idle_lag_us = int(idle_lag_us)
        self._cursor: int | None = None  # start of the next packet
        self._pending = _EMPTY  # the run of events at the newest timestamp, held back
        self._ref: tuple[int, float] | None = None  # (newest event t, host time it arrived): the sensor clock
        self._last_t: int | None = None
        self.late_events = 0  # events that arrived with t before the start of their packet (see module doc)
        self.num_events = 0

    def add(self, events: np.ndarray, host_time_s: float) -> EventPacket | None:
        """Take one batch; return a packet, or None while everything is still held back."""
        n = int(events.shape[0])
        if n == 0:
            return None
        t = events["t"]
        if self._last_t is not None and int(t[0]) < self._last_t:
            raise SourceError(f"{self.what}: batch starts at t={int(t[0])} µs, before the previous batch's last "
                              f"event (t={self._last_t} µs); the stream is not time-ordered")
        back = np.flatnonzero(t[1:] < t[:-1])
        if back.size:
            i = int(back[0]) + 1
            raise SourceError(f"{self.what}: timestamps not sorted inside a batch at index {i}: t={int(t[i])} µs "
                              f"after t={int(t[i - 1])} µs")
        self._last_t = int(t[-1])
        self._ref = (self._last_t, float(host_time_s))
        chunk = events if self._pending.size == 0 else np.concatenate([self._pending, events])
        cut = int(np.searchsorted(chunk["t"], chunk["t"][-1], side="left"))
        if cut == 0:
            self._pending = chunk
            return None
        out, self._pending = chunk[:cut], chunk[cut:]
        return self._emit(out, int(self._pending["t"][0]), host_time_s)

    def idle(self, host_time_s: float) -> EventPacket:
        """A packet for a quiet period: the held-back run plus time up to the lagged sensor-clock estimate."""
        if self._ref is None:
            return EventPacket(_EMPTY, 0, 0, host_time_s, self.sensor_size)
        t_ref, host_ref = self._ref
        estimate = t_ref + int((host_time_s - host_ref) * 1e6) - self.idle_lag_us
        out, self._pending = self._pending, _EMPTY
        end = max(estimate, self._cursor if self._cursor is not None else estimate)
        if out.size:
            end = max(end, int(out["t"][-1]) + 1)
        return self._emit(out, end, host_time_s)

    def flush(self, host_time_s: float) -> EventPacket | None:
        """At the end of the stream: the held-back run as a last packet (None when there is none)."""
        if self._pending.size == 0:
            return None
        out, self._pending = self._pending, _EMPTY
        return self._emit(out, int(out["t"][-1]) + 1, host_time_s)

    def _emit(self, out: np.ndarray, t_end: int, host_time_s: float) -> EventPacket:
        start = self._cursor
        if start is None:
            start = int(out["t"][0]) if out.size else t_end
        if out.size and int(out["t"][0]) < start:
            self.late_events += int(np.searchsorted(out["t"], start, side="left"))
        t_end = max(t_end, start)
        self._cursor = t_end
        self.num_events += int(out.shape[0])
        return EventPacket(out, start, t_end, host_time_s, self.sensor_size)


class LatestFrames:
    """Reference frames from a live camera: timestamps of every frame seen, images of the newest ``keep``.

    Implements :class:`~livenight.drivers.base.ReferenceFrames` (``t_us`` = exposure end, int64 µs) with stable
    indices; ``frames[i]`` is ``None`` once frame ``i`` has been evicted. Safe to fill from the capture thread
    while another thread reads.
    """

    def __init__(self, keep: int = 8) -> None:
        if keep <= 0:
            raise ValueError(f"keep must be positive (got {keep})")
        self.keep = int(keep)
        self._lock = threading.Lock()
        self._t = np.empty(64, dtype=np.int64)
        self._n = 0
        self._images: dict[int, np.ndarray] = {}

    def add(self, image: np.ndarray, t_exposure_end_us: int) -> None:
        with self._lock:
            if self._n == self._t.shape[0]:
                grown = np.empty(2 * self._n, dtype=np.int64)
                grown[: self._n] = self._t
                self._t = grown
            self._t[self._n] = int(t_exposure_end_us)
            self._images[self._n] = image
            self._images.pop(self._n - self.keep, None)
            self._n += 1

    @property
    def t_us(self) -> np.ndarray:
        with self._lock:
            return self._t[: self._n].copy()

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> np.ndarray | None:
        with self._lock:
            n = self._n
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError(f"frame {i} out of range (0..{n - 1})")
            return self._images.get(i)


class _DrainingBuffer:
    """What both connect-time buffers share: a thread that drains the device into a bounded queue (the oldest items
    dropped and counted beyond ``max_events``), and :meth:`stop`, which hands the queue over on the iterating
    thread and re-raises the thread's error there. Subclasses implement ``_drain`` and call ``_keep``."""

    def __init__(self, max_events: int, clock: Callable[[], float]) -> None:
        self.max_events = int(max_events)
        self._clock = clock
        self._items: deque[tuple] = deque()  # item[0]: the events (or None), item[-1]: host receive time
        self._held = 0
        self.received_events = 0
        self.dropped_events = 0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livenight-connect-buffer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._drain()
        except BaseException as e:  # re-raised by stop(), on the iterating thread
            self._error = e

    def _drain(self) -> None:
        raise NotImplementedError

    def _keep(self, item: tuple) -> None:
        n = 0 if item[0] is None else int(item[0].shape[0])
        self._items.append(item)
        self._held += n
        self.received_events += n
        while self._held > self.max_events and len(self._items) > 1:
            old = self._items.popleft()[0]
            k = 0 if old is None else int(old.shape[0])
            self._held -= k
            self.dropped_events += k

    def _handover(self, timeout_s: float | None) -> list[tuple]:
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise SourceError(f"the device did not hand out anything for {timeout_s:g} s")
        out = list(self._items)
        self._items.clear()
        self._held = 0
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return out


class ConnectBuffer(_DrainingBuffer):
    """Drain a live device from the moment it is opened until iteration starts (see the module doc).

    Args:
        poll: returns the next raw batch or ``None`` (never blocks), e.g. ``reader.getNextEventBatch``.
        convert: raw batch -> :data:`EVENT_DTYPE` array (may raise; the error is re-raised by :meth:`stop`).
        running: False once the device is gone (the thread then ends; iteration reports the disconnect).
        extra: called after each poll on the same thread (e.g. draining APS frames), or None.
        max_events: most events held; beyond that the oldest batches are dropped and counted.

    Attributes:
        received_events: events converted while buffering. dropped_events: of those, dropped for lack of room.
    """

    def __init__(self, poll: Callable[[], object], convert: Callable[[object], np.ndarray],
                 running: Callable[[], bool], extra: Callable[[], None] | None = None,
                 max_events: int = 50_000_000, poll_interval_s: float = 0.001,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._poll, self._convert, self._running, self._extra = poll, convert, running, extra
        self._interval = float(poll_interval_s)
        super().__init__(max_events, clock)

    def _drain(self) -> None:
        while not self._stop.is_set():
            running = self._running()
            raw = self._poll()
            if self._extra is not None:
                self._extra()
            if raw is None:
                if not running:
                    return
                self._stop.wait(self._interval)
                continue
            ev = self._convert(raw)
            if ev.shape[0]:
                self._keep((ev, self._clock()))

    def stop(self) -> list[tuple[np.ndarray, float]]:
        """Stop draining and hand over what was received, oldest first, as ``(events, host_time_s)``."""
        return self._handover(None)


def delivery_note(source) -> str:
    """``received N events, delivered M`` (+ dropped while waiting), for disconnect messages."""
    received, delivered = source.received_events, source.delivered_events
    dropped = source.dropped_events
    text = f"received {received} events, delivered {delivered} in packets"
    if dropped:
        text += f", dropped {dropped} that waited for the first iteration beyond the buffer"
    return text


class IteratorBuffer(_DrainingBuffer):
    """:class:`ConnectBuffer` for devices that hand out a blocking iterator (Prophesee slicers and devices):
    a thread takes items from ``iterator`` from the moment it is opened, converts each with ``convert`` (which
    must copy: vendor buffers are reused) and keeps them until :meth:`stop`; iteration then goes on with the same
    iterator. ``convert(item) -> (events or None, payload)``; events count towards ``max_events``.
    """

    def __init__(self, iterator, convert: Callable[[object], tuple[np.ndarray | None, object]],
                 max_events: int = 50_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._it, self._convert = iterator, convert
        self.ended = False
        super().__init__(max_events, clock)

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                item = next(self._it)
            except StopIteration:
                self.ended = True
                return
            ev, payload = self._convert(item)
            self._keep((ev, payload, self._clock()))

    def stop(self, timeout_s: float = 5.0) -> list[tuple[np.ndarray | None, object, float]]:
        """Stop taking items (waits for the one being read) and hand over ``(events, payload, host_time_s)``."""
        return self._handover(timeout_s)
