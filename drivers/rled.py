"""RLED h5 recordings (the NER-Net dataset layout, h5_tools style): a lazy, chunked reader and a writer.

Layout: ``events/xs``, ``events/ys`` (int16), ``events/ts`` (float64 µs), ``events/ps`` (bool, True = ON);
``images/imageNNNNNNNNN`` (uint8 grey, attributes ``event_idx``, ``size``, ``timestamp`` = exposure end, µs);
``event_indices`` [n_images, 2] (half-open event range ±10 ms around each image's exposure midpoint); file
attributes ``duration, num_events, num_neg, num_pos, num_imgs, sensor_resolution, t0, tk``.

RLED files are gigabytes, so nothing here reads a whole dataset: events come in chunks, time lookups bisect the
``ts`` dataset directly. The known traps are handled explicitly:

* ``ts`` in seconds (h5_tools converters) vs µs (RLED): µs when the stored values are integral.
* ``sensor_resolution`` as (W, H) or (H, W): images fix (H, W) when present; otherwise the larger number is the
  width unless the event coordinates say otherwise; absent, it is inferred from the data with a warning.
* polarity as bool, 0/1 or ±1: all mapped to ON = 1; anything else is an error naming the value.

Malformed files fail with a :class:`~livenight.errors.SourceError` that names the file, the dataset and what was
expected. Sortedness and coordinates are checked chunk by chunk as events are read (the error names the event
index), so a multi-GB file opens instantly.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from livenight.checks import nonfinite
from livenight.errors import LivenightError, ShapeError, SourceError, SourceNotFoundError
from livenight.events import EVENT_DTYPE, EventPacket, check_events, check_sensor_size, concat_events, polarity_to_on

from .base import SingleUse

#: dataset names: the RLED / h5_tools names first, then the legacy h5_tools names
_EVENT_NAMES = {"x": ("xs", "x"), "y": ("ys", "y"), "t": ("ts", "t"), "p": ("ps", "p")}
DEFAULT_CHUNK_EVENTS = 1 << 18


#: what h5py raises for damaged files (besides its own OSError): KeyError from a broken link or heap, ValueError /
#: TypeError from a garbled dataspace or datatype, RuntimeError from the C library
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip("'\"")
    return text.splitlines()[0] if text else type(e).__name__


def _h5py():
    import h5py  # core dependency; imported here so `import livenight` stays cheap

    return h5py


class RledFile:
    """Read access to one RLED h5 file. Opening validates the structure; events are read lazily.

    Args:
        path: the ``.h5`` / ``.hdf5`` file.
        ts_unit: ``"auto"`` (detect), ``"us"`` or ``"s"`` for the ``events/ts`` dataset.
        sensor_size: ``(width, height)`` to override the file's ``sensor_resolution``.

    Example:
        >>> with RledFile("city_0000.h5") as f:            # doctest: +SKIP
        ...     first = f.read_events(0, 1000)
    """

    def __init__(self, path: str | os.PathLike, ts_unit: Literal["auto", "us", "s"] = "auto",
                 sensor_size: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceNotFoundError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise SourceError(f"{self.path}: is a directory, expected an RLED .h5 file")
        h5py = _h5py()
        try:
            is_h5 = h5py.is_hdf5(str(self.path))
        except OSError as e:
            raise SourceError(f"{self.path}: cannot read the file ({e})") from e
        if not is_h5:
            raise SourceError(f"{self.path}: not an HDF5 file (no HDF5 signature); expected an RLED .h5 recording")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise SourceError(f"{self.path}: truncated or corrupt HDF5 file ({e})") from e
        try:
            self._open(ts_unit, sensor_size)
        except _H5_ERRORS as e:  # a damaged object header, heap or B-tree surfaces as any of these in h5py
            self._h5.close()
            if isinstance(e, LivenightError):
                raise
            raise SourceError(f"{self.path}: truncated or corrupt HDF5 file ({_first_line(e)})") from e
        except BaseException:
            self._h5.close()
            raise

    # ---------------------------------------------------------------- validation on open
    def _open(self, ts_unit: str, sensor_size: tuple[int, int] | None) -> None:
        h5 = self._h5
        try:
            group = h5["events"]
            if not hasattr(group, "keys"):
                raise SourceError(f"{self.path}: 'events' is a dataset, expected a group holding events/xs, "
                                  "events/ys, events/ts, events/ps")
        except KeyError:
            raise SourceError(f"{self.path}: missing group 'events' (found: {', '.join(h5.keys()) or 'nothing'}); "
                              "RLED files need events/xs, events/ys, events/ts, events/ps") from None
        except (OSError, RuntimeError) as e:
            raise SourceError(f"{self.path}: truncated or corrupt HDF5 file ({e})") from e
        self._ds = {}
        for key, names in _EVENT_NAMES.items():
            found = next((n for n in names if n in group), None)
            if found is None:
                have = ", ".join(f"events/{k}" for k in group.keys()) or "nothing"
                raise SourceError(f"{self.path}: missing dataset 'events/{names[0]}' (found: {have}); "
                                  "RLED files need events/xs, events/ys, events/ts, events/ps")
            ds = group[found]
            if not hasattr(ds, "ndim"):
                raise SourceError(f"{self.path}: 'events/{found}' is a group, expected a 1-D dataset")
            if ds.dtype.kind not in "biuf":
                raise SourceError(f"{self.path}: dataset 'events/{found}' holds {ds.dtype}, expected numbers")
            if ds.ndim != 1:
                raise SourceError(f"{self.path}: dataset 'events/{found}' has shape {ds.shape}, expected 1-D")
            self._ds[key] = ds
        lengths = {f"events/{self._ds[k].name.split('/')[-1]}": self._ds[k].shape[0] for k in "xytp"}
        if len(set(lengths.values())) != 1:
            listing = ", ".join(f"{k} {v}" for k, v in lengths.items())
            raise SourceError(f"{self.path}: event datasets have different lengths ({listing}); "
                              "they must all have one entry per event")
        self.num_events = int(self._ds["t"].shape[0])
        if self.num_events == 0:
            raise SourceError(f"{self.path}: the file holds zero events (events/ts is empty)")

        self.ts_unit = self._detect_ts_unit() if ts_unit == "auto" else ts_unit
        if self.ts_unit not in ("us", "s"):
            raise ValueError(f"ts_unit must be 'auto', 'us' or 's' (got {ts_unit!r})")
        self.t_first_us = int(self._read_t(0, 1)[0])
        self.t_last_us = int(self._read_t(self.num_events - 1, self.num_events)[0])
        if self.t_last_us < self.t_first_us:
            raise SourceError(f"{self.path}: timestamps not sorted: the last event (t={self.t_last_us} µs) precedes "
                              f"the first (t={self.t_first_us} µs)")

        self._image_names = self._list_images()
        self.event_indices = self._read_event_indices()
        self.sensor_size = sensor_size if sensor_size is not None else self._resolve_sensor_size()
        self._pol_encoding: str | None = None

    def _detect_ts_unit(self) -> str:
        ds = self._ds["t"]
        if np.issubdtype(ds.dtype, np.integer):
            return "us"
        # integral values are µs: seconds-based files (h5_tools) have fractional timestamps, and whole-second
        # event timestamps do not occur in practice
        head = ds[: min(1000, self.num_events)]
        tail = ds[max(0, self.num_events - 1000):self.num_events]
        integral = bool(np.all(head == np.floor(head)) and np.all(tail == np.floor(tail)))
        return "us" if integral else "s"

    def _read_t(self, i0: int, i1: int) -> np.ndarray:
        raw = self._read(self._ds["t"], i0, i1)
        self._check_finite(raw, "t", i0)
        limit = 2.0**62 / (1e6 if self.ts_unit == "s" else 1.0)  # int64 µs must hold it
        if raw.dtype.kind == "f" and raw.size and float(np.max(np.abs(raw))) >= limit:
            j = int(np.argmax(np.abs(raw)))
            raise SourceError(f"{self.path}: {self._ds['t'].name.lstrip('/')}[{i0 + j}] = {raw[j].item()!r} is not a "
                              f"timestamp (expected |t| < {limit:.3g} {self.ts_unit})")
        if self.ts_unit == "s":
            return np.rint(raw.astype(np.float64) * 1e6).astype(np.int64)
        if np.issubdtype(raw.dtype, np.integer):
            return raw.astype(np.int64)
        return np.rint(raw).astype(np.int64)

    def _check_finite(self, raw: np.ndarray, key: str, i0: int) -> None:
        j = nonfinite(raw)
        if j is not None:
            raise SourceError(f"{self.path}: {self._ds[key].name.lstrip('/')}[{i0 + j}] is {raw[j].item()!r} "
                              "(expected a finite number)")

    def _read(self, ds, i0: int, i1: int) -> np.ndarray:
        try:
            return ds[i0:i1]
        except _H5_ERRORS as e:
            raise SourceError(f"{self.path}: cannot read '{ds.name}' events {i0}..{i1} "
                              f"(truncated or corrupt file: {_first_line(e)})") from e

    def _list_images(self) -> list[str]:
        if "images" not in self._h5:
            return []
        return sorted(k for k in self._h5["images"].keys() if k.startswith("image"))

    def _read_event_indices(self) -> np.ndarray | None:
        if "event_indices" not in self._h5:
            return None
        idx = np.asarray(self._h5["event_indices"][()], dtype=np.int64)
        if idx.ndim != 2 or idx.shape[1] != 2:
            raise SourceError(f"{self.path}: 'event_indices' has shape {idx.shape}, expected (num_images, 2)")
        bad = np.flatnonzero((idx[:, 0] < 0) | (idx[:, 1] < idx[:, 0]) | (idx[:, 1] > self.num_events))
        if bad.size:
            i = int(bad[0])
            raise SourceError(f"{self.path}: event_indices[{i}] = {idx[i].tolist()} is not a range inside "
                              f"0..{self.num_events} events")
        back = np.flatnonzero((np.diff(idx[:, 0]) < 0) | (np.diff(idx[:, 1]) < 0))
        if back.size:
            i = int(back[0]) + 1
            raise SourceError(f"{self.path}: event_indices[{i}] = {idx[i].tolist()} starts or ends before "
                              f"event_indices[{i - 1}] = {idx[i - 1].tolist()} (rows must follow the images in time)")
        return idx

    def _resolve_sensor_size(self) -> tuple[int, int]:
        head = min(self.num_events, DEFAULT_CHUNK_EVENTS)
        xs, ys = self._read(self._ds["x"], 0, head), self._read(self._ds["y"], 0, head)
        self._check_finite(xs, "x", 0)
        self._check_finite(ys, "y", 0)
        max_x, max_y = int(xs.max()), int(ys.max())
        if self._image_names:
            h, w = self._h5["images"][self._image_names[0]].shape[:2]
            return int(w), int(h)
        attr = self._h5.attrs.get("sensor_resolution")
        if attr is not None:
            a, b = (int(v) for v in np.asarray(attr).ravel()[:2])
            width, height = max(a, b), min(a, b)
            if (max_x >= width or max_y >= height) and max_x < height and max_y < width:
                width, height = height, width  # a portrait sensor: the coordinates say so
            return width, height
        # absent: scan every coordinate (chunked), which costs one pass over xs and ys
        for i0 in range(head, self.num_events, DEFAULT_CHUNK_EVENTS):
            i1 = min(i0 + DEFAULT_CHUNK_EVENTS, self.num_events)
            xs, ys = self._read(self._ds["x"], i0, i1), self._read(self._ds["y"], i0, i1)
            self._check_finite(xs, "x", i0)
            self._check_finite(ys, "y", i0)
            max_x, max_y = max(max_x, int(xs.max())), max(max_y, int(ys.max()))
        warnings.warn(f"{self.path}: no sensor_resolution attribute and no images; inferred {max_x + 1}x{max_y + 1} "
                      "from the largest event coordinates (pass sensor_size to override)", stacklevel=4)
        return max_x + 1, max_y + 1

    # ---------------------------------------------------------------- events
    def read_events(self, i0: int, i1: int, check: bool = True) -> np.ndarray:
        """Events ``i0:i1`` as an :data:`EVENT_DTYPE` array, checked for order and sensor bounds."""
        i0, i1 = max(0, int(i0)), min(self.num_events, int(i1))
        if i1 <= i0:
            return np.empty(0, dtype=EVENT_DTYPE)
        ev = np.empty(i1 - i0, dtype=EVENT_DTYPE)
        ev["t"] = self._read_t(i0, i1)
        x = self._read(self._ds["x"], i0, i1)
        y = self._read(self._ds["y"], i0, i1)
        self._check_finite(x, "x", i0)  # NaN would compare False with every bound below and cast to 0
        self._check_finite(y, "y", i0)
        if check:  # on the stored values, before the cast to uint16 could wrap them
            width, height = self.sensor_size
            bad = np.flatnonzero((x < 0) | (y < 0) | (x >= width) | (y >= height))
            if bad.size:
                j = int(bad[0])
                raise SourceError(f"{self.path}: event {i0 + j} at (x={int(x[j])}, y={int(y[j])}) lies outside the "
                                  f"{width}x{height} sensor")
        ev["x"] = x
        ev["y"] = y
        ev["p"] = self._polarity(self._read(self._ds["p"], i0, i1), i0)
        if check:  # coordinates were checked above, before the cast
            check_events(ev, None, what=str(self.path), index_offset=i0)
        return ev

    def _polarity(self, raw: np.ndarray, i0: int) -> np.ndarray:
        if raw.dtype == np.bool_:
            return raw.astype(np.uint8)
        try:
            on = polarity_to_on(raw, what=f"{self.path}: events/ps (events {i0}..{i0 + raw.size})")
        except SourceError:
            raise
        enc = "pm1" if np.any(raw < 0) else ("01" if np.any(raw == 0) else None)
        if enc is not None:
            if self._pol_encoding is not None and enc != self._pol_encoding:
                raise SourceError(f"{self.path}: events/ps mixes 0/1 and -1/+1 encodings (events {i0}..{i0 + raw.size})")
            self._pol_encoding = enc
        return on

    def iter_chunks(self, chunk_events: int = DEFAULT_CHUNK_EVENTS, i0: int = 0,
                    i1: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_index, events)`` chunks; checks order across chunk boundaries too."""
        i1 = self.num_events if i1 is None else min(i1, self.num_events)
        last_t = None
        for a in range(i0, i1, chunk_events):
            ev = self.read_events(a, min(a + chunk_events, i1))
            if last_t is not None and ev.size and ev["t"][0] < last_t:
                raise SourceError(f"{self.path}: timestamps not sorted at event index {a}: t={int(ev['t'][0])} µs "
                                  f"after t={last_t} µs")
            if ev.size:
                last_t = int(ev["t"][-1])
            yield a, ev

    def index_at_time(self, t_us: int) -> int:
        """First event index with ``t >= t_us`` (bisection on the dataset: O(log N) single reads)."""
        lo, hi = 0, self.num_events
        while lo < hi:
            mid = (lo + hi) // 2
            if int(self._read_t(mid, mid + 1)[0]) < t_us:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # ---------------------------------------------------------------- images
    @property
    def num_images(self) -> int:
        return len(self._image_names)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as (H, W) uint8."""
        name = self._image_names[i]
        try:
            return np.asarray(self._h5["images"][name][()])
        except _H5_ERRORS as e:
            raise SourceError(f"{self.path}: cannot read images/{name} (truncated or corrupt file: "
                              f"{_first_line(e)})") from e

    def image_timestamps_us(self) -> np.ndarray:
        """Exposure-end timestamp of every image, int64 µs (same unit handling as ``events/ts``)."""
        out = np.empty(self.num_images, dtype=np.int64)
        for i, name in enumerate(self._image_names):
            try:
                ts = float(np.asarray(self._h5["images"][name].attrs.get("timestamp", np.nan)).ravel()[0])
            except (*_H5_ERRORS, IndexError) as e:
                raise SourceError(f"{self.path}: cannot read images/{name} 'timestamp' (truncated or corrupt file: "
                                  f"{_first_line(e)})") from e
            if not np.isfinite(ts):
                raise SourceError(f"{self.path}: images/{name} has no 'timestamp' attribute")
            out[i] = round(ts * 1e6) if self.ts_unit == "s" else round(ts)
        return out

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "RledFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RledFrames:
    """The images of an RLED file as :class:`~livenight.drivers.base.ReferenceFrames`."""

    def __init__(self, f: RledFile) -> None:
        self._f = f
        self.t_us = f.image_timestamps_us()

    def __len__(self) -> int:
        return self._f.num_images

    def __getitem__(self, i: int) -> np.ndarray:
        return self._f.image(i)


class RledSource(SingleUse):
    """Replay an RLED file as a stream of :class:`EventPacket` (unpaced; wrap with ``paced`` for real time).

    Packets never split events that share a timestamp, and consecutive packets tile time without gaps:
    packet k covers ``[t_start_us, t_end_us)`` where ``t_end_us`` is the first timestamp of packet k+1.
    """

    is_live = False

    def __init__(self, path: str | os.PathLike, chunk_events: int = DEFAULT_CHUNK_EVENTS,
                 ts_unit: Literal["auto", "us", "s"] = "auto", sensor_size: tuple[int, int] | None = None) -> None:
        self.file = RledFile(path, ts_unit=ts_unit, sensor_size=sensor_size)
        self.sensor_size = self.file.sensor_size
        self.chunk_events = int(chunk_events)
        self.event_indices = self.file.event_indices
        self.frames = RledFrames(self.file) if self.file.num_images else None
        self.name = self.file.path.name

    @classmethod
    def from_uri(cls, uri: str, **options) -> "RledSource":
        return cls(uri, **options)

    def _packets(self) -> Iterator[EventPacket]:
        f = self.file
        pending: np.ndarray | None = None
        t_start = f.t_first_us
        for _, ev in f.iter_chunks(self.chunk_events):
            chunk = ev if pending is None else concat_events([pending, ev])
            # hold back the events sharing the chunk's last timestamp: they may continue in the next chunk
            cut = int(np.searchsorted(chunk["t"], chunk["t"][-1], side="left"))
            if cut == 0:
                pending = chunk
                continue
            out, pending = chunk[:cut], chunk[cut:]
            t_end = int(pending["t"][0])
            yield EventPacket(out, t_start, t_end, time.monotonic(), self.sensor_size)
            t_start = t_end
        if pending is not None and pending.size:
            yield EventPacket(pending, t_start, int(pending["t"][-1]) + 1, time.monotonic(), self.sensor_size)

    def close(self) -> None:
        self.file.close()


class RledWriter:
    """Write an RLED h5 file incrementally; a flush every ``flush_every_s`` keeps a killed process's file readable.

    Args:
        path: output ``.h5`` file (overwritten).
        sensor_size: ``(width, height)``; written as ``sensor_resolution`` in that order (the RLED README's order).
        flush_every_s: wall-clock seconds between flushes of data and attributes (0: flush only on close).

    ``event_indices`` is written on close: as set by :meth:`set_event_indices`, else ±10 ms around each image's
    exposure midpoint (``timestamp − exposure_us/2``).
    """

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int], flush_every_s: float = 1.0,
                 chunk_events: int = 1 << 16, window_half_us: int = 10_000) -> None:
        h5py = _h5py()
        width, height = check_sensor_size(sensor_size)
        self.path = Path(path)
        self.sensor_size = (width, height)
        self._h5 = h5py.File(self.path, "w")
        ev = self._h5.create_group("events")
        kw = dict(shape=(0,), maxshape=(None,), chunks=(chunk_events,))
        self._ds = {"x": ev.create_dataset("xs", dtype=np.int16, **kw),
                    "y": ev.create_dataset("ys", dtype=np.int16, **kw),
                    "t": ev.create_dataset("ts", dtype=np.float64, **kw),
                    "p": ev.create_dataset("ps", dtype=np.bool_, **kw)}
        self._images = self._h5.create_group("images")
        self._n = 0
        self._num_pos = 0
        self._t0: int | None = None
        self._tk: int | None = None
        self._last_t: int | None = None
        self._image_ts: list[int] = []
        self._image_mid: list[int] = []
        self._event_indices: np.ndarray | None = None
        self._flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        self._window_half_us = window_half_us
        self._closed = False

    @property
    def num_events(self) -> int:
        return self._n

    def add_events(self, events: np.ndarray) -> None:
        """Append time-sorted events (after everything written so far)."""
        check_events(events, self.sensor_size, what="RledWriter.add_events")
        n = events.shape[0]
        if n == 0:
            return
        if self._last_t is not None and int(events["t"][0]) < self._last_t:
            raise SourceError(f"RledWriter.add_events: t={int(events['t'][0])} µs precedes the last written event "
                              f"(t={self._last_t} µs)")
        a, b = self._n, self._n + n
        for key, ds in self._ds.items():
            ds.resize((b,))
        self._ds["x"][a:b] = events["x"]
        self._ds["y"][a:b] = events["y"]
        self._ds["t"][a:b] = events["t"]
        self._ds["p"][a:b] = events["p"].astype(bool)
        self._n = b
        self._num_pos += int(np.count_nonzero(events["p"]))
        if self._t0 is None:
            self._t0 = int(events["t"][0])
        self._tk = self._last_t = int(events["t"][-1])
        self._maybe_flush()

    def add_image(self, image: np.ndarray, timestamp_us: int, exposure_us: int = 0) -> None:
        """Add a grey uint8 (H, W) image; ``timestamp_us`` is the exposure end (RLED convention)."""
        image = np.asarray(image)
        width, height = self.sensor_size
        if image.shape != (height, width) or image.dtype != np.uint8:
            raise ShapeError(f"RledWriter.add_image: expected uint8 ({height}, {width}) (got {image.dtype} {image.shape})")
        i = len(self._image_ts)
        ds = self._images.create_dataset(f"image{i:09d}", data=image)
        ds.attrs["size"] = np.asarray(image.shape, dtype=np.int64)
        ds.attrs["timestamp"] = float(timestamp_us)
        ds.attrs["event_idx"] = -1  # filled in on close
        ds.attrs["type"] = "greyscale"
        self._image_ts.append(int(timestamp_us))
        self._image_mid.append(int(timestamp_us) - int(exposure_us) // 2)
        self._maybe_flush()

    def set_event_indices(self, indices: np.ndarray) -> None:
        """Use these [n_images, 2] event ranges instead of the ±10 ms default."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 2 or idx.shape[1] != 2:
            raise ShapeError(f"event_indices must have shape (n, 2) (got {idx.shape})")
        self._event_indices = idx

    def _maybe_flush(self) -> None:
        if self._flush_every_s and time.monotonic() - self._last_flush >= self._flush_every_s:
            self.flush()

    def _write_attrs(self) -> None:
        a = self._h5.attrs
        t0 = self._t0 if self._t0 is not None else 0
        tk = self._tk if self._tk is not None else 0
        a["num_events"] = self._n
        a["num_pos"] = self._num_pos
        a["num_neg"] = self._n - self._num_pos
        a["num_imgs"] = len(self._image_ts)
        a["t0"] = float(t0)
        a["tk"] = float(tk)
        a["duration"] = float(tk - t0)
        a["sensor_resolution"] = np.asarray(self.sensor_size, dtype=np.int64)
        self._images.attrs["num_images"] = len(self._image_ts)

    def flush(self) -> None:
        """Write attributes and push buffered data to disk."""
        self._write_attrs()
        self._h5.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            n_img = len(self._image_ts)
            if n_img:
                ts = self._ds["t"]
                lookup = _sorted_dataset_search(ts, self._n)
                for i, t_img in enumerate(self._image_ts):
                    self._images[f"image{i:09d}"].attrs["event_idx"] = max(0, lookup(t_img) - 1)
                idx = self._event_indices
                if idx is None:
                    idx = np.asarray([[lookup(m - self._window_half_us), lookup(m + self._window_half_us)]
                                      for m in self._image_mid], dtype=np.int64)
                if idx.shape[0] != n_img:
                    raise ShapeError(f"event_indices has {idx.shape[0]} rows for {n_img} images")
                self._h5.create_dataset("event_indices", data=idx)
            self._write_attrs()
        finally:
            self._h5.close()

    def __enter__(self) -> "RledWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sorted_dataset_search(ds, n: int):
    """``searchsorted(ds[:n], value, 'left')`` by bisection on an h5 dataset, without reading it whole."""

    def lookup(value: float) -> int:
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if ds[mid] < value:
                lo = mid + 1
            else:
                hi = mid
        return lo

    return lookup
