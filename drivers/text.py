"""rpg_e2vid text events (``.txt``, ``.zip``) and the Event Camera Dataset (ECD) folder layout.

Format (rpg_e2vid README): an optional first line ``width height``, then one event per line ``t x y p`` with
``t`` in seconds (float) and ``p`` 0/1 (−1/+1 is accepted too); a ``.zip`` holds one such ``.txt``. The ECD
layout (Mueggler et al. 2017) has ``events.txt`` without the size line, with ``images.txt`` (``t path`` per line,
t in seconds) and ``images/*.png`` beside it: those images become the reference frames, so ``--save-gt`` and
``livenight eval`` work on ECD sequences; the sensor size is then the images' size.

Lines are parsed in blocks with :func:`numpy.loadtxt` (C speed); a block holding malformed lines is re-parsed line
by line and the bad lines are counted (``livenight.checks``), so one damaged line costs itself, and a file that is
mostly not ``t x y p`` is refused with one line naming it.
"""

from __future__ import annotations

import io
import itertools
import os
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from livenight.errors import SourceError, SourceNotFoundError
from livenight.events import EventPacket, check_sensor_size

from ._columns import DEFAULT_CHUNK_EVENTS, Columns, ColumnSourceMixin, ColumnStream, infer_sensor_size, to_us
from .base import SingleUse

#: lines parsed per block
BLOCK_LINES = 1 << 17


def _parse_block(lines: list[str], first_line: int, stream: ColumnStream | None) -> np.ndarray:
    """``(n, 4)`` float64 rows of a block of ``t x y p`` lines; malformed lines are dropped and counted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": a block of blank lines
            rows = np.loadtxt(lines, dtype=np.float64, ndmin=2, comments="#")
        if rows.shape[0] == 0 or rows.shape[1] == 4:
            return rows.reshape(-1, 4)
    except ValueError:
        pass
    good, first_bad, n_bad = [], None, 0
    for i, line in enumerate(lines):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            if len(fields) != 4:
                raise ValueError
            good.append([float(v) for v in fields])
        except ValueError:
            n_bad += 1
            first_bad = first_line + i if first_bad is None else first_bad
    if stream is not None and n_bad:
        stream.audit.items += n_bad
        stream.audit.add("malformed", n_bad, f"line {first_bad}")
    return np.asarray(good, dtype=np.float64).reshape(-1, 4)


class TextFrames:
    """ECD ``images.txt`` + ``images/*.png`` as :class:`~livenight.drivers.base.ReferenceFrames` (read on demand)."""

    def __init__(self, images_txt: Path) -> None:
        self._root = images_txt.parent
        t, paths = [], []
        with open(images_txt) as f:
            for n, line in enumerate(f, start=1):
                fields = line.split()
                if not fields or line.startswith("#"):
                    continue
                try:
                    t.append(float(fields[0]))
                    paths.append(fields[1])
                except (ValueError, IndexError):
                    raise SourceError(f"{images_txt}: line {n} is {line.strip()!r}, expected 't path' "
                                      "(t in seconds, then the image file)") from None
        self.t_us = to_us(np.asarray(t, np.float64), 1e6).astype(np.int64)
        self._paths = paths
        if np.any(np.diff(self.t_us) < 0):
            i = int(np.flatnonzero(np.diff(self.t_us) < 0)[0]) + 1
            raise SourceError(f"{images_txt}: image timestamps go backwards at line {i + 1}")

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i: int) -> np.ndarray:
        from PIL import Image

        path = self._root / self._paths[i]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"))
        except (OSError, ValueError) as e:
            raise SourceError(f"{path}: cannot read reference image {i} ({e})") from e


class TextSource(ColumnSourceMixin, SingleUse):
    """Replay rpg_e2vid text events (``.txt`` / ``.zip``) as :class:`EventPacket` objects (unpaced).

    Args:
        path: the ``.txt`` or ``.zip`` file.
        sensor_size: ``(width, height)`` when the file has no size line and no images beside it.
        chunk_events: events per packet.

    Attributes:
        frames: :class:`TextFrames` for the ECD layout (``images.txt`` beside the events), else ``None``.
        audit: what was repaired (:class:`~livenight.checks.InputAudit`).

    Example:
        >>> with TextSource("shapes_6dof/events.txt") as src:        # doctest: +SKIP
        ...     n = sum(len(p) for p in src)
    """

    is_live = False
    event_indices = None

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int] | None = None,
                 chunk_events: int = DEFAULT_CHUNK_EVENTS) -> None:
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.exists():
            raise SourceNotFoundError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise SourceError(f"{self.path}: is a directory, expected an rpg_e2vid .txt or .zip file")
        self._zip: zipfile.ZipFile | None = None
        if self.path.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as e:
                raise SourceError(f"{self.path}: not a zip file ({e}); expected an rpg_e2vid .zip of one .txt") from e
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
            txt = [n for n in names if n.lower().endswith(".txt")] or names
            if not txt:
                raise SourceError(f"{self.path}: the zip file is empty; expected one .txt of events")
            self._member = txt[0]
        images_txt = self.path.with_name("images.txt")
        self.frames = TextFrames(images_txt) if self._zip is None and images_txt.is_file() else None
        header = self._header()
        self._skip = 1 if header is not None else 0  # the size line
        if sensor_size is not None:
            self.sensor_size = check_sensor_size(sensor_size, "sensor_size")
        elif header is not None:
            self.sensor_size = header
        elif self.frames is not None and len(self.frames):
            h, w = self.frames[0].shape[:2]
            self.sensor_size = (int(w), int(h))
        else:
            self.sensor_size = self._scan_sensor_size()
        self.chunk_events = int(chunk_events)
        self._stream: ColumnStream | None = None

    @classmethod
    def from_uri(cls, uri: str, **options) -> "TextSource":
        return cls(uri, **options)

    def _open_text(self) -> io.TextIOBase:
        if self._zip is not None:
            return io.TextIOWrapper(self._zip.open(self._member), encoding="utf-8", errors="replace")
        return open(self.path, encoding="utf-8", errors="replace")

    def _header(self) -> tuple[int, int] | None:
        """``(width, height)`` from a two-number first line; None when the first line is already an event."""
        with self._open_text() as f:
            first = ""
            for line in f:
                if line.strip() and not line.lstrip().startswith("#"):
                    first = line
                    break
        if "\ufffd" in first or "\x00" in first:
            raise SourceError(f"{self.path}: not a text file (binary data in the first line); expected rpg_e2vid "
                              "text events ('width height', then 't x y p' lines)")
        fields = first.split()
        if len(fields) == 2:
            try:
                return check_sensor_size((int(fields[0]), int(fields[1])), f"{self.path}: first line (width height)")
            except ValueError:
                raise SourceError(f"{self.path}: first line is {first.strip()!r}, expected 'width height' or an "
                                  "event 't x y p'") from None
        if len(fields) == 4:
            return None
        raise SourceError(f"{self.path}: first line is {first.strip()!r}, expected 'width height' or an event "
                          "'t x y p' (t in seconds); is this an rpg_e2vid text file?")

    def _blocks(self, stream: ColumnStream | None) -> Iterator[tuple[int, np.ndarray]]:
        with self._open_text() as f:
            lines = iter(f)
            skipped = 0
            if self._skip:
                for line in lines:  # the size line (after comments / blank lines)
                    skipped += 1
                    if line.strip() and not line.lstrip().startswith("#"):
                        break
            n = skipped + 1
            while True:
                if stream is not None and stream.closed:
                    return
                block = list(itertools.islice(lines, BLOCK_LINES))
                if not block:
                    return
                yield n, _parse_block(block, n, stream)
                n += len(block)

    def _scan_sensor_size(self) -> tuple[int, int]:
        max_x = max_y = -1
        for _, rows in self._blocks(None):
            if rows.shape[0]:
                ok = np.isfinite(rows[:, 1]) & np.isfinite(rows[:, 2])
                if ok.any():
                    max_x = max(max_x, int(rows[ok, 1].max()))
                    max_y = max(max_y, int(rows[ok, 2].max()))
        return infer_sensor_size(max_x, max_y, str(self.path))

    def _packets(self) -> Iterator[EventPacket]:
        self._stream = stream = ColumnStream(str(self.path), "rpg_e2vid text (t x y p)", self.sensor_size,
                                             self.chunk_events, unit="lines")
        chunks = (Columns(to_us(rows[:, 0], 1e6), rows[:, 1], rows[:, 2], rows[:, 3], "line", n)
                  for n, rows in self._blocks(stream))
        yield from stream.packets(chunks)

    def _close_files(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __repr__(self) -> str:
        w, h = self.sensor_size
        return f"TextSource({str(self.path)!r}, sensor_size={w}x{h})"
