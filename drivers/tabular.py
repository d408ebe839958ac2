"""Events in tables: ``.csv`` text and NumPy ``.npy`` / ``.npz`` files, with named or positional columns.

Which column is what:

* **named** (a CSV header line, the fields of a structured array, the arrays of an ``.npz``): ``t`` / ``ts`` /
  ``time`` / ``timestamp``, ``x`` / ``col``, ``y`` / ``row``, ``p`` / ``pol`` / ``polarity``, in any case, with an
  optional unit suffix (``t_us``, ``timestamp_ns``, ``time_s``, ``t [ms]``);
* **positional** (a CSV without a header, an ``(N, 4+)`` array): ``t x y p`` (rpg_e2vid, tonic) or ``x y p t``
  / ``x y t p`` (Metavision CSV exports), chosen by what the first rows look like (time non-decreasing, polarity
  in {−1, 0, 1});
* ``columns="x,y,p,t"`` (``--columns``) says the role of every column in order (``-`` skips one) and overrides both.

When the columns cannot be mapped the error is one line that lists the columns found. Time without a unit
suffix is µs when integral, else seconds (``--ts-unit`` overrides), as for RLED files. The sensor size comes from
``sensor_size`` / ``--sensor-size``, an ``.npz`` array ``sensor_size`` / ``resolution`` / ``width`` + ``height``,
or, with a warning, the largest coordinates. ``.npy`` files are memory-mapped and read in chunks; CSV is parsed
in blocks; an ``.npz`` member is read whole (zip members cannot be mapped).
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from livenight.errors import SourceError, SourceNotFoundError
from livenight.events import EventPacket, check_sensor_size

from ._columns import DEFAULT_CHUNK_EVENTS, Columns, ColumnSourceMixin, ColumnStream, infer_sensor_size, to_us
from .base import SingleUse

ROLES = ("t", "x", "y", "p")
_NAMES = {"t": {"t", "ts", "time", "times", "timestamp", "timestamps"}, "x": {"x", "xs", "col", "column"},
          "y": {"y", "ys", "row"}, "p": {"p", "ps", "pol", "polarity", "polarities", "on"}}
_UNITS = {"us": 1.0, "µs": 1.0, "usec": 1.0, "ns": 1e-3, "ms": 1e3, "s": 1e6, "sec": 1e6}
#: positional layouts tried in this order when nothing names the columns
_POSITIONAL = (("t", "x", "y", "p"), ("x", "y", "p", "t"), ("x", "y", "t", "p"))
BLOCK_ROWS = 1 << 17


def _role_of(name: str) -> tuple[str | None, float | None]:
    """``("t", 1e6)`` for ``"time_s"``; ``(None, None)`` for a name that is none of t, x, y, p."""
    m = re.fullmatch(r"\s*([A-Za-z]+)\s*(?:[_ ]\s*|\[|\()?\s*(us|µs|usec|ns|ms|s|sec)?\s*[\])]?\s*", name)
    if not m:
        return None, None
    base, unit = m.group(1).lower(), m.group(2)
    for role, names in _NAMES.items():
        if base in names:
            return role, (_UNITS[unit] if unit and role == "t" else None)
        if unit is None and base.endswith(("us", "ns", "ms")) and base[:-2] in names and role == "t":
            return role, _UNITS[base[-2:]]  # "tus", "timestampns"
    return None, None


def parse_columns(spec: str, n_columns: int, what: str) -> list[str | None]:
    """``"x,y,p,t"`` → the role of each column (``None`` = skip); one-line error when it does not fit."""
    roles = [r.strip().lower() for r in spec.split(",")]
    bad = [r for r in roles if r not in (*ROLES, "-", "")]
    if bad or sorted(r for r in roles if r in ROLES) != sorted(ROLES):
        raise SourceError(f"{what}: columns={spec!r} must name each of t, x, y, p once ('-' skips a column)")
    if len(roles) > n_columns:
        raise SourceError(f"{what}: columns={spec!r} names {len(roles)} columns but the file has {n_columns}")
    return [r if r in ROLES else None for r in roles] + [None] * (n_columns - len(roles))


class _Mapping:
    """Which column index plays which role, and the time scale to µs."""

    def __init__(self, index: dict[str, int], t_scale: float | None) -> None:
        self.index = index
        self.t_scale = t_scale


def map_named(names: list[str], what: str, hint: str) -> _Mapping:
    index, scale = {}, None
    for i, name in enumerate(names):
        role, unit = _role_of(str(name))
        if role is not None and role not in index:
            index[role] = i
            if role == "t":
                scale = unit
    missing = [r for r in ROLES if r not in index]
    if missing:
        found = ", ".join(repr(str(n)) for n in names) or "none"
        raise SourceError(f"{what}: cannot map the columns to t, x, y, p: no column for {', '.join(missing)} (found "
                          f"columns {found}); name them t/timestamp, x, y, p/polarity, or pass {hint}")
    return _Mapping(index, scale)


def map_positional(sample: np.ndarray, what: str, hint: str) -> _Mapping:
    """Choose among the usual layouts from a ``(rows, k)`` float sample."""
    k = sample.shape[1]
    sample = sample[np.isfinite(sample).all(axis=1)]  # a damaged row is the audit's business, not the layout's
    if k >= 4:
        for layout in _POSITIONAL:
            cols = {r: sample[:, i] for i, r in enumerate(layout)}
            t, p = cols["t"], cols["p"]
            if (np.all(np.diff(t) >= 0) and np.all(np.isin(p, (-1, 0, 1)))
                    and all(np.all((cols[c] >= 0) & (cols[c] == np.trunc(cols[c]))) for c in "xy")):
                return _Mapping({r: i for i, r in enumerate(layout)}, None)
    first = ", ".join(f"{v:g}" for v in sample[0]) if sample.shape[0] else "no rows"
    raise SourceError(f"{what}: cannot map the {k} unnamed columns to t, x, y, p (first row: {first}); expected "
                      f"t x y p, x y p t or x y t p with time non-decreasing and polarity in {{-1, 0, 1}}; pass {hint}")


def _time_scale(t_sample: np.ndarray, unit_scale: float | None, ts_unit: str) -> float:
    if ts_unit == "us":
        return 1.0
    if ts_unit == "s":
        return 1e6
    if ts_unit != "auto":
        raise ValueError(f"ts_unit must be 'auto', 'us' or 's' (got {ts_unit!r})")
    if unit_scale is not None:
        return unit_scale
    t = np.asarray(t_sample)
    if t.dtype.kind in "iub":
        return 1.0
    finite = t[np.isfinite(t)]
    return 1.0 if np.all(finite == np.floor(finite)) else 1e6


# ---------------------------------------------------------------------------- readers of raw rows
class _CsvRows:
    """A CSV (or whitespace / semicolon separated) text file read in blocks of float rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, encoding="utf-8", errors="replace") as f:
            head = [ln for ln in itertools.islice(f, 64) if ln.strip() and not ln.lstrip().startswith("#")]
        if not head:
            raise SourceError(f"{path}: the file is empty; expected rows of t, x, y, p")
        first = head[0]
        if "\ufffd" in first or "\x00" in first:
            raise SourceError(f"{path}: not a text file (binary data in the first line); expected CSV rows of t, x, y, p")
        self.delimiter = next((d for d in (",", ";", "\t") if d in first), None)
        fields = [v.strip() for v in (first.split(self.delimiter) if self.delimiter else first.split())]
        try:
            [float(v) for v in fields]
            self.names = None
        except ValueError:
            self.names = fields
        self.n_columns = len(fields)
        self.sample = self._parse(head[1:] if self.names else head, None, 0)

    def _parse(self, lines: list[str], audit, first_line: int) -> np.ndarray:
        k = self.n_columns
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a block of blank lines
                rows = np.loadtxt(lines, dtype=np.float64, delimiter=self.delimiter, ndmin=2, comments="#")
            if rows.shape[0] == 0 or rows.shape[1] == k:
                return rows.reshape(-1, k)
        except ValueError:
            pass
        good, first_bad, n_bad = [], None, 0
        for i, line in enumerate(lines):
            text = line.split("#", 1)[0]
            if not text.strip():
                continue
            fields = text.split(self.delimiter) if self.delimiter else text.split()
            try:
                if len(fields) != k:
                    raise ValueError
                good.append([float(v) for v in fields])
            except ValueError:
                n_bad += 1
                first_bad = first_line + i if first_bad is None else first_bad
        if audit is not None and n_bad:
            audit.items += n_bad
            audit.add("malformed", n_bad, f"line {first_bad}")
        return np.asarray(good, dtype=np.float64).reshape(-1, k)

    def blocks(self, audit=None) -> Iterator[tuple[int, np.ndarray]]:
        """``(line number of the block's first line, rows)``; the row numbers inside a block with blank or
        malformed lines count data rows."""
        with open(self.path, encoding="utf-8", errors="replace") as f:
            n = 1
            if self.names is not None:
                for line in f:  # up to and including the header line
                    n += 1
                    if line.strip() and not line.lstrip().startswith("#"):
                        break
            while True:
                block = list(itertools.islice(f, BLOCK_ROWS))
                if not block:
                    return
                yield n, self._parse(block, audit, n)
                n += len(block)


class _ArrayRows:
    """Columns held by NumPy arrays: one structured array, one ``(N, k)`` array, or one 1-D array per column."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sensor_hint: tuple[int, int] | None = None
        self._cols: list[np.ndarray] | None = None
        self._table: np.ndarray | None = None
        self.names: list[str] | None = None
        magic = {".npy": b"\x93NUMPY", ".npz": b"PK"}.get(path.suffix.lower(), b"")
        with open(path, "rb") as f:
            if f.read(len(magic)) != magic:
                raise SourceError(f"{path}: not a NumPy {path.suffix} file (no {magic!r} signature)")
        try:
            if path.suffix.lower() == ".npy":
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                arr = self._from_npz(path)
        except (OSError, ValueError, EOFError) as e:
            text = " ".join(str(e).split())
            raise SourceError(f"{path}: not a readable NumPy {path.suffix} file ({text})") from e
        if arr is not None:
            if arr.dtype.names:
                self.names = list(arr.dtype.names)
                self._cols = [arr[n] for n in self.names]
            elif arr.ndim == 2:
                self._table = arr
            else:
                raise SourceError(f"{path}: array of shape {arr.shape} ({arr.dtype}); expected a structured array "
                                  "with fields t, x, y, p or an (N, 4) array")
        self.n_columns = len(self._cols) if self._cols is not None else int(self._table.shape[1])
        self.n_rows = int((self._cols[0] if self._cols is not None else self._table).shape[0])
        for c in self._cols or []:
            if c.ndim != 1 or c.shape[0] != self.n_rows:
                lengths = ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(self.names, self._cols))
                raise SourceError(f"{path}: the columns differ in shape ({lengths}); expected one 1-D array of "
                                  "equal length per column")
        self.sample = self.rows(0, min(self.n_rows, 4096))

    def _from_npz(self, path: Path) -> np.ndarray | None:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        for key in ("sensor_size", "resolution", "sensor_resolution"):
            if key in arrays and arrays[key].size == 2:
                self.sensor_hint = tuple(int(v) for v in arrays.pop(key).ravel())
        if "width" in arrays and "height" in arrays and arrays["width"].size == 1 == arrays["height"].size:
            self.sensor_hint = (int(arrays.pop("width")), int(arrays.pop("height")))
        big = {k: a for k, a in arrays.items() if a.ndim >= 1 and a.size > 1 or a.dtype.names}
        if len(big) == 1 and (next(iter(big.values())).dtype.names or next(iter(big.values())).ndim == 2):
            return next(iter(big.values()))
        if not big:
            raise SourceError(f"{path}: no event arrays (found: {', '.join(arrays) or 'nothing'})")
        self.names = list(big)
        self._cols = [big[k] for k in self.names]
        return None

    def rows(self, i0: int, i1: int) -> np.ndarray:
        if self._table is not None:
            return np.asarray(self._table[i0:i1], dtype=np.float64)
        return np.stack([np.asarray(c[i0:i1], dtype=np.float64) for c in self._cols], axis=1)

    def column(self, j: int, i0: int, i1: int) -> np.ndarray:
        """Column ``j`` in its stored dtype (so int64 µs stays exact)."""
        return np.asarray(self._cols[j][i0:i1] if self._cols is not None else self._table[i0:i1, j])

    def blocks(self, audit=None, block: int = BLOCK_ROWS) -> Iterator[tuple[str, int, int]]:
        for i0 in range(0, self.n_rows, block):
            yield f"row {i0}", i0, min(i0 + block, self.n_rows)


class TabularSource(ColumnSourceMixin, SingleUse):
    """Replay events from a ``.csv``, ``.npy`` or ``.npz`` file as :class:`EventPacket` objects (unpaced).

    Args:
        path: the file.
        columns: the role of every column in order, e.g. ``"x,y,p,t"`` (``-`` skips one); default: from the names,
            else guessed from the first rows.
        ts_unit: ``"auto"`` (a unit suffix in the name, else µs when integral, else s), ``"us"`` or ``"s"``.
        sensor_size: ``(width, height)``; default from the file (``.npz``), else the largest coordinates.
        chunk_events: events per packet.

    Example:
        >>> with TabularSource("events.csv", columns="x,y,p,t", sensor_size=(1280, 720)) as src:  # doctest: +SKIP
        ...     n = sum(len(p) for p in src)
    """

    is_live = False
    frames = None
    event_indices = None

    def __init__(self, path: str | os.PathLike, columns: str | None = None,
                 ts_unit: Literal["auto", "us", "s"] = "auto", sensor_size: tuple[int, int] | None = None,
                 chunk_events: int = DEFAULT_CHUNK_EVENTS) -> None:
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.exists():
            raise SourceNotFoundError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise SourceError(f"{self.path}: is a directory, expected a .csv, .npy or .npz file")
        what = str(self.path)
        self.format = {".csv": "CSV", ".npy": "NumPy .npy", ".npz": "NumPy .npz"}.get(self.path.suffix.lower(), "CSV")
        self._rows = _CsvRows(self.path) if self.format == "CSV" else _ArrayRows(self.path)
        rows = self._rows
        hint = "columns='t,x,y,p' (--columns; the role of each column in order, '-' skips one)"
        if columns is not None:
            roles = parse_columns(columns, rows.n_columns, what)
            mapping = _Mapping({r: i for i, r in enumerate(roles) if r is not None}, None)
            if rows.names is not None and mapping.index["t"] < len(rows.names):
                mapping.t_scale = _role_of(str(rows.names[mapping.index["t"]]))[1]
        elif rows.names is not None:
            mapping = map_named(rows.names, what, hint)
        else:
            mapping = map_positional(rows.sample, what, hint)
        self._map = mapping
        self._stream: ColumnStream | None = None
        jt = mapping.index["t"]
        t_sample = rows.column(jt, 0, min(rows.n_rows, 4096)) if isinstance(rows, _ArrayRows) else rows.sample[:, jt]
        self.t_scale_to_us = _time_scale(t_sample, mapping.t_scale, ts_unit)
        self.columns = ",".join(next(r for r, i in mapping.index.items() if i == j) if j in mapping.index.values()
                                else "-" for j in range(rows.n_columns))
        if sensor_size is not None:
            self.sensor_size = check_sensor_size(sensor_size, "sensor_size")
        elif getattr(rows, "sensor_hint", None) is not None:
            self.sensor_size = check_sensor_size(rows.sensor_hint, f"{what}: sensor_size")
        else:
            self.sensor_size = self._scan_sensor_size()
        self.chunk_events = int(chunk_events)

    @classmethod
    def from_uri(cls, uri: str, **options) -> "TabularSource":
        return cls(uri, **options)

    def _chunks(self, audit=None) -> Iterator[Columns]:
        idx, rows, scale = self._map.index, self._rows, self.t_scale_to_us
        if isinstance(rows, _ArrayRows):
            for at, i0, i1 in rows.blocks(audit):
                if self._stream is not None and self._stream.closed:
                    return
                c = {r: rows.column(j, i0, i1) for r, j in idx.items()}
                yield Columns(to_us(c["t"], scale), c["x"], c["y"], c["p"], "row", i0)
        else:
            for line, block in rows.blocks(audit):
                if self._stream is not None and self._stream.closed:
                    return
                yield Columns(to_us(block[:, idx["t"]], scale), block[:, idx["x"]], block[:, idx["y"]],
                              block[:, idx["p"]], "line", line)

    def _scan_sensor_size(self) -> tuple[int, int]:
        max_x = max_y = -1
        for c in self._chunks():
            for col, name in ((c.x, "x"), (c.y, "y")):
                col = np.asarray(col)
                ok = col[np.isfinite(col)] if col.dtype.kind == "f" else col
                if ok.size:
                    if name == "x":
                        max_x = max(max_x, int(ok.max()))
                    else:
                        max_y = max(max_y, int(ok.max()))
        return infer_sensor_size(max_x, max_y, str(self.path))

    def _packets(self) -> Iterator[EventPacket]:
        unit = "rows"
        self._stream = stream = ColumnStream(str(self.path), f"{self.format} events ({self.columns})",
                                             self.sensor_size, self.chunk_events, unit=unit)
        yield from stream.packets(self._chunks(stream.audit))

    def __repr__(self) -> str:
        w, h = self.sensor_size
        return f"TabularSource({str(self.path)!r}, columns={self.columns!r}, sensor_size={w}x{h})"
