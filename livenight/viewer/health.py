"""The viewer's status line: input and output rates, end-to-end latency, losses, engine. Pure Python, no Qt.

Shared by the window (refreshed a few times a second from the pipeline's counters) and the MP4 writer's overlay
(which only sees frames). Rates are measured over the last ``span_s`` seconds from monotonically growing counters,
so a reader never has to reset anything another thread writes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np


class RateMeter:
    """Rate of a growing counter over (about) the last ``span_s`` seconds."""

    def __init__(self, span_s: float = 2.0) -> None:
        self.span_s = float(span_s)
        self._samples: deque[tuple[float, float]] = deque()

    def update(self, count: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._samples.append((now, float(count)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.span_s:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        return (float(count) - c0) / (now - t0) if now > t0 else 0.0

    def reset(self) -> None:
        self._samples.clear()


class LatencyWindow:
    """The last ``size`` end-to-end latencies (seconds); percentiles in ms."""

    def __init__(self, size: int = 300) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(float(seconds))

    def __len__(self) -> int:
        return len(self._values)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.fromiter(self._values, float), q) * 1e3) if self._values else float("nan")


@dataclass(frozen=True)
class Health:
    """One status-line worth of numbers; :meth:`text` formats it."""

    events_per_s: float
    frames_per_s: float  # reconstructed
    shown_per_s: float | None  # displayed (None without a window)
    latency_p50_ms: float  # event arrival → frame shown (or written)
    latency_p99_ms: float
    dropped_events: int
    skipped_windows: int
    engine: str = ""  # "numba/cpu float32"
    model: str = ""  # engine.info.name: the model file or the algorithm
    window: str = ""  # "40 ms", "50000 events", "RLED"
    notes: tuple[str, ...] = ()  # "PAUSED", "REC 00:12", "display auto 2–87%"
    filtered_events: int = 0  # removed by the event filters (livenight.filters); shown when any

    def text(self) -> str:
        ev = self.events_per_s
        ev_text = f"{ev / 1e6:.2f} Mev/s" if ev >= 1e5 else f"{ev / 1e3:.1f} kev/s"
        out = f"out {self.frames_per_s:.1f} fps"
        if self.shown_per_s is not None:
            out += f" (shown {self.shown_per_s:.1f})"
        lat = ("latency –" if np.isnan(self.latency_p50_ms)
               else f"latency p50 {self.latency_p50_ms:.0f} ms p99 {self.latency_p99_ms:.0f} ms")
        parts = [f"in {ev_text}", out, lat,
                 f"dropped {self.dropped_events} ev, "
                 + (f"filtered {self.filtered_events} ev, " if self.filtered_events else "")
                 + f"skipped {self.skipped_windows} win"]
        if self.model or self.engine:
            parts.append(" ".join(p for p in (self.model, self.engine) if p))
        if self.window:
            parts.append(f"window {self.window}")
        parts += list(self.notes)
        return " · ".join(parts)


def engine_labels(engine) -> tuple[str, str]:
    """``(model, engine)`` labels from an engine's :class:`~livenight.engines.base.EngineInfo` (if it has one)."""
    info = getattr(engine, "info", None)
    if info is None:
        return type(engine).__name__, ""
    return str(info.name), f"{info.backend}/{info.device} {info.dtype}"


def window_label(policy) -> str:
    """``40 ms`` / ``50000 events`` / ``RLED`` for a window policy (duck-typed, so any policy prints)."""
    if hasattr(policy, "window_us"):
        text = f"{policy.window_us / 1000:g} ms"
        if getattr(policy, "stride_us", policy.window_us) != policy.window_us:
            text += f" every {policy.stride_us / 1000:g} ms"
        return text
    if hasattr(policy, "count"):
        return f"{policy.count} events"
    if hasattr(policy, "event_indices"):
        return "RLED (from the file)"
    return type(policy).__name__


class PipelineStatus:
    """``status(frame) -> str`` with the viewer's status line, for an MP4 overlay written without a window.

    Rates come from the pipeline's counters, latency is event arrival → frame written. Called by
    :meth:`VideoSink.write <livenight.sinks.video.VideoSink.write>` on the reconstruction thread.

    Example:
        >>> video = VideoSink("out.mp4", overlay=True)                # doctest: +SKIP
        >>> pipe = Pipeline(source, size, engine, policy, sinks=[video])  # doctest: +SKIP
        >>> video.status = PipelineStatus(pipe)                       # doctest: +SKIP
    """

    def __init__(self, pipeline, notes: tuple[str, ...] = ()) -> None:
        self.pipeline = pipeline
        self.notes = tuple(notes)
        self.model, self.engine = engine_labels(pipeline.engine)
        self._events = RateMeter()
        self._frames = RateMeter()
        self.latency = LatencyWindow()

    def health(self, frame=None) -> Health:
        p = self.pipeline
        now = time.monotonic()
        if frame is not None and frame.host_time_s > 0:
            self.latency.add(now - frame.host_time_s)
        return Health(events_per_s=self._events.update(p.stats.events_in, now),
                      frames_per_s=self._frames.update(p.stats.frames, now), shown_per_s=None,
                      latency_p50_ms=self.latency.percentile_ms(50), latency_p99_ms=self.latency.percentile_ms(99),
                      dropped_events=p.ring.dropped_events, skipped_windows=p.windower.skipped_windows,
                      engine=self.engine, model=self.model, window=window_label(p.windower.policy), notes=self.notes,
                      filtered_events=p.stats.filtered_events)

    def __call__(self, frame) -> str:
        return self.health(frame).text()
