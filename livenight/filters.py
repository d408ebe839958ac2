"""Event filters: a pipeline stage between the source and the ring (hot pixels, background activity, rate limit).

Why it is like this:

* Filters are stateful objects applied to each packet in stream order (``FilterChain(packet) -> packet``), in the
  thread that ingests (the producer, live), so they never see a window twice and add no latency beyond their
  own cost. Each counts what it removed; the chain's counts go into the run's summary.
* **Hot pixels**: a pixel is hot when, during the first ``learn_ms`` of stream time, it fired more than ``factor``
  times the median count of the pixels that fired at all (the median over *all* pixels is 0 at night, which
  would make every active pixel hot) *and* more than ``factor`` times its second-busiest neighbour (a lamp or a
  star lights a blob of pixels that fire together; a hot pixel fires alone, or beside one other hot pixel). Events pass unfiltered while it
  learns; ``refresh_s`` relearns periodically (the old mask stays until the new one is ready).
* **Background activity**: an event is kept when one of its 8 neighbours fired less than ``duration_us`` before
  it; the pixel's own time is updated by every event. This is dv-processing's ``BackgroundActivityNoiseFilter``
  rule, and ``backend="dv"`` runs that class itself. The default (``auto``) is the numba kernel: it gives the same
  events (``tests/test_filters.py`` checks it on the shared DAVIS recording) and is 50× or more faster, because
  dv-processing 2.0.4's Python API can only fill an ``EventStore`` one event at a time (~1 M events/s). Our
  surface starts as "never fired"; dv's starts at t = 0, which differs only for events in the first
  ``duration_us`` of a clock that starts at 0. The surface holds int32 µs relative to a base that moves every
  ~18 minutes of stream time (half the memory of int64: fewer cache misses at 1280x720).
* **Rate limit** (``max_rate`` M events/s): within each 1 ms slice of stream time that holds more events than
  the rate allows, each event is kept with probability budget / count (a seeded xorshift, so a run is
  reproducible). An EVK4 burst then costs detail, not latency.
* Filters are off unless asked for (CLI options), or unless the model's metadata (``meta["filters"]``, in
  :meth:`FilterConfig.to_json` form) says its training used them.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, fields
from typing import Callable, Literal

import numpy as np

from .events import EventPacket, concat_events

#: the background-activity surface holds int32 µs relative to a base: this value is "never fired"
NEVER_REL_US = int(np.iinfo(np.int32).min)
#: times relative to the base stay below this; beyond it the surface is rebased (every ~18 minutes of stream)
REBASE_AT_US = 1 << 30
RATE_SLICE_US = 1_000


def _kernels():
    from . import _filter_kernels

    return _filter_kernels


@dataclass(frozen=True)
class FilterConfig:
    """What to filter; ``None`` / ``False`` = off. Times in the units their names say."""

    hot_pixels: bool = False
    hot_pixels_ms: float = 1000.0
    hot_pixels_factor: float = 10.0
    hot_pixels_refresh_s: float = 0.0
    background_ms: float | None = None
    noise_backend: Literal["auto", "numba", "dv"] = "auto"
    max_rate_mev_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("hot_pixels_ms", "hot_pixels_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)!r})")
        if not self.hot_pixels_refresh_s >= 0:
            raise ValueError(f"hot_pixels_refresh_s must be >= 0 (got {self.hot_pixels_refresh_s!r})")
        for name in ("background_ms", "max_rate_mev_s"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and np.isfinite(v)):
                raise ValueError(f"{name} must be a positive number (got {v!r})")
        if self.noise_backend not in ("auto", "numba", "dv"):
            raise ValueError(f"noise_backend must be 'auto', 'numba' or 'dv' (got {self.noise_backend!r})")

    @property
    def enabled(self) -> bool:
        return self.hot_pixels or self.background_ms is not None or self.max_rate_mev_s is not None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FilterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown filter settings {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**d)


class HotPixelFilter:
    """Mask pixels that fire far above the median active pixel (see the module docstring).

    Args:
        sensor_size: ``(width, height)``.
        learn_us: stream time to learn over, from the first event.
        factor: hot = count > factor × the median count of the pixels that fired, and > factor × its
            second-busiest neighbour.
        refresh_us: relearn every this many µs of stream time (0: never).
        min_count: a pixel needs at least this many events in the learning time to be hot.
        mask: a known ``(height, width)`` bool mask; learning then only refreshes it.
    """

    name = "hot pixels"

    def __init__(self, sensor_size: tuple[int, int], learn_us: int = 1_000_000, factor: float = 10.0,
                 refresh_us: int = 0, min_count: int = 5, mask: np.ndarray | None = None) -> None:
        self.width, self.height = (int(v) for v in sensor_size)
        self.learn_us, self.factor, self.refresh_us, self.min_count = int(learn_us), float(factor), int(refresh_us), int(min_count)
        n = self.width * self.height
        self.mask = np.zeros(n, bool) if mask is None else np.asarray(mask, bool).reshape(n).copy()
        self.counts = np.zeros(n, np.int64)
        self.last_counts = self.counts
        self.removed = 0
        self.last_pos: np.ndarray | None = None  # positions in the last input of the events kept (None: all)
        self.learned = mask is not None
        self.median_count = 0.0
        self._from: int | None = None  # learning window [from, until)
        self._until: int | None = None

    def _finish_learning(self) -> None:
        c = self.counts
        active = c[c > 0]
        ref = float(np.median(active)) if active.size else 0.0
        # the second-busiest of the 8 neighbours: a bright blob (a lamp, a star) fires with several neighbours, a hot
        # pixel alone or beside one other hot pixel
        grid = np.pad(c.reshape(self.height, self.width), 1)
        h, w = self.height, self.width
        ring = np.stack([grid[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                         if dy or dx], axis=-1)
        around = np.partition(ring, 6, axis=-1)[..., 6].reshape(-1)
        self.mask = ((c > self.factor * max(ref, 1.0)) & (c > self.factor * np.maximum(around, 1.0))
                     & (c >= self.min_count))
        self.last_counts = c.copy()
        self.median_count = ref
        c[:] = 0
        self.learned = True

    def __call__(self, events: np.ndarray, t_end_us: int | None = None) -> np.ndarray:
        if events.shape[0] == 0:
            return events
        if self._from is None:
            self._from = int(events["t"][0])
            self._until = self._from + self.learn_us
        out = np.empty_like(events)
        pos = np.empty(events.shape[0], np.int64)
        n = _kernels().hot_pixels(events, self.width, self.mask, self.counts, self._from, self._until, out, pos)
        end = int(events["t"][-1]) if t_end_us is None else max(int(t_end_us), int(events["t"][-1]))
        if end >= self._until and self._until > self._from:
            self._finish_learning()
            if self.refresh_us:
                self._from += self.refresh_us
                self._until = self._from + self.learn_us
            else:
                self._from = self._until = np.iinfo(np.int64).max
        self.removed += events.shape[0] - n
        self.last_pos = None if n == events.shape[0] else pos[:n]
        return events if n == events.shape[0] else out[:n]

    def hot_list(self) -> np.ndarray:
        """The masked pixels as rows ``(x, y, count during learning)``, most active first."""
        q = np.flatnonzero(self.mask)
        counts = self.last_counts[q]
        order = np.argsort(-counts, kind="stable")
        q, counts = q[order], counts[order]
        return np.stack([q % self.width, q // self.width, counts], axis=1).astype(np.int64)

    def describe(self) -> str:
        refresh = f", relearned every {self.refresh_us / 1e6:g} s" if self.refresh_us else ""
        return (f"hot pixels (> {self.factor:g}x the median active pixel and its second-busiest neighbour over the "
                f"first {self.learn_us / 1000:g} ms{refresh})")


class BackgroundActivityFilter:
    """Keep events with a neighbour event less than ``duration_us`` before them (see the module docstring).

    Args:
        sensor_size: ``(width, height)``.
        duration_us: the support time window.
        backend: ``"auto"`` / ``"numba"`` (own kernel) or ``"dv"`` (dv-processing's BackgroundActivityNoiseFilter).
    """

    name = "background activity"

    def __init__(self, sensor_size: tuple[int, int], duration_us: int = 2_000,
                 backend: Literal["auto", "numba", "dv"] = "auto") -> None:
        self.width, self.height = (int(v) for v in sensor_size)
        self.duration_us = int(duration_us)
        if not 0 < self.duration_us < REBASE_AT_US:
            raise ValueError(f"duration_us must be positive and below {REBASE_AT_US} (got {duration_us!r})")
        self.backend = "numba" if backend == "auto" else backend
        self.removed = 0
        self.last_pos: np.ndarray | None = None
        if self.backend == "dv":
            from livenight.drivers._dv import dv_module

            self._dv = dv_module("the dv-processing noise filter (--noise-backend dv)")
            self._filter = self._dv.noise.BackgroundActivityNoiseFilter(
                (self.width, self.height), backgroundActivityDuration=datetime.timedelta(microseconds=self.duration_us))
        elif self.backend == "numba":
            self.surface = np.full((self.height + 2, self.width + 2), NEVER_REL_US, np.int32)
            self.base_us: int | None = None
        else:
            raise ValueError(f"backend must be 'auto', 'numba' or 'dv' (got {backend!r})")

    def __call__(self, events: np.ndarray, t_end_us: int | None = None) -> np.ndarray:
        if events.shape[0] == 0:
            return events
        if self.backend == "dv":
            from livenight.drivers._dv import events_to_store, store_to_events

            self._filter.accept(events_to_store(self._dv, events))
            kept = store_to_events(self._filter.generateEvents(), None, "dv noise filter")
            pos = np.empty(kept.shape[0], np.int64)
            _kernels().subsequence_positions(events, kept, pos)
        else:
            kept, pos = self._numba(events)
        self.removed += events.shape[0] - kept.shape[0]
        self.last_pos = None if kept.shape[0] == events.shape[0] else pos
        return kept

    def _rebase(self, base_us: int) -> None:
        """Express the surface relative to ``base_us`` (pixels older than int32 reaches stay "never")."""
        if self.base_us is not None:
            shifted = self.surface.astype(np.int64) - (base_us - self.base_us)
            self.surface[...] = np.clip(shifted, NEVER_REL_US, np.iinfo(np.int32).max)
        self.base_us = base_us

    def _numba(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        t0, t1 = int(events["t"][0]), int(events["t"][-1])
        if t1 - t0 >= REBASE_AT_US:  # a time jump inside one packet: one piece per rebase
            cut = int(np.searchsorted(events["t"], t0 + REBASE_AT_US))
            a, pa = self._numba(events[:cut])
            b, pb = self._numba(events[cut:])
            pa = np.arange(cut) if pa is None else pa
            pb = np.arange(cut, events.shape[0]) if pb is None else pb + cut
            if a.shape[0] + b.shape[0] == events.shape[0]:
                return events, None
            return concat_events([a, b]), np.concatenate([pa, pb])
        if self.base_us is None or t1 - self.base_us >= REBASE_AT_US or t0 < self.base_us:
            self._rebase(t0)
        out = np.empty_like(events)
        pos = np.empty(events.shape[0], np.int64)
        n = _kernels().background_activity(events, self.surface, self.base_us, self.duration_us, out, pos)
        return (events, None) if n == events.shape[0] else (out[:n], pos[:n])

    def describe(self) -> str:
        return f"background activity (a neighbour within {self.duration_us / 1000:g} ms, {self.backend})"


class RateLimiter:
    """At most ``max_rate_mev_s`` M events/s per 1 ms slice, by random subsampling (seeded)."""

    name = "rate limit"

    def __init__(self, max_rate_mev_s: float, slice_us: int = RATE_SLICE_US, seed: int = 0x5EED) -> None:
        if not (max_rate_mev_s > 0 and np.isfinite(max_rate_mev_s)):
            raise ValueError(f"max_rate_mev_s must be a positive number (got {max_rate_mev_s!r})")
        self.max_rate_mev_s = float(max_rate_mev_s)
        self.slice_us = int(slice_us)
        self._state = np.array([np.uint64(seed) | np.uint64(1)], np.uint64)
        self.removed = 0
        self.last_pos: np.ndarray | None = None
        self._t_start: int | None = None

    def __call__(self, events: np.ndarray, t_end_us: int | None = None, t_start_us: int | None = None) -> np.ndarray:
        if events.shape[0] == 0:
            return events
        t0 = int(events["t"][0]) if t_start_us is None else int(t_start_us)
        t1 = int(events["t"][-1]) + 1 if t_end_us is None else int(t_end_us)
        out = np.empty_like(events)
        pos = np.empty(events.shape[0], np.int64)
        n = _kernels().rate_limit(events, t0, t1, self.slice_us, self.max_rate_mev_s, self._state, out, pos)
        self.removed += events.shape[0] - n
        self.last_pos = None if n == events.shape[0] else pos[:n]
        return events if n == events.shape[0] else out[:n]

    def describe(self) -> str:
        return f"rate limit {self.max_rate_mev_s:g} M events/s (random subsampling per {self.slice_us / 1000:g} ms)"


class FilterChain:
    """Filters applied in order to each packet; ``removed`` and :meth:`counts_text` say what they took out.

    Windows cut by event index (RLED ``event_indices``) count the events of the *unfiltered* recording;
    :meth:`track_indices` gives the pipeline a copy of them that is rewritten, as packets pass, into indices of
    the filtered stream (an index becomes the number of kept events before it), so each window keeps exactly its
    events minus the filtered ones.
    """

    def __init__(self, filters: list) -> None:
        self.filters = list(filters)
        self.events_in = 0
        self.events_out = 0
        self._orig: np.ndarray | None = None  # event_indices of the unfiltered stream
        self._work: np.ndarray | None = None  # the same, rewritten as far as the stream went

    def track_indices(self, event_indices: np.ndarray) -> np.ndarray:
        """An int64 copy of ``event_indices`` that follows the filtering (see the class docstring): entries not
        reached yet hold a bound that never completes a window early (ends) or releases events a window still
        needs (starts)."""
        self._orig = np.asarray(event_indices, dtype=np.int64).copy()
        self._work = self._orig.copy()
        self._work[:, 0] = np.where(self._orig[:, 0] > 0, 0, self._orig[:, 0])
        return self._work

    def _remap(self, n_in: int, pos: np.ndarray | None, n_out: int) -> None:
        orig, work = self._orig, self._work
        a, b = self.events_in, self.events_in + n_in  # this packet's original indices: [a, b)
        for c in (0, 1):
            col = orig[:, c]
            lo, hi = np.searchsorted(col, a, side="right"), np.searchsorted(col, b, side="right")
            if hi > lo:  # entries in (a, b]: kept events before them
                rel = col[lo:hi] - a
                work[lo:hi, c] = self.events_out + (rel if pos is None else np.searchsorted(pos, rel, side="left"))
            if c == 0:
                work[hi:, 0] = self.events_out + n_out  # not reached: at least this many kept events precede

    def __call__(self, pkt: EventPacket) -> EventPacket:
        ev = pkt.events
        n_in = ev.shape[0]
        pos = None
        for f in self.filters:
            before = ev
            if isinstance(f, RateLimiter):
                ev = f(ev, pkt.t_end_us, pkt.t_start_us)
            else:
                ev = f(ev, pkt.t_end_us)
            if ev is not before and self._orig is not None:
                pos = f.last_pos if pos is None else pos[f.last_pos]
        if self._orig is not None:
            self._remap(n_in, pos, ev.shape[0])
        self.events_in += n_in
        self.events_out += ev.shape[0]
        if ev is pkt.events:
            return pkt
        return EventPacket(ev, pkt.t_start_us, pkt.t_end_us, pkt.host_time_s, pkt.sensor_size)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.filters)

    def counts_text(self) -> str:
        """``"hot pixels 120, background activity 3400"``."""
        return ", ".join(f"{f.name} {f.removed}" for f in self.filters)

    def describe(self) -> str:
        return "filters: " + "; ".join(f.describe() for f in self.filters)

    def summary(self) -> str:
        share = 100.0 * self.removed / self.events_in if self.events_in else 0.0
        return f"filters removed {self.removed} of {self.events_in} events ({share:.1f} %: {self.counts_text()})"


def build_filters(config: FilterConfig, sensor_size: tuple[int, int]) -> FilterChain | None:
    """The chain for ``config`` (hot pixels, then background activity, then the rate limit), or None when off."""
    if not config.enabled:
        return None
    chain = []
    if config.hot_pixels:
        chain.append(HotPixelFilter(sensor_size, round(config.hot_pixels_ms * 1000), config.hot_pixels_factor,
                                    round(config.hot_pixels_refresh_s * 1e6)))
    if config.background_ms is not None:
        chain.append(BackgroundActivityFilter(sensor_size, round(config.background_ms * 1000), config.noise_backend))
    if config.max_rate_mev_s is not None:
        chain.append(RateLimiter(config.max_rate_mev_s))
    return FilterChain(chain)


def config_from_args(args) -> FilterConfig | None:
    """The filters the command line asks for, or None when it names none."""
    hot = bool(getattr(args, "hot_pixels", False))
    bg = getattr(args, "background_ms", None)
    rate = getattr(args, "max_rate", None)
    if not (hot or bg is not None or rate is not None):
        return None
    return FilterConfig(hot_pixels=hot, hot_pixels_ms=getattr(args, "hot_pixels_ms", None) or 1000.0,
                        hot_pixels_factor=getattr(args, "hot_pixels_factor", None) or 10.0,
                        hot_pixels_refresh_s=getattr(args, "hot_pixels_refresh_s", None) or 0.0,
                        background_ms=bg, noise_backend=getattr(args, "noise_backend", None) or "auto",
                        max_rate_mev_s=rate)


def model_filters(engine) -> "FilterConfig | None":
    """The filters a model's metadata says its training used (``meta["filters"]``), or None."""
    meta = getattr(engine, "meta", None) or {}
    return FilterConfig.from_json(meta["filters"]) if isinstance(meta.get("filters"), dict) else None


def filters_for_run(args, sensor_size: tuple[int, int], engine=None,
                    say: Callable[[str], None] | None = None) -> FilterChain | None:
    """The run's filter chain: the command line's, else the model's (``meta["filters"]``), else none.

    ``--no-filters`` turns even the model's off. ``say`` gets one line describing the chain.
    """
    if getattr(args, "no_filters", False):
        return None
    config = config_from_args(args)
    origin = "asked for"
    if config is None:
        config, origin = model_filters(engine), "the model's training used them"
    if config is None:
        return None
    chain = build_filters(config, sensor_size)
    if chain is not None and say is not None:
        say(f"livenight: {chain.describe()} ({origin})")
    return chain


def learn_hot_pixels(source, learn_ms: float = 1000.0, factor: float = 10.0) -> tuple[HotPixelFilter, int, int]:
    """Run hot-pixel learning over the first ``learn_ms`` of ``source``; returns the filter (``hot_list()``,
    ``median_count``), the number of events it learned from and the stream time they span (µs; shorter than
    ``learn_ms`` for a short recording)."""
    hp = HotPixelFilter(source.sensor_size, round(learn_ms * 1000), factor)
    seen = last = 0
    for pkt in source:
        if len(pkt) == 0:
            continue
        if hp._from is None:
            hp._from = int(pkt.events["t"][0])
            hp._until = hp._from + hp.learn_us
        until = hp._until
        ev = pkt.events[: int(np.searchsorted(pkt.events["t"], until))]
        seen += ev.shape[0]
        if ev.shape[0]:
            last = int(ev["t"][-1])
        hp(ev, pkt.t_end_us)
        if hp.learned:
            return hp, seen, hp.learn_us
    if not hp.learned:
        hp._finish_learning()  # a recording shorter than the learning time
    return hp, seen, (last + 1 - hp._from) if seen else 0
