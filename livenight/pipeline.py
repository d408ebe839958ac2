"""source → ring buffer → windows → engine → sinks, with the threading that keeps capture from ever waiting.

Why it is like this:

* **Offline** (a file replayed unpaced, e.g. writing PNGs): one thread. Each packet is pushed into the ring and
  every window it completes is reconstructed before the next packet is read. Nothing can be lost, so the ring
  only needs to hold one packet plus one window, and the result is deterministic.
* **Live** (a camera, or a replay paced to real time): the source runs in its own producer thread and only ever
  pushes into the ring (never blocks: the ring drops the oldest events and counts them). The calling thread
  reconstructs the *newest* complete window and counts the skipped ones, so a slow engine costs frames, not
  latency. Display (the Qt viewer) is a third thread that only takes the newest frame.
* Shutdown: a ``threading.Event`` stops the producer; the source is closed by its owner; sinks are always
  closed, also after an error, so files written before a failure stay valid. A producer error (a corrupt file, an
  unplugged camera) is re-raised in the calling thread after everything stopped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from .events import EventPacket
from .frames import to_uint8
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
    latency_s: deque = field(default_factory=lambda: deque(maxlen=100_000))  # bounded on long live runs
    live: bool = False

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(np.fromiter(self.latency_s, float), q) * 1e3) if self.latency_s else float("nan")

    def summary(self) -> str:
        fps = self.frames / self.wall_s if self.wall_s > 0 else 0.0
        latency = (f"latency p50 {self.latency_ms(50):.1f} ms p99 {self.latency_ms(99):.1f} ms, " if self.live
                   else "")
        return (f"{self.frames} frames in {self.wall_s:.2f} s ({fps:.1f} frames/s), {self.events_in} events, "
                f"engine {1e3 * self.engine_s / max(1, self.frames):.2f} ms/frame, {latency}"
                f"skipped windows {self.skipped_windows}, dropped events {self.dropped_events}")


class Pipeline:
    """Run a source through an engine into sinks.

    Args:
        source: an iterable of :class:`EventPacket` (a driver, possibly wrapped by ``paced``).
        sensor_size: ``(width, height)``.
        engine: an open engine (``step(window) -> float frame``).
        policy: the window policy.
        sinks: where frames go.
        live: producer thread + newest-window policy (cameras, paced replay).
        reference: optional reference frames (``t_us`` + indexing) to attach to each frame.
        max_frames: stop after this many frames.
        ring_capacity: events the ring holds (21 bytes each); offline it grows instead of dropping.
    """

    def __init__(self, source: Iterable[EventPacket], sensor_size: tuple[int, int], engine, policy: WindowPolicy,
                 sinks: Sequence[FrameSink] = (), live: bool = False, reference=None, max_frames: int | None = None,
                 max_gap_us: int = 1_000_000, ring_capacity: int = 1 << 22,
                 on_frame: Callable[[Frame], None] | None = None) -> None:
        self.source = source
        self.sensor_size = tuple(sensor_size)
        self.engine = engine
        self.policy = policy
        self.sinks = list(sinks)
        self.live = live
        self.reference = reference
        self.max_frames = max_frames
        self.ring = EventRing(ring_capacity)
        self.windower = Windower(policy, self.ring, live=live, max_gap_us=max_gap_us)
        self.on_frame = on_frame
        self.stats = PipelineStats(live=live)
        self.stop_event = threading.Event()
        self._last_host_time = 0.0
        self._producer_error: BaseException | None = None
        self._producer_done = threading.Event()
        self._new_data = threading.Event()

    # ------------------------------------------------------------------ frames
    def _reference_for(self, w: Window) -> np.ndarray | None:
        ref = self.reference
        if ref is None or len(ref) == 0:
            return None
        if isinstance(self.policy, RledWindows):
            return ref[w.index] if w.index < len(ref) else None
        i = int(np.searchsorted(ref.t_us, w.t1_us, side="right")) - 1  # the last frame exposed before t1
        return ref[i] if i >= 0 else None

    def _process(self, w: Window) -> bool:
        """Reconstruct one window; False once ``max_frames`` is reached."""
        t = time.perf_counter()
        out = self.engine.step(w)
        self.stats.engine_s += time.perf_counter() - t
        self.stats.resets += int(w.reset)
        frame = Frame(number=self.stats.frames, image=to_uint8(out), window_index=w.index, t0_us=w.t0_us,
                      t1_us=w.t1_us, events=w.events, sensor_size=self.sensor_size,
                      reference=self._reference_for(w), host_time_s=self._last_host_time)
        for sink in self.sinks:
            sink.write(frame)
        if self.on_frame is not None:
            self.on_frame(frame)
        self.stats.latency_s.append(time.monotonic() - self._last_host_time)
        self.stats.frames += 1
        return self.max_frames is None or self.stats.frames < self.max_frames

    def _ingest(self, pkt: EventPacket) -> None:
        self.windower.notice_sensor_size(pkt.sensor_size)
        self.ring.push(pkt.events, pkt.t_end_us)
        self._last_host_time = pkt.host_time_s
        self.stats.events_in += len(pkt)

    # ------------------------------------------------------------------ run
    def run(self, progress=None) -> PipelineStats:
        """Run to the end of the source, ``max_frames`` or :meth:`stop`; returns the statistics."""
        t_start = time.perf_counter()
        try:
            if self.live:
                self._run_live(progress)
            else:
                self._run_offline(progress)
        finally:
            self.stop_event.set()
            for sink in self.sinks:
                sink.close()
            self.stats.wall_s = time.perf_counter() - t_start
            self.stats.skipped_windows = self.windower.skipped_windows
            self.stats.dropped_events = self.ring.dropped_events
        return self.stats

    def stop(self) -> None:
        self.stop_event.set()

    def _run_offline(self, progress) -> None:
        for pkt in self.source:
            need = self.ring.unreleased + len(pkt)
            if need > self.ring.capacity:  # offline never drops: keep every event a window still needs
                self.ring.grow(max(need, 2 * self.ring.capacity))
            self._ingest(pkt)
            for w in self.windower.poll():
                if progress is not None:
                    progress.update(1)
                if not self._process(w) or self.stop_event.is_set():
                    return
            if self.stop_event.is_set():
                return
        if self.stats.frames == 0 and not self.stop_event.is_set():
            w = self.windower.partial_window()  # a recording shorter than one window still gives a frame
            if w is not None:
                self._process(w)

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

    def _run_live(self, progress) -> None:
        producer = threading.Thread(target=self._produce, name="livenight-source", daemon=True)
        producer.start()
        try:
            while not self.stop_event.is_set():
                done = self._producer_done.is_set()
                windows = self.windower.poll()
                for w in windows:
                    if progress is not None:
                        progress.update(1 + w.skipped)
                    if not self._process(w):
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
