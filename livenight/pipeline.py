"""source → ring buffer → windows → engine → sinks, with the threading that keeps capture from ever waiting.

Why it is like this:

* **Offline** (a file replayed unpaced, e.g. writing PNGs): one thread. Each packet is pushed into the ring and
  every window it completes is reconstructed before the next packet is read. Nothing can be lost, so the ring
  only needs to hold one packet plus one window, and the result is deterministic.
* **Live** (a camera, or a replay paced to real time): the source runs in its own producer thread and only ever
  pushes into the ring (never blocks: the ring drops the oldest events and counts them). The calling thread
  reconstructs the *newest* complete window and counts the skipped ones, so a slow engine costs frames, not
  latency. A backlog of a couple of windows is worked off in order while the engine keeps up on average (a single
  slow frame then costs no window); once the average time per frame exceeds the time between windows, the backlog
  allowance drops to zero and latency stays one window. Display (the Qt viewer) is a third thread that only takes
  the newest frame.
* Shutdown: a ``threading.Event`` stops the producer; the source is closed by its owner; sinks are always
  closed, also after an error, so files written before a failure stay valid. A producer error (a corrupt file, an
  unplugged camera) is re-raised in the calling thread after everything stopped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .events import EventPacket
from .render import to_uint8
from .ring import EventRing
from .sinks import Frame, FrameSink
from .windowing import RledWindows, Window, Windower, WindowPolicy


@dataclass
class PipelineStats:
    """What a run did; printed by the CLI and the benchmarks."""

    frames: int = 0
    events_in: int = 0
    skipped_windows: int = 0
    dropped_events: int = 0
    resets: int = 0
    wall_s: float = 0.0
    engine_s: float = 0.0
    # live runs: host arrival of the last event of each frame's window -> frame handed to the sinks (seconds);
    # bounded on long runs. Unpaced replays have no arrival clock to measure against: throughput only.
    latency_s: deque = field(default_factory=lambda: deque(maxlen=100_000))
    live: bool = False
    filtered_events: int = 0  # removed by the event filters (livenight.filters), per filter in filter_counts
    filter_counts: str = ""

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(np.fromiter(self.latency_s, float), q) * 1e3) if self.latency_s else float("nan")

    def summary(self) -> str:
        fps = self.frames / self.wall_s if self.wall_s > 0 else 0.0
        latency = (f"latency p50 {self.latency_ms(50):.1f} ms p99 {self.latency_ms(99):.1f} ms "
                   "(last event of the window -> frame out), " if self.live and self.latency_s else "")
        return (f"{self.frames} frames in {self.wall_s:.2f} s ({fps:.1f} frames/s), {self.events_in} events, "
                f"engine {1e3 * self.engine_s / max(1, self.frames):.2f} ms/frame, {latency}"
                f"skipped windows {self.skipped_windows}, dropped events {self.dropped_events}"
                + (f", filtered events {self.filtered_events} ({self.filter_counts})" if self.filter_counts else ""))


class Pipeline:
    """Run a source through an engine into sinks.

    Args:
        source: an iterable of :class:`EventPacket` (a driver, possibly wrapped by ``paced``).
        sensor_size: ``(width, height)``.
        engine: an open engine (``step(window) -> float frame``); None records only (packet sinks).
        policy: the window policy.
        sinks: where frames go (sinks with ``write_packet`` also get every packet as it is ingested).
        live: producer thread + newest-window policy (cameras, paced replay).
        reference: optional reference frames (``t_us`` + indexing) to attach to each frame.
        max_frames: stop after this many frames.
        ring_capacity: events the ring holds (21 bytes each); offline it grows instead of dropping.
        filters: a :class:`~livenight.filters.FilterChain` (packet -> packet) applied before the ring.
    """

    def __init__(self, source: Iterable[EventPacket], sensor_size: tuple[int, int], engine, policy: WindowPolicy,
                 sinks: Sequence[FrameSink] = (), live: bool = False, reference=None, max_frames: int | None = None,
                 max_gap_us: int | None = None, ring_capacity: int = 1 << 22,
                 on_frame: Callable[[Frame], None] | None = None, filters=None) -> None:
        self.source = source
        self.filters = filters
        if filters is not None and isinstance(policy, RledWindows):  # index windows follow the filtered stream
            policy = RledWindows(filters.track_indices(policy.event_indices), policy.skip_last)
        self.sensor_size = tuple(sensor_size)
        self.engine = engine
        self.policy = policy
        self.sinks = list(sinks)
        self._packet_sinks = [s for s in self.sinks if hasattr(s, "write_packet")]
        self.live = live
        self.reference = reference
        self.max_frames = max_frames
        self.ring = EventRing(ring_capacity)
        self.windower = Windower(policy, self.ring, live=live, max_gap_us=max_gap_us)
        self.max_backlog = self.windower.max_backlog  # live: the allowance while the engine keeps up
        self._pace: tuple[int, float] | None = None  # (index, arrival s) of the last live window
        self._window_s: float | None = None  # live: moving averages of the time between windows
        self._frame_s: float | None = None  # and of the time one frame takes
        self.on_frame = on_frame
        self.stats = PipelineStats(live=live)
        self.stop_event = threading.Event()
        self._producer_error: BaseException | None = None
        self._producer_done = threading.Event()
        self._new_data = threading.Event()

    # ------------------------------------------------------------------ frames
    def _reference_for(self, w: Window) -> np.ndarray | None:
        ref = self.reference
        if ref is None or len(ref) == 0:
            return None
        i = self.windower.policy.reference_index(w, ref.t_us)  # RLED: image i; else the last exposed before t1
        return None if i is None or i >= len(ref) else ref[i]

    def _process(self, w: Window) -> Frame:
        """Reconstruct one window and hand the frame to the sinks."""
        t = time.perf_counter()
        out = self.engine.step(w)
        self.stats.engine_s += time.perf_counter() - t
        self.stats.resets += int(w.reset)
        frame = Frame(number=self.stats.frames, image=to_uint8(out), window_index=w.index, t0_us=w.t0_us,
                      t1_us=w.t1_us, events=w.events, sensor_size=self.sensor_size,
                      reference=self._reference_for(w), host_time_s=self._arrival_of(w))
        if frame.host_time_s > 0:
            self.stats.latency_s.append(time.monotonic() - frame.host_time_s)
        for sink in self.sinks:
            sink.write(frame)
        if self.on_frame is not None:
            self.on_frame(frame)
        self.stats.frames += 1
        if self.live:
            self._adapt_backlog(w, frame.host_time_s, time.perf_counter() - t)
        return frame

    def _adapt_backlog(self, w: Window, arrival_s: float, spent_s: float) -> None:
        """Live: keep the backlog allowance while frames take less time than windows arrive (moving averages),
        else none: an engine slower than the source shows the newest window rather than falling behind."""
        a = 0.2
        if arrival_s > 0:
            if self._pace is not None and w.index > self._pace[0] and arrival_s > self._pace[1]:
                per_window = (arrival_s - self._pace[1]) / (w.index - self._pace[0])
                self._window_s = per_window if self._window_s is None else (1 - a) * self._window_s + a * per_window
            self._pace = (w.index, arrival_s)
        self._frame_s = spent_s if self._frame_s is None else (1 - a) * self._frame_s + a * spent_s
        if self._window_s is not None:
            self.windower.max_backlog = self.max_backlog if self._frame_s < 0.9 * self._window_s else 0

    @property
    def _more(self) -> bool:
        """False once ``max_frames`` frames were made or :meth:`stop` was called."""
        return not self.stop_event.is_set() and (self.max_frames is None or self.stats.frames < self.max_frames)

    def _arrival_of(self, w: Window) -> float:
        """Host arrival (monotonic s) of the last event of ``w``: live runs only, 0.0 when unknown or empty."""
        if not self.live or w.i1 <= w.i0:
            return 0.0
        t = self.ring.host_time_of(w.i1 - 1)
        return t if t > 0 else 0.0  # NaN (packet no longer tracked) compares False

    def _ingest(self, pkt: EventPacket) -> None:
        for sink in self._packet_sinks:  # sinks that keep the stream itself (RLED recording)
            sink.write_packet(pkt)
        if self.engine is None:  # recording only: no windows to cut
            self.stats.events_in += len(pkt)
            return
        self.windower.notice_sensor_size(pkt.sensor_size)
        self.stats.events_in += len(pkt)
        if self.filters is not None:
            pkt = self.filters(pkt)
            self.stats.filtered_events = self.filters.removed
        self.ring.push(pkt.events, pkt.t_end_us, pkt.host_time_s)

    # ------------------------------------------------------------------ run
    def run(self, progress=None) -> PipelineStats:
        """Run to the end of the source, ``max_frames`` or :meth:`stop`; returns the statistics."""
        for _ in self.frames(progress):
            pass
        return self.stats

    def frames(self, progress=None) -> Iterator[Frame]:
        """Run, yielding each frame after the sinks got it (the Python API's loop). Leaving the loop early (or
        closing the generator) stops the pipeline, closes the sinks and fills :attr:`stats`."""
        t_start = time.perf_counter()
        try:
            yield from (self._live(progress) if self.live else self._offline(progress))
        finally:
            self.stop_event.set()
            for sink in self.sinks:
                sink.close()
            self.stats.wall_s = time.perf_counter() - t_start
            self.stats.skipped_windows = self.windower.skipped_windows
            self.stats.dropped_events = self.ring.dropped_events
            if self.filters is not None:
                self.stats.filtered_events = self.filters.removed
                self.stats.filter_counts = self.filters.counts_text()
        return self.stats

    def stop(self) -> None:
        self.stop_event.set()

    def _offline(self, progress) -> Iterator[Frame]:
        for pkt in self.source:
            need = self.ring.unreleased + len(pkt)
            if need > self.ring.capacity:  # offline never drops: keep every event a window still needs
                self.ring.grow(max(need, 2 * self.ring.capacity))
            self._ingest(pkt)
            for w in self.windower.windows():
                if progress is not None:
                    progress.update(1)
                yield self._process(w)
                if not self._more:
                    return
            if self.stop_event.is_set():
                return
        if self.stats.frames == 0 and not self.stop_event.is_set():
            w = self.windower.partial_window()  # a recording shorter than one window still gives a frame
            if w is not None:
                yield self._process(w)

    def _produce(self) -> None:
        try:
            for pkt in self.source:
                if self.stop_event.is_set():
                    break
                self._ingest(pkt)
                self._new_data.set()
        except BaseException as e:  # re-raised by the consumer
            self._producer_error = e
        finally:
            self._producer_done.set()
            self._new_data.set()

    def _live(self, progress) -> Iterator[Frame]:
        producer = threading.Thread(target=self._produce, name="livenight-source", daemon=True)
        producer.start()
        try:
            while not self.stop_event.is_set():
                done = self._producer_done.is_set()
                windows = list(self.windower.windows())  # live: at most the newest window
                for w in windows:
                    if progress is not None:
                        progress.update(1 + w.skipped)
                    yield self._process(w)
                    if not self._more:
                        return
                if done and not windows:
                    break
                if not windows:
                    self._new_data.wait(0.05)
                    self._new_data.clear()
        finally:
            self.stop_event.set()
            producer.join(timeout=5.0)
            if self._producer_error is not None:
                raise self._producer_error
