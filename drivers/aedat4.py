"""Replay of iniVation AEDAT 4.0 recordings (``.aedat4``) through ``dv.io.MonoCameraRecording``.

Why it is like this:

* **Streaming.** Events are read batch by batch with the sequential reader (one dv packet at a time) and
  regrouped into packets of ``chunk_events`` (more only when a run of equal timestamps straddles the cut); a
  multi-GB file is never loaded whole.
  Packets tile time like :class:`~livenight.drivers.rled.RledSource`: packet k covers ``[t_start_us, t_end_us)``,
  ``t_end_us`` is the first timestamp of packet k+1, and a run of equal timestamps is never split.
* **Any iniVation camera.** Resolution, camera name and stream names come from the file; the event stream is
  the one called ``events`` or else the first stream of event type. Nothing is specific to the DAVIS346.
* **Frames = exposure end.** dv-processing reports ``Frame.timestamp`` as the *exposure begin*; the project's
  reference-frame convention (RLED image ``timestamp``) is the *exposure end*, so ``frames.t_us = timestamp +
  exposure``. ``frames.t_begin_us`` and ``frames.exposure_us`` keep the raw values. Frames are scanned once when
  the file is opened (the frame stream only). Their images are kept in memory while they fit in
  ``preload_frames_bytes`` (default 256 MiB, i.e. ~2900 DAVIS346 frames, about two minutes at 25 fps); beyond
  that only the timestamps are kept and each image is fetched on demand with ``getFramesTimeRange``.
* **RLED event indices.** ``event_indices[i] = [searchsorted(t, mid_i − 10 ms), searchsorted(t, mid_i + 10 ms))``
  with ``mid_i = begin_i + exposure_i // 2`` (the exposure midpoint) and ``t`` all event timestamps (side
  ``"left"``, so each window is half-open in time as well). It is computed on first access, by one extra pass
  over the event timestamps that keeps only the per-frame counts (memory O(frames), not O(events)); ``None``
  when the file has no frames.
* **Truncated files.** dv-processing refuses to open an aedat4 whose trailing packet index (the "FileDataTable")
  is missing or cut. Such a file is replayed from a temporary copy whose header says "no index", which makes
  dv rebuild the index by scanning the packets that are complete; every event decoded is yielded, then
  iteration raises a :class:`SourceError` that says the file is truncated. The copy costs one file's worth of
  disk in the temporary directory while the source is open.

Known limit: a file whose index is present but *corrupted* (not cut) can make dv-processing 2.0.4 hang inside
``MonoCameraRecording`` while opening; this module cannot interrupt that.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from livenight.errors import SourceError, SourceNotFoundError
from livenight.events import EventPacket

from ._dv import dv_module, exposure_us, frame_to_grey, store_to_events
from .base import SingleUse

MAGIC = b"#!AER-DAT4.0\r\n"
DEFAULT_CHUNK_EVENTS = 1 << 16
DEFAULT_PRELOAD_FRAMES_BYTES = 256 << 20
RLED_HALF_WINDOW_US = 10_000


def _header(path: Path) -> tuple[int, int | None]:
    """Parse the AEDAT 4.0 header; return ``(data_table_position, file offset of that field or None)``.

    The header is ``MAGIC``, an int32 size and an ``IOHeader`` flatbuffer (fields: compression int32,
    dataTablePosition int64 default −1, infoNode string). Only the data-table position is needed: it says where
    dv's packet index starts, and patching it to −1 makes dv scan the packets instead.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
        if head != MAGIC:
            if head.startswith(b"#!AER-DAT"):
                version = head[len(b"#!AER-DAT"):].split(b"\r")[0].decode("ascii", "replace")
                raise SourceError(f"{path}: AEDAT {version} file; only AEDAT 4.0 (.aedat4) is supported "
                                  "(convert it with DV or dv-processing)")
            raise SourceError(f"{path}: not an aedat4 file (expected it to start with {MAGIC!r}, got {head!r})")
        raw = f.read(4)
        if len(raw) < 4:
            raise SourceError(f"{path}: truncated aedat4 file: the header ends after {size} bytes")
        (n,) = struct.unpack("<i", raw)
        buf = f.read(n) if 0 < n < (1 << 24) else b""
    base = len(MAGIC) + 4
    if len(buf) != n or n < 8:
        raise SourceError(f"{path}: truncated or corrupt aedat4 header ({n} header bytes announced, file has "
                          f"{size} bytes)")
    try:
        (root,) = struct.unpack_from("<I", buf, 0)
        (vt_rel,) = struct.unpack_from("<i", buf, root)
        vtable = root - vt_rel
        (vt_len,) = struct.unpack_from("<H", buf, vtable)
        n_fields = (vt_len - 4) // 2
        if n_fields < 2:
            return -1, None
        (field_off,) = struct.unpack_from("<H", buf, vtable + 4 + 2 * 1)
        if field_off == 0:
            return -1, None
        (pos,) = struct.unpack_from("<q", buf, root + field_off)
    except struct.error as e:
        raise SourceError(f"{path}: corrupt aedat4 header ({e})") from e
    return int(pos), base + root + field_off


def _choose(names: list[str], preferred: str, is_kind) -> str | None:
    if preferred in names and is_kind(preferred):
        return preferred
    return next((n for n in names if is_kind(n)), None)


class Aedat4Frames:
    """The APS frames of an aedat4 file as :class:`~livenight.drivers.base.ReferenceFrames`.

    ``t_us`` is the exposure **end** (``Frame.timestamp + exposure``), int64 µs; ``t_begin_us`` and
    ``exposure_us`` are dv's raw values. ``frames[i]`` is (H, W) uint8 (colour frames converted to grey).
    """

    def __init__(self, recording_path: str, stream: str, resolution: tuple[int, int], display: Path,
                 preload_bytes: int) -> None:
        dv = dv_module("reading aedat4 frames")
        self._display = display
        self._stream = stream
        self._resolution = resolution
        self._rec = dv.io.MonoCameraRecording(recording_path)
        self._lock = threading.Lock()
        begins: list[int] = []
        exposures: list[int] = []
        images: list[np.ndarray] | None = []
        budget = preload_bytes
        while True:
            try:
                fr = self._rec.getNextFrame(stream)
            except RuntimeError as e:
                raise SourceError(f"{display}: corrupt frame data after {len(begins)} frames ({e})") from e
            if fr is None:
                break
            begins.append(int(fr.timestamp))
            exposures.append(exposure_us(fr))
            if images is not None:
                img = frame_to_grey(fr, resolution)
                budget -= img.nbytes
                if budget < 0:
                    images = None  # too many to keep: from now on, timestamps only (lazy images)
                else:
                    images.append(img)
        self.t_begin_us = np.asarray(begins, dtype=np.int64)
        self.exposure_us = np.asarray(exposures, dtype=np.int64)
        self.t_us = self.t_begin_us + self.exposure_us
        self._images = images
        self.preloaded = images is not None

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
        begin, end = int(self.t_begin_us[i]), int(self.t_us[i])
        with self._lock:
            # dv indexes frame packets by a time inside the exposure, not always by the begin: ask for the whole
            # exposure and pick the frame whose begin matches
            found = self._rec.getFramesTimeRange(begin, end + 1, self._stream) or []
        for fr in found:
            if int(fr.timestamp) == begin:
                return frame_to_grey(fr, self._resolution)
        raise SourceError(f"{self._display}: frame {i} (exposure begin t={begin} µs) could not be read back")

    def close(self) -> None:
        self._rec = None
        self._images = None


class Aedat4Source(SingleUse):
    """Replay an aedat4 recording as :class:`EventPacket` objects (unpaced; wrap with ``paced`` for real time).

    Args:
        path: the ``.aedat4`` file.
        chunk_events: events per packet (dv batches are merged or split; equal-timestamp runs are never split).
        preload_frames_bytes: keep frame images in memory up to this many bytes, else read them on demand.

    Attributes:
        sensor_size: ``(width, height)`` of the event stream, from the file.
        frames: :class:`Aedat4Frames` (exposure-end timestamps) or ``None`` without a frame stream.
        event_indices: ``[n_frames, 2]`` RLED windows (±10 ms around each exposure midpoint) or ``None``.
        camera_name: e.g. ``"DAVIS346_00000002"``. ``truncated``: the reason when the file is cut short.

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
        header = _header(self.path)  # cheap checks first: a wrong file fails the same way with or without dv
        dv = dv_module("reading .aedat4 recordings")
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.truncated: str | None = None
        self._closed = False
        self.frames: Aedat4Frames | None = None
        self._event_indices: np.ndarray | None = None
        self._event_indices_done = False
        try:
            self._open(dv, header, preload_frames_bytes)
        except BaseException:
            self.close()
            raise

    def _open(self, dv, header: tuple[int, int | None], preload_frames_bytes: int) -> None:
        table_pos, table_field = header
        size = self.path.stat().st_size
        self._dv_path = str(self.path)
        rec = None
        if table_pos >= size:
            self.truncated = f"its packet index should start at byte {table_pos} but the file has {size} bytes"
        else:
            try:
                rec = dv.io.MonoCameraRecording(self._dv_path)
            except RuntimeError as e:
                msg = str(e)
                if "truncated" not in msg and "FileDataTable" not in msg:
                    raise SourceError(f"{self.path}: dv-processing cannot read this aedat4 file ({msg})") from e
                self.truncated = f"its packet index is cut short ({msg})"
        if rec is None:
            if table_field is None:
                raise SourceError(f"{self.path}: truncated aedat4 file that dv-processing cannot scan "
                                  f"({self.truncated})")
            self._dv_path = self._unindexed_copy(table_field)
            try:
                rec = dv.io.MonoCameraRecording(self._dv_path)
            except RuntimeError as e:
                raise SourceError(f"{self.path}: truncated aedat4 file ({self.truncated}) that cannot be read "
                                  f"either without its index ({e})") from e
        self._rec = rec
        names = list(rec.getStreamNames())
        self.streams = names
        stream = _choose(names, "events", rec.isStreamOfEventType)
        if stream is None:
            raise SourceError(f"{self.path}: no event stream in this aedat4 file (streams found: "
                              f"{', '.join(names) or 'none'}); livenight needs events")
        self._stream = stream
        res = rec.getEventResolution(stream)
        if res is None:
            raise SourceError(f"{self.path}: event stream {stream!r} has no resolution in its metadata")
        self.sensor_size = (int(res[0]), int(res[1]))
        self.camera_name = str(rec.getCameraName())
        frame_stream = _choose(names, "frames", rec.isStreamOfFrameType)
        if frame_stream is not None:
            fres = rec.getFrameResolution(frame_stream)
            fres = (int(fres[0]), int(fres[1])) if fres is not None else self.sensor_size
            frames = Aedat4Frames(self._dv_path, frame_stream, fres, self.path, preload_frames_bytes)
            if len(frames):
                self.frames = frames
            else:
                frames.close()

    def _unindexed_copy(self, table_field: int) -> str:
        """Copy the file to a temporary directory with ``dataTablePosition = −1`` (dv then scans the packets)."""
        self._tmpdir = tempfile.TemporaryDirectory(prefix="livenight-aedat4-")
        copy = Path(self._tmpdir.name) / self.path.name
        shutil.copyfile(self.path, copy)
        with open(copy, "r+b") as f:
            f.seek(table_field)
            f.write(struct.pack("<q", -1))
        return str(copy)

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
        for t in self._timestamps():
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

    def _timestamps(self) -> Iterator[np.ndarray]:
        """Event timestamps batch by batch, from a second reader (iteration is not disturbed)."""
        dv = dv_module("reading .aedat4 recordings")
        rec = dv.io.MonoCameraRecording(self._dv_path)
        for store in self._batches(rec):
            t = store.timestamps()
            if t.shape[0]:
                yield t

    # ---------------------------------------------------------------- events
    def _batches(self, rec) -> Iterator:
        n = 0
        idle = 0
        while True:
            try:
                store = rec.getNextEventBatch(self._stream)
            except RuntimeError as e:
                raise SourceError(f"{self.path}: corrupt event data after {n} events ({e})") from e
            if store is None:
                if not rec.isRunning(self._stream):
                    return
                idle += 1  # not at EOF, yet nothing: never seen with dv 2.0.4, guarded against spinning forever
                if idle > 10_000:
                    raise SourceError(f"{self.path}: dv-processing returns no events but has not reached the end of "
                                      f"the event stream (after {n} events)")
                continue
            idle = 0
            n += len(store)
            yield store

    def _packets(self) -> Iterator[EventPacket]:
        what = str(self.path)
        parts: list[np.ndarray] = []
        size = 0
        t_start: int | None = None
        last_t: int | None = None
        n_events = 0
        for store in self._batches(self._rec):
            if self._closed:
                return
            ev = store_to_events(store, self.sensor_size, what)
            if ev.size == 0:
                continue
            if last_t is not None and int(ev["t"][0]) < last_t:
                raise SourceError(f"{what}: timestamps not sorted at event index {n_events}: "
                                  f"t={int(ev['t'][0])} µs after t={last_t} µs")
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
        if size:
            rest = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if t_start is None:
                t_start = int(rest["t"][0])
            yield EventPacket(rest, t_start, int(rest["t"][-1]) + 1, time.monotonic(), self.sensor_size)
        if self.truncated is not None:
            last = f", the last at t={last_t} µs" if last_t is not None else ""
            raise SourceError(f"{what}: truncated aedat4 file ({self.truncated}); replayed the {n_events} events "
                              f"that could be decoded{last}; whatever followed is missing")

    def close(self) -> None:
        self._closed = True
        self._rec = None
        if self.frames is not None:
            self.frames.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

