"""Shared replay logic of the column readers (text, CSV / NumPy, ROS bags): column chunks → checked packets.

Why it is like this: these formats all decode to plain columns ``t_us, x, y, p`` a chunk at a time, so the
plausibility checks of :mod:`livenight.checks` (NaN, events outside the sensor, time spikes, clamping of late
events, far jumps, the garbage verdict, the event-less file) and the packet cutting (packets tile time, runs of
equal timestamps are never split) live here once instead of three times. Each chunk is held back until the next
one arrived, so a time spike that starts at the end of one chunk and returns in the next is still seen whole
(the aedat4 reader does the same per packet).
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

from livenight.checks import InputAudit, InputWarning, release_checked
from livenight.errors import SourceError
from livenight.events import EVENT_DTYPE, EventPacket, concat_events, polarity_to_on

DEFAULT_CHUNK_EVENTS = 1 << 18


class Columns:
    """One decoded chunk: ``t_us`` int64 (or float µs that may hold NaN), ``x``, ``y``, ``p`` of any numeric
    dtype, and where its first row is, for messages: ``at`` = ``"line"`` / ``"row"`` with ``first`` = its number,
    or a description (``"message 3 of /dvs/events"``) with ``first=None``."""

    __slots__ = ("t_us", "x", "y", "p", "at", "first")

    def __init__(self, t_us, x, y, p, at: str, first: int | None = None) -> None:
        self.t_us, self.x, self.y, self.p, self.at, self.first = t_us, x, y, p, at, first

    def where(self, k: int) -> str:
        """The place of row ``k`` of the chunk (``"line 14"``, ``"message 3 of /dvs/events, event 2"``)."""
        return f"{self.at} {self.first + k}" if self.first is not None else f"{self.at}, event {k}"


def to_us(t, scale_to_us: float) -> np.ndarray:
    """Timestamps in any unit to µs: int64 when exact, float64 µs when NaN / inf must survive to the audit."""
    t = np.asarray(t)
    if t.dtype.kind in "iu" and scale_to_us == int(scale_to_us) and scale_to_us >= 1:
        return t.astype(np.int64) * int(scale_to_us)
    return np.rint(t.astype(np.float64) * scale_to_us)


class ColumnStream:
    """Audit column chunks and cut them into :class:`EventPacket` objects.

    Args:
        what: the file, for messages.
        fmt: the format name used in the error (``"CSV"``, ``"rpg_e2vid text"``, …).
        sensor_size: ``(width, height)``; events outside are dropped and counted.
        chunk_events: events per packet (equal-timestamp runs are never split).
        unit: what the audit counts (``"rows"``, ``"lines"``, ``"events"``).
    """

    def __init__(self, what: str, fmt: str, sensor_size: tuple[int, int], chunk_events: int = DEFAULT_CHUNK_EVENTS,
                 unit: str = "rows") -> None:
        if chunk_events <= 0:
            raise ValueError(f"chunk_events must be positive (got {chunk_events})")
        self.what = what
        self.sensor_size = sensor_size
        self.chunk_events = int(chunk_events)
        self.audit = InputAudit(what, unit, fmt, sensor_size)
        self._seen = 0
        self._last_t: int | None = None
        self.closed = False

    # ---------------------------------------------------------------- one chunk
    def _convert(self, c: Columns) -> np.ndarray:
        """Checked events of one chunk (NaN and outside rows dropped and counted)."""
        audit = self.audit
        n = int(np.asarray(c.t_us).shape[0])
        audit.items += n
        t, x, y = np.asarray(c.t_us), np.asarray(c.x), np.asarray(c.y)
        keep = None
        bad = np.zeros(n, bool)
        for col in (t, x, y):
            if col.dtype.kind == "f":
                bad |= ~np.isfinite(col)
        if t.dtype.kind == "f":  # int64 µs must hold it (a garbled number, or seconds read as µs by mistake)
            with np.errstate(invalid="ignore"):
                bad |= np.abs(t) >= 2.0**62
        if bad.any():
            audit.add("nonfinite", int(bad.sum()), c.where(int(np.flatnonzero(bad)[0])))
            keep = ~bad
        width, height = self.sensor_size
        with np.errstate(invalid="ignore"):
            out = (x < 0) | (y < 0) | (x >= width) | (y >= height)
        out &= ~bad
        if out.any():
            audit.add("outside", int(out.sum()), c.where(int(np.flatnonzero(out)[0])))
            keep = ~(bad | out)
        p = np.asarray(c.p)
        if keep is not None:
            t, x, y, p = t[keep], x[keep], y[keep], p[keep]
        ev = np.empty(t.shape[0], dtype=EVENT_DTYPE)
        ev["t"] = t
        ev["x"] = x
        ev["y"] = y
        ev["p"] = polarity_to_on(p, what=f"{self.what}: polarity ({c.where(0)} onwards)")
        audit.events += int(ev.shape[0])
        return ev

    def _release(self, ev: np.ndarray, at: Columns, ahead_t: np.ndarray) -> np.ndarray | None:
        """Drop time spikes, count far jumps, clamp what is older than the last released event; then the verdict."""
        ev, self._last_t = release_checked(self.audit, ev, ahead_t, self._last_t,
                                           lambda i: f"{at.where(0)} + {i} events")
        return ev

    def _checked(self, chunks: Iterable[Columns]) -> Iterator[np.ndarray]:
        held: np.ndarray | None = None
        held_at: Columns | None = None
        for c in chunks:
            if self.closed:
                return
            ev = self._convert(c)
            if not ev.shape[0]:
                self.audit.check()
                continue
            if held is not None:
                out = self._release(held, held_at, ev["t"])
                if out is not None:
                    yield out
            held, held_at = ev, c
        if held is not None and not self.closed:
            out = self._release(held, held_at, np.empty(0, np.int64))
            if out is not None:
                yield out

    # ---------------------------------------------------------------- packets
    def packets(self, chunks: Iterable[Columns], warning: type[Warning] = InputWarning) -> Iterator[EventPacket]:
        """The packets of the whole stream; the final verdict (garbage, no events) comes before the last packet,
        and the repair warning at the end (or when the consumer stops early)."""
        size = self.sensor_size
        parts: list[np.ndarray] = []
        n_parts = 0
        t_start: int | None = None
        failed = False
        try:
            for ev in self._checked(chunks):
                parts.append(ev)
                n_parts += int(ev.shape[0])
                if n_parts < self.chunk_events:
                    continue
                chunk = concat_events(parts)
                while chunk.shape[0] >= self.chunk_events:
                    t = chunk["t"]
                    cut = int(np.searchsorted(t, t[self.chunk_events - 1], side="right"))
                    if cut >= t.shape[0]:  # the run may continue in the next chunk
                        break
                    out, chunk = chunk[:cut], chunk[cut:]
                    t_start = int(out["t"][0]) if t_start is None else t_start
                    t_end = int(chunk["t"][0])
                    yield EventPacket(out, t_start, t_end, time.monotonic(), size)
                    t_start = t_end
                parts, n_parts = [chunk], int(chunk.shape[0])
            if self.closed:
                return
            failed = True
            self.audit.check(final=True)
            self.audit.require_events()
            failed = False
            if n_parts:
                rest = concat_events(parts)
                t_start = int(rest["t"][0]) if t_start is None else t_start
                yield EventPacket(rest, t_start, int(rest["t"][-1]) + 1, time.monotonic(), size)
        except SourceError:
            failed = True
            raise
        finally:
            if not failed:
                self.audit.warn(category=warning, stacklevel=3)


def infer_sensor_size(max_x: int, max_y: int, what: str) -> tuple[int, int]:
    """The sensor from the largest coordinates, with the one warning every reader gives for it."""
    import warnings

    if max_x < 0 or max_y < 0:
        raise SourceError(f"{what}: no events to infer the sensor size from; pass sensor_size (--sensor-size WxH)")
    warnings.warn(f"{what}: no sensor size in the file; inferred {max_x + 1}x{max_y + 1} from the largest event "
                  "coordinates (pass --sensor-size WxH to override)", stacklevel=4)
    return max_x + 1, max_y + 1


class ColumnSourceMixin:
    """What every column reader (text, tables) shares around its :class:`ColumnStream` (``self._stream``, None
    before iteration): the audit of implausible input, and closing (the stream stops at its next chunk)."""

    _stream: "ColumnStream | None" = None

    @property
    def audit(self):
        """Implausible input found so far (None before iteration)."""
        return None if self._stream is None else self._stream.audit

    def close(self) -> None:
        if self._stream is not None:
            self._stream.closed = True
        self._stop_iteration()
        self._close_files()

    def _close_files(self) -> None:
        """Files the reader keeps open besides the stream (none by default)."""
