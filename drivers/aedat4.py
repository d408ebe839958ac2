"""Replay of iniVation AEDAT 4.0 recordings (``.aedat4``) with the ``aedat`` package (a Rust reader).

Why it is like this:

* **Never a hang.** dv-processing 2.0.4 can loop forever inside ``MonoCameraRecording`` or
  ``getNextEventBatch`` on a corrupted file, and a C++ call cannot be interrupted from Python. The ``aedat``
  package (PyPI, MIT, numpy only) raises a ``RuntimeError`` for every damaged packet instead (LZ4 errors, a
  missing size prefix, a cut file) and carries on with the next packet, so a damaged packet costs its own
  events only. Measured on the shared 6 MB DAVIS346 clip: corrupt copies end in 0.02-0.16 s with ``aedat``,
  while three of them made dv-processing spin past a 15 s deadline; a clean read takes ~0.02 s with either.
  dv-processing stays the driver for live cameras and ``tcp://`` streams (:mod:`.davis`, :mod:`.network`).
* **Plausibility.** Events outside the sensor are dropped, time spikes removed, events older than what was
  already replayed clamped, damaged packets skipped, all counted by :class:`~livenight.checks.InputAudit`:
  a few of them give one warning at the end, mostly garbage gives an error before any packet leaves, and a
  file without a single event is an error, as for every other format.
* **Streaming.** Events are read packet by packet and regrouped into packets of ``chunk_events`` (more only when
  a run of equal timestamps straddles the cut); a multi-GB file is never loaded whole. Packets tile time like
  :class:`~livenight.drivers.rled.RledSource`: packet k covers ``[t_start_us, t_end_us)``, ``t_end_us`` is the
  first timestamp of packet k+1, and a run of equal timestamps is never split.
* **Any iniVation camera.** Resolution comes from the stream table, the camera and stream names from the header's
  XML description; the event stream is the one called ``events`` or else the first stream of event type.
* **Frames = exposure end.** The project's reference-frame convention (RLED image ``timestamp``) is the
  *exposure end*, so ``frames.t_us`` is the frame's exposure end; ``frames.t_begin_us`` and
  ``frames.exposure_us`` keep the exposure begin and length. Frames are scanned once when the file is opened.
  Their images are kept in memory while they fit in ``preload_frames_bytes`` (default 256 MiB, ~2900 DAVIS346
  frames); beyond that only the timestamps are kept and each image is read again on demand (sequentially, so
  reading frames in order costs one pass).
* **RLED event indices.** ``event_indices[i] = [searchsorted(t, mid_i − 10 ms), searchsorted(t, mid_i + 10 ms))``
  with ``mid_i = begin_i + exposure_i // 2`` (the exposure midpoint) and ``t`` all event timestamps (side
  ``"left"``). Computed on first access by one extra pass that keeps only the per-frame counts; ``None`` without
  frames.
* **Truncated files.** Every complete packet is replayed, then iteration raises a
  :class:`~livenight.errors.SourceError` that says the file is truncated and how many events came out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from livenight.checks import SPIKE_US, InputAudit, release_checked
from livenight.errors import SourceError, SourceNotFoundError
from livenight.events import EVENT_DTYPE, EventPacket

from ._aedat4_reader import (DEFAULT_CHUNK_EVENTS, DEFAULT_PRELOAD_FRAMES_BYTES, RLED_HALF_WINDOW_US,
                             _choose, _frame_to_grey, _header, _OnlineEventIndices, _Reader, _stream_info)
from .base import SingleUse

class Aedat4Frames:
    """The APS frames of an aedat4 file as :class:`~livenight.drivers.base.ReferenceFrames`.

    ``t_us`` is the exposure **end**, int64 µs; ``t_begin_us`` and ``exposure_us`` the exposure begin and length.
    ``frames[i]`` is (H, W) uint8 (colour frames converted to grey).
    """

    def __init__(self, path: Path, stream_id: int, resolution: tuple[int, int], preload_bytes: int,
                 event_stream: int | None = None) -> None:
        self._path = path
        self._stream = stream_id
        self._resolution = resolution
        begins: list[int] = []
        ends: list[int] = []
        images: list[np.ndarray] | None = []
        budget = preload_bytes
        index = _OnlineEventIndices() if event_stream is not None else None
        reader = _Reader(path)
        for pk in reader:
            if index is not None and pk.get("stream_id") == event_stream and "events" in pk:
                index.add_events(pk["events"]["t"])
                continue
            if pk.get("stream_id") != stream_id or "frame" not in pk:
                continue
            fr = pk["frame"]
            begin, end = int(fr["exposure_begin_t"]), int(fr["exposure_end_t"])
            begins.append(begin)
            ends.append(end)
            if index is not None:
                index.add_frame(begin + (end - begin) // 2)
            if images is not None:
                img = _frame_to_grey(fr, resolution, str(path))
                budget -= img.nbytes
                if budget < 0:
                    images = None  # too many to keep: from now on, timestamps only (lazy images)
                else:
                    images.append(img)
        self.t_begin_us = np.asarray(begins, dtype=np.int64)
        self.t_us = np.asarray(ends, dtype=np.int64)
        self.exposure_us = self.t_us - self.t_begin_us
        self._images = images
        self.preloaded = images is not None
        self._lazy: tuple[int, Iterator[dict]] | None = None  # (index of the next frame, packet iterator)
        #: RLED event indices found in the same pass (None: a bound fell outside the look-back, compute later)
        self.event_indices = index.result() if index is not None else None

    @property
    def t_mid_us(self) -> np.ndarray:
        """Exposure midpoints (``begin + exposure // 2``), int64 µs: the RLED window centres."""
        return self.t_begin_us + self.exposure_us // 2

    def __len__(self) -> int:
        return int(self.t_us.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame {i} out of range (0..{n - 1})")
        if self._images is not None:
            return self._images[i]
        if self._lazy is None or self._lazy[0] > i:  # start over: frames are read forward only
            self._lazy = (0, iter(_Reader(self._path)))
        k, packets = self._lazy
        for pk in packets:
            if pk.get("stream_id") != self._stream or "frame" not in pk:
                continue
            k += 1
            if k - 1 == i:
                self._lazy = (k, packets)
                return _frame_to_grey(pk["frame"], self._resolution, str(self._path))
        self._lazy = None
        raise SourceError(f"{self._path}: frame {i} (exposure begin t={int(self.t_begin_us[i])} µs) could not be "
                          "read back")

    def close(self) -> None:
        self._images = None
        self._lazy = None


class Aedat4Source(SingleUse):
    """Replay an aedat4 recording as :class:`EventPacket` objects (unpaced; wrap with ``paced`` for real time).

    Args:
        path: the ``.aedat4`` file.
        chunk_events: events per packet (file packets are merged or split; equal-timestamp runs are never split).
        preload_frames_bytes: keep frame images in memory up to this many bytes, else read them on demand.

    Attributes:
        sensor_size: ``(width, height)`` of the event stream, from the file.
        frames: :class:`Aedat4Frames` (exposure-end timestamps) or ``None`` without a frame stream.
        event_indices: ``[n_frames, 2]`` RLED windows (±10 ms around each exposure midpoint) or ``None``.
        camera_name: e.g. ``"DAVIS346_00000002"`` (``""`` when the header does not say).
        audit: what was repaired (:class:`~livenight.checks.InputAudit`).

    Example:
        >>> with Aedat4Source("davis346.aedat4") as src:        # doctest: +SKIP
        ...     n = sum(len(p) for p in src)
    """

    is_live = False

    def __init__(self, path: str | os.PathLike, chunk_events: int = DEFAULT_CHUNK_EVENTS,
                 preload_frames_bytes: int = DEFAULT_PRELOAD_FRAMES_BYTES) -> None:
        self.path = Path(path)
        self.name = self.path.name
        if chunk_events <= 0:
            raise ValueError(f"chunk_events must be positive (got {chunk_events})")
        self.chunk_events = int(chunk_events)
        if not self.path.exists():
            raise SourceNotFoundError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise SourceError(f"{self.path}: is a directory, expected an .aedat4 file")
        table_pos, _ = _header(self.path)  # cheap checks first: a wrong file fails the same way with any reader
        size = self.path.stat().st_size
        self.truncated: str | None = None
        if table_pos >= size:
            self.truncated = f"its packet index should start at byte {table_pos} but the file has {size} bytes"
        self._closed = False
        self.frames: Aedat4Frames | None = None
        self._event_indices: np.ndarray | None = None
        self._event_indices_done = False
        info = _stream_info(self.path)
        first = _Reader(self.path)
        streams = first.streams()
        first.close()
        names = {i: info.get(i, {}).get("name") or f"stream{i}" for i in streams}
        self.streams = [names[i] for i in sorted(streams)]
        stream = _choose(streams, names, "events", "events")
        if stream is None:
            raise SourceError(f"{self.path}: no event stream in this aedat4 file (streams found: "
                              f"{', '.join(self.streams) or 'none'}); livenight needs events")
        self._stream = stream
        desc = streams[stream]
        if not desc.get("width") or not desc.get("height"):
            raise SourceError(f"{self.path}: event stream {names[stream]!r} has no resolution in its description")
        self.sensor_size = (int(desc["width"]), int(desc["height"]))
        self.camera_name = info.get(stream, {}).get("source", "")
        self.audit = InputAudit(str(self.path), "events and packets", "aedat4", self.sensor_size)
        frame_stream = _choose(streams, names, "frames", "frame")
        if frame_stream is not None:
            fdesc = streams[frame_stream]
            fres = (int(fdesc["width"]), int(fdesc["height"])) if fdesc.get("width") else self.sensor_size
            frames = Aedat4Frames(self.path, frame_stream, fres, preload_frames_bytes, event_stream=stream)
            if len(frames):
                self.frames = frames
                if frames.event_indices is not None:
                    self._event_indices, self._event_indices_done = frames.event_indices, True

    @classmethod
    def from_uri(cls, uri: str, **options) -> "Aedat4Source":
        return cls(uri, **options)

    # ---------------------------------------------------------------- RLED event indices
    @property
    def event_indices(self) -> np.ndarray | None:
        """``[n_frames, 2]`` half-open event-index windows, ±10 ms around each exposure midpoint (lazy)."""
        if self.frames is None:
            return None
        if not self._event_indices_done:
            self._event_indices = self._compute_event_indices()
            self._event_indices_done = True
        return self._event_indices

    def _compute_event_indices(self) -> np.ndarray:
        mid = self.frames.t_mid_us
        bounds = np.concatenate([mid - RLED_HALF_WINDOW_US, mid + RLED_HALF_WINDOW_US])
        order = np.argsort(bounds, kind="stable")
        sorted_bounds = bounds[order]
        counts = np.empty_like(sorted_bounds)
        done = 0  # events in the batches already seen
        k = 0  # first bound not yet resolved
        for ev in self._events(InputAudit(str(self.path), "events and packets", "aedat4", self.sensor_size)):
            t = ev["t"]
            # a bound <= this batch's last timestamp is final: later events are >= it, so not "< bound"
            j = int(np.searchsorted(sorted_bounds, t[-1], side="right"))
            if j > k:
                counts[k:j] = done + np.searchsorted(t, sorted_bounds[k:j], side="left")
                k = j
            done += int(t.shape[0])
        counts[k:] = done
        out = np.empty_like(counts)
        out[order] = counts
        n = mid.shape[0]
        return np.stack([out[:n], out[n:]], axis=1).astype(np.int64)

    # ---------------------------------------------------------------- events
    def _events(self, audit: InputAudit, reader: _Reader | None = None) -> Iterator[np.ndarray]:
        """The event stream's packets as checked, sorted :data:`EVENT_DTYPE` arrays (see the module doc).

        Each packet is held back until the next one arrived, so a time spike that starts at the end of one
        packet and returns in the next is still seen whole.
        """
        width, height = self.sensor_size
        reader = reader or _Reader(self.path, audit)
        held: np.ndarray | None = None  # EVENT_DTYPE, not yet judged for spikes
        held_at = 0  # stream index of held[0]
        last_t: int | None = None  # last released timestamp
        seen = 0
        for pk in reader:
            if self._closed:
                return
            audit.items += 1
            if pk.get("stream_id") != self._stream or "events" not in pk:
                continue
            raw = pk["events"]
            n = int(raw.shape[0])
            audit.items += n
            if n == 0:
                continue
            inside = (raw["x"] < width) & (raw["y"] < height)
            t = raw["t"].astype(np.int64)
            wild = int(np.count_nonzero(np.abs(np.diff(t)) > SPIKE_US))
            if 2 * int(np.count_nonzero(~inside)) > n or wild > max(2, n // 10):
                # a packet that decompressed into noise (no LZ4 error, but coordinates and times all over)
                audit.add("packets", 1, f"packet {reader.packets - 1}")
                seen += n
                continue
            if not inside.all():
                bad = np.flatnonzero(~inside)
                audit.add("outside", int(bad.shape[0]), f"event {seen + int(bad[0])}")
                raw, t = raw[inside], t[inside]
            ev = np.empty(raw.shape[0], dtype=EVENT_DTYPE)
            ev["t"] = t
            ev["x"] = raw["x"]
            ev["y"] = raw["y"]
            ev["p"] = raw["p"]
            audit.events += int(ev.shape[0])
            if held is not None:
                out, last_t = release_checked(audit, held, ev["t"], last_t, lambda i, at=held_at: f"event {at + i}")
                if out is not None:
                    yield out
            held, held_at = ev, seen
            seen += n
        if held is not None and not self._closed:
            out, last_t = release_checked(audit, held, np.empty(0, np.int64), last_t,
                                          lambda i, at=held_at: f"event {at + i}")
            if out is not None:
                yield out


    def _packets(self) -> Iterator[EventPacket]:
        what = str(self.path)
        audit = self.audit
        reader = _Reader(self.path, audit)
        parts: list[np.ndarray] = []
        size = 0
        t_start: int | None = None
        last_t: int | None = None
        n_events = 0
        failed = False
        try:
            for ev in self._events(audit, reader):
                last_t = int(ev["t"][-1])
                n_events += int(ev.shape[0])
                parts.append(ev)
                size += int(ev.shape[0])
                if size < self.chunk_events:
                    continue
                chunk = parts[0] if len(parts) == 1 else np.concatenate(parts)
                while chunk.shape[0] >= self.chunk_events:
                    # cut after the run holding the chunk_events-th event; a run reaching the end of what was read
                    # may continue in the next batch, so it waits
                    t = chunk["t"]
                    cut = int(np.searchsorted(t, t[self.chunk_events - 1], side="right"))
                    if cut >= t.shape[0]:
                        break
                    out, chunk = chunk[:cut], chunk[cut:]
                    if t_start is None:
                        t_start = int(out["t"][0])
                    t_end = int(chunk["t"][0])
                    yield EventPacket(out, t_start, t_end, time.monotonic(), self.sensor_size)
                    t_start = t_end
                parts, size = [chunk], int(chunk.shape[0])
            if self._closed:
                return
            failed = True
            if reader.corrupt is not None:  # the stream lost its packet boundaries: the rest cannot be read
                raise SourceError(f"{what}: corrupt aedat4 file: {reader.corrupt}; replayed the {n_events} events "
                                  f"before it ({audit.summary()})")
            cut_short = reader.truncated is not None or self.truncated is not None
            if not cut_short:  # a cut file was judged chunk by chunk; its end is the truncation error below
                audit.check(final=True)
                if n_events == 0:
                    audit.require_events()
            failed = False
            if size:
                rest = parts[0] if len(parts) == 1 else np.concatenate(parts)
                if t_start is None:
                    t_start = int(rest["t"][0])
                yield EventPacket(rest, t_start, int(rest["t"][-1]) + 1, time.monotonic(), self.sensor_size)
            if cut_short:
                failed = True
                last = f", the last at t={last_t} µs" if last_t is not None else ""
                if self.truncated is not None:
                    what_happened = f"truncated aedat4 file ({self.truncated})"
                else:  # the file is whole, so a packet announced more bytes than it has: a damaged size prefix
                    what_happened = (f"corrupt aedat4 file: packet {reader.packets} announces more data than the "
                                     f"file holds ({reader.truncated})")
                raise SourceError(f"{what}: {what_happened}; replayed the {n_events} events that could be "
                                  f"decoded{last}; whatever followed is missing")
        except SourceError:
            failed = True
            raise
        finally:  # also when the consumer stops early (--max-frames): say what was repaired so far
            if not failed:
                audit.warn(stacklevel=3)

    def close(self) -> None:
        self._stop_iteration()  # closes the packet generator: its repair warning comes now, not at GC
        if self.frames is not None:
            self.frames.close()
