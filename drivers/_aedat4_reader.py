"""The low-level side of the ``.aedat4`` reader (:mod:`.aedat4`): the ``aedat`` package's packets with its Rust
panics kept off stderr, the file header and stream table, frames to grey images, and the one-pass RLED event
indices. See :mod:`.aedat4` for why the reader is built this way."""

from __future__ import annotations

import bisect
import os
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import numpy as np

from livenight._optional import require
from livenight.checks import InputAudit
from livenight.errors import SourceError

MAGIC = b"#!AER-DAT4.0\r\n"
DEFAULT_CHUNK_EVENTS = 1 << 16
DEFAULT_PRELOAD_FRAMES_BYTES = 256 << 20
RLED_HALF_WINDOW_US = 10_000
#: consecutive damaged packets after which the rest of the file is taken as unreadable
_MAX_CONSECUTIVE_ERRORS = 64
_TRUNCATED = ("failed to fill whole buffer", "unexpected end of file", "UnexpectedEof")


_DECODE_ERRORS = (RuntimeError, ValueError, OSError, OverflowError)


def _aedat():
    return require("aedat", "reading .aedat4 recordings")


def _is_panic(e: BaseException) -> bool:
    """A Rust panic inside ``aedat`` (pyo3's ``PanicException`` derives from BaseException): damaged data."""
    return type(e).__name__ == "PanicException"


_PANIC_LINE = re.compile(r"^(thread '.*'.* panicked at |stack backtrace:|note: |\s+\d+: |\s+at |assertion failed|\s*$)")


class _Stderr:
    """Calls into ``aedat`` with file descriptor 2 diverted to a temporary file: a Rust panic (damaged data)
    writes its message and backtrace there, which would break livenight's one-line errors. After each call
    whatever else was written meanwhile (by other threads) is passed on to the real stderr; panic text is not."""

    def __init__(self) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryFile()
        self._fd = self._tmp.fileno()

    def call(self, fn, *args):
        import sys

        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(self._fd, 2)
        panicked = False
        try:
            return fn(*args)
        except BaseException as e:
            panicked = _is_panic(e)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            size = os.lseek(self._fd, 0, os.SEEK_CUR)
            if size:
                os.lseek(self._fd, 0, os.SEEK_SET)
                text = os.read(self._fd, size).decode("utf-8", "replace")
                os.lseek(self._fd, 0, os.SEEK_SET)
                os.ftruncate(self._fd, 0)
                if panicked:
                    text = "".join(line for line in text.splitlines(True) if not _PANIC_LINE.match(line))
                if text:
                    os.write(2, text.encode())

    def close(self) -> None:
        self._tmp.close()


def _header(path: Path) -> tuple[int, int | None]:
    """Parse the AEDAT 4.0 header; return ``(data_table_position, file offset of that field or None)``.

    The header is ``MAGIC``, an int32 size and an ``IOHeader`` flatbuffer (fields: compression int32,
    dataTablePosition int64 default −1, infoNode string). Only the data-table position is needed: where the
    packet index starts; a position beyond the end of the file means the file was cut.
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


def _stream_info(path: Path) -> dict[int, dict[str, str]]:
    """Stream id -> ``{"name": originalOutputName, "source": camera}`` from the header's XML (best effort)."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    m = re.search(rb"<dv[ >].*?</dv>", head, re.S)
    if m is None:
        return {}
    try:
        root = ET.fromstring(m.group(0).decode("utf-8", "replace"))
    except ET.ParseError:
        return {}
    out: dict[int, dict[str, str]] = {}
    for node in root.iter("node"):
        if node.get("name", "").isdigit() and "/outInfo/" in node.get("path", ""):
            attrs = {a.get("key"): (a.text or "") for a in node.iter("attr")}
            out[int(node.get("name"))] = {"name": attrs.get("originalOutputName", ""),
                                          "source": attrs.get("source", "")}
    return out


def _choose(streams: dict[int, dict], names: dict[int, str], preferred: str, kind: str) -> int | None:
    ids = [i for i in sorted(streams) if streams[i].get("type") == kind]
    return next((i for i in ids if names.get(i) == preferred), ids[0] if ids else None)


def _frame_to_grey(frame: dict, sensor_size: tuple[int, int], what: str) -> np.ndarray:
    """An ``aedat`` frame dict as (H, W) uint8 on the full sensor (colour: BT.601 luma; 16 bit: top byte; a
    region of interest is placed at its offset on a black canvas)."""
    img = np.asarray(frame["pixels"])
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        else:  # aedat gives RGB(A)
            r, g, b = (img[:, :, k].astype(np.float32) for k in range(3))
            if img.dtype == np.uint16:
                r, g, b = r / 257.0, g / 257.0, b / 257.0
            img = np.clip(np.rint(0.299 * r + 0.587 * g + 0.114 * b), 0, 255).astype(np.uint8)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise SourceError(f"{what}: frame at t={frame.get('t')} µs has dtype {img.dtype}, expected uint8 or uint16")
    width, height = sensor_size
    if img.shape == (height, width):
        return np.ascontiguousarray(img)
    x0, y0 = int(frame.get("offset_x", 0)), int(frame.get("offset_y", 0))
    h, w = img.shape
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise SourceError(f"{what}: frame at t={frame.get('t')} µs: a {w}x{h} image at ({x0}, {y0}) does not fit "
                          f"the {width}x{height} sensor")
    canvas = np.zeros((height, width), dtype=np.uint8)
    canvas[y0:y0 + h, x0:x0 + w] = img
    return canvas


class _Reader:
    """One pass over the packets of a file with ``aedat``: damaged packets are skipped and counted, a cut file
    ends the pass (``truncated`` says why), and an endless run of errors ends it too."""

    def __init__(self, path: Path, audit: InputAudit | None = None) -> None:
        self.path = path
        self.audit = audit
        self.truncated: str | None = None
        self.corrupt: str | None = None
        self.packets = 0
        aedat = _aedat()
        self._stderr = _Stderr()
        try:
            self._dec = self._stderr.call(aedat.Decoder, str(path))
        except BaseException as e:
            self._stderr.close()
            if not isinstance(e, _DECODE_ERRORS) and not _is_panic(e):
                raise
            raise SourceError(f"{path}: corrupt aedat4 file: cannot read its description ({e})") from e

    def streams(self) -> dict[int, dict]:
        return self._dec.id_to_stream()

    def close(self) -> None:
        self._dec = None
        self._stderr.close()

    def __iter__(self) -> Iterator[dict]:
        try:
            yield from self._packets()
        finally:
            self.close()

    def _packets(self) -> Iterator[dict]:
        errors = 0
        while True:
            try:
                pk = self._stderr.call(next, self._dec)
            except StopIteration:
                return
            except BaseException as e:  # RuntimeError for damaged data; a Rust panic (BaseException) likewise
                if not isinstance(e, _DECODE_ERRORS) and not _is_panic(e):
                    raise
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                if any(k in msg for k in _TRUNCATED):
                    self.truncated = f"the data ends inside a packet ({msg})"
                    return
                errors += 1
                if self.audit is not None:
                    self.audit.packets += 1
                    self.audit.add("packets", 1, f"packet {self.packets}")
                if errors > _MAX_CONSECUTIVE_ERRORS:
                    self.corrupt = f"{errors} damaged packets in a row after packet {self.packets} (last: {msg})"
                    return
                continue
            errors = 0
            self.packets += 1
            if self.audit is not None:
                self.audit.packets += 1
            yield pk


class _OnlineEventIndices:
    """RLED event indices in the same pass as the frames: ``[searchsorted(t, mid − 10 ms),
    searchsorted(t, mid + 10 ms))`` for each frame, with ``t`` all event timestamps, without keeping them all.

    A bound later than every event read so far waits until events pass it; a bound already passed is looked up
    in the event packets of the last ``keep_us`` (frames are written shortly after their exposure). A bound
    older than that makes :meth:`result` return ``None`` (the caller then makes a second pass).
    """

    def __init__(self, keep_us: int = 2_000_000) -> None:
        self.keep_us = keep_us
        self._recent: list[tuple[int, np.ndarray]] = []  # (index of the packet's first event, its timestamps)
        self._done = 0  # events seen
        self._pending: list[tuple[int, int]] = []  # (bound, slot), sorted
        self._counts: list[int] = []
        self._failed = False

    def add_events(self, t: np.ndarray) -> None:
        if t.shape[0] == 0:
            return
        t = t.astype(np.int64)
        last = int(t[-1])
        k = bisect.bisect_right(self._pending, (last, 1 << 62))
        for bound, slot in self._pending[:k]:
            self._counts[slot] = self._done + int(np.searchsorted(t, bound, side="left"))
        del self._pending[:k]
        self._recent.append((self._done, t))
        self._done += int(t.shape[0])
        while len(self._recent) > 1 and int(self._recent[1][1][-1]) < last - self.keep_us:
            self._recent.pop(0)

    def add_frame(self, mid_us: int) -> None:
        for bound in (mid_us - RLED_HALF_WINDOW_US, mid_us + RLED_HALF_WINDOW_US):
            slot = len(self._counts)
            self._counts.append(-1)
            if not self._recent or bound > int(self._recent[-1][1][-1]):
                bisect.insort(self._pending, (bound, slot))
                continue
            k = next(k for k, (_, t) in enumerate(self._recent) if int(t[-1]) >= bound)
            start, t = self._recent[k]
            if k == 0 and start > 0 and int(t[0]) >= bound:
                self._failed = True  # earlier packets (no longer kept) may hold events >= bound
            self._counts[slot] = start + int(np.searchsorted(t, bound, side="left"))

    def result(self) -> np.ndarray | None:
        if self._failed:
            return None
        for _, slot in self._pending:
            self._counts[slot] = self._done
        return np.asarray(self._counts, dtype=np.int64).reshape(-1, 2)
