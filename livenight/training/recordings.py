"""Training recordings: RLED h5 files, prepared memmap folders and in-memory arrays, one window logic."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SourceError, SourceNotFoundError
from ..events import EVENT_DTYPE


class _Recording:
    """Shared window logic. Subclasses set ``name``, ``sensor_size``, ``event_indices``, ``num_images``."""

    name: str
    sensor_size: tuple[int, int]
    event_indices: np.ndarray
    num_images: int
    has_flow: bool = False

    @property
    def num_windows(self) -> int:
        """Usable windows: one per image except the last (the official ``num_imgs − 1``)."""
        return max(0, min(self.num_images, len(self.event_indices)) - 1)

    def window_events(self, i: int) -> np.ndarray:
        a, b = (int(v) for v in self.event_indices[i])
        return self.events(a, b)

    def events(self, a: int, b: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def frame(self, i: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def flow(self, i: int) -> np.ndarray:
        raise SourceError(f"{self.name}: the recording has no optical flow")

    def _check_frame(self, img: np.ndarray, i: int) -> np.ndarray:
        w, h = self.sensor_size
        if img.shape != (h, w) or img.dtype != np.uint8:
            raise SourceError(f"{self.name}: image {i} is {img.dtype} {img.shape}, expected uint8 ({h}, {w})")
        return img


class H5Recording(_Recording):
    """An RLED h5 file, opened lazily (also in each DataLoader worker). Optical flow: ``flow/flowNNNNNNNNN`` [2,H,W]."""

    def __init__(self, path: str | os.PathLike) -> None:
        from ..drivers.rled import RledFile

        self.path = Path(path)
        self.name = self.path.stem
        with RledFile(self.path) as f:
            if f.event_indices is None:
                raise SourceError(f"{self.path}: no 'event_indices' dataset; training windows come from it "
                                  "(RLED layout: [num_images, 2] event ranges around each image)")
            if f.num_images == 0:
                raise SourceError(f"{self.path}: no images; training needs ground-truth frames")
            self.sensor_size = tuple(f.sensor_size)
            self.event_indices = f.event_indices.copy()
            self.num_images = f.num_images
        import h5py

        with h5py.File(self.path, "r") as raw:
            self.has_flow = "flow" in raw and len(raw["flow"]) > 0
        self._f = None
        self._raw = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_f": None, "_raw": None}

    def _file(self):
        if self._f is None:
            from ..drivers.rled import RledFile

            self._f = RledFile(self.path, sensor_size=self.sensor_size)
        return self._f

    def events(self, a: int, b: int) -> np.ndarray:
        return self._file().read_events(a, b)

    def frame(self, i: int) -> np.ndarray:
        return self._check_frame(self._file().image(i), i)

    def flow(self, i: int) -> np.ndarray:
        if self._raw is None:
            import h5py

            self._raw = h5py.File(self.path, "r")
        return np.asarray(self._raw["flow"][f"flow{i:09d}"][()], dtype=np.float32)

    def close(self) -> None:
        for h in (self._f, self._raw):
            if h is not None:
                h.close()
        self._f = self._raw = None


class MemmapRecording(_Recording):
    """A folder written by :func:`prepare` (or the official ``h5_to_memmap.py``), memory-mapped lazily.

    Reads ``t.npy`` (int64 µs, or the official float64 ``[N, 1]``), ``xy.npy`` int16 ``[N, 2]``, ``p.npy`` uint8
    (1 = ON), ``images.npy`` uint8 ``[n, H, W]`` (or ``[n, H, W, 1]``), ``event_indices.npy`` (or the official
    ``image_event_indices.npy``), optional ``flow.npy`` float32 ``[n, 2, H, W]`` and ``metadata.json``.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder)
        meta_path = self.path / "metadata.json"
        if not meta_path.is_file():
            raise SourceError(f"{self.path}: no metadata.json; not a prepared memmap folder (run livenight prepare)")
        self.metadata = json.loads(meta_path.read_text())
        self.name = self.path.name
        self._arrays: dict | None = None
        a = self._load()
        self.event_indices = np.asarray(a["idx"], dtype=np.int64)
        if self.event_indices.ndim != 2 or self.event_indices.shape[1] != 2:
            raise SourceError(f"{self.path}: event indices have shape {self.event_indices.shape}, expected (n, 2)")
        self.num_images, h, w = a["images"].shape[:3]
        self.sensor_size = (int(w), int(h))
        self.has_flow = a["flow"] is not None
        n = a["t"].shape[0]
        if a["xy"].shape[0] != n or a["p"].shape[0] != n:
            raise SourceError(f"{self.path}: t, xy and p have different lengths "
                              f"({n}, {a['xy'].shape[0]}, {a['p'].shape[0]})")
        if self.event_indices.size and (self.event_indices.min() < 0 or self.event_indices.max() > n):
            raise SourceError(f"{self.path}: event indices leave 0..{n}")

    def _load(self) -> dict:
        if self._arrays is None:
            def load(name: str, required: bool = True):
                p = self.path / name
                if not p.is_file():
                    if required:
                        raise SourceError(f"{self.path}: missing {name}")
                    return None
                return np.load(p, mmap_mode="r")

            t = load("t.npy")
            p = load("p.npy")
            images = load("images.npy")
            idx = load("event_indices.npy", required=False)
            self._arrays = {"t": t[:, 0] if t.ndim == 2 else t, "xy": load("xy.npy"),
                            "p": p[:, 0] if p.ndim == 2 else p,
                            "images": images[..., 0] if images.ndim == 4 else images,
                            "idx": idx if idx is not None else load("image_event_indices.npy"),
                            "flow": load("flow.npy", required=False)}
        return self._arrays

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}

    def events(self, a: int, b: int) -> np.ndarray:
        arr = self._load()
        t = np.asarray(arr["t"][a:b])
        ev = np.empty(t.shape[0], EVENT_DTYPE)
        ev["t"] = t if t.dtype.kind in "iu" else np.rint(t)
        xy = np.asarray(arr["xy"][a:b])
        ev["x"] = xy[:, 0]
        ev["y"] = xy[:, 1]
        ev["p"] = np.asarray(arr["p"][a:b]) > 0
        return ev

    def frame(self, i: int) -> np.ndarray:
        return self._check_frame(np.asarray(self._load()["images"][i]), i)

    def flow(self, i: int) -> np.ndarray:
        return np.asarray(self._load()["flow"][i], dtype=np.float32)


class ArrayRecording(_Recording):
    """An in-memory recording: time-sorted :data:`EVENT_DTYPE` events, uint8 ``[n, H, W]`` frames, event_indices.

    Example:
        >>> from livenight.simulate import simulate_night
        >>> rec = ArrayRecording.from_sim(simulate_night(0.2, (64, 48), seed=1))   # doctest: +SKIP
    """

    def __init__(self, events: np.ndarray, frames: np.ndarray, event_indices: np.ndarray, name: str = "memory",
                 flow: np.ndarray | None = None) -> None:
        if events.dtype != EVENT_DTYPE:
            raise SourceError(f"{name}: events must be EVENT_DTYPE (got {events.dtype})")
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise SourceError(f"{name}: frames must be uint8 [n, H, W] (got {frames.dtype} {frames.shape})")
        self.name = name
        self._events = events
        self._frames = frames
        self._flow = flow
        self.has_flow = flow is not None
        self.event_indices = np.asarray(event_indices, dtype=np.int64).reshape(-1, 2)
        self.num_images = frames.shape[0]
        self.sensor_size = (frames.shape[2], frames.shape[1])

    @classmethod
    def from_sim(cls, sim, name: str = "sim") -> "ArrayRecording":
        return cls(sim.events, sim.frames, sim.event_indices, name)

    def events(self, a: int, b: int) -> np.ndarray:
        return self._events[a:b]

    def frame(self, i: int) -> np.ndarray:
        return self._check_frame(self._frames[i], i)

    def flow(self, i: int) -> np.ndarray:
        if self._flow is None:
            return super().flow(i)
        return np.asarray(self._flow[i], dtype=np.float32)


Recording = H5Recording | MemmapRecording | ArrayRecording

_GLOB_CHARS = set("*?[")


def _expand(entry: str) -> list[Path]:
    p = Path(entry).expanduser()
    if _GLOB_CHARS & set(entry):
        hits = sorted(Path(h) for h in glob.glob(str(p), recursive=True))
        if not hits:
            raise SourceNotFoundError(f"data entry {entry!r} matches no file")
        return hits
    if not p.exists():
        raise SourceNotFoundError(f"data entry {entry!r}: no such file or folder")
    return [p]


def open_recordings(files: Sequence[str]) -> list[Recording]:
    """Open every data entry: an RLED ``.h5``/``.hdf5`` file, a glob, a prepared memmap folder, or a folder holding
    any of these (searched recursively; memmap folders are not searched further). An h5 file whose prepared folder
    is also found is used once, through the memmap."""
    out: list[Recording] = []
    for entry in files:
        for p in _expand(entry):
            if p.is_dir():
                if (p / "metadata.json").is_file():
                    out.append(MemmapRecording(p))
                    continue
                found = _scan_folder(p)
                if not found:
                    raise SourceNotFoundError(f"data entry {entry!r}: {p} holds no .h5 file and no prepared folder")
                out.extend(found)
            elif p.suffix.lower() in (".h5", ".hdf5"):
                out.append(H5Recording(p))
            else:
                raise SourceError(f"data entry {entry!r}: {p} is neither an RLED .h5 file nor a prepared folder")
    # an h5 file and its prepared copy (prepare writes into DATA_DIR/memmap by default) count once: the memmap
    prepared = {m.metadata.get("source") for m in out if isinstance(m, MemmapRecording)}
    return [r for r in out if not (isinstance(r, H5Recording) and str(r.path.resolve()) in prepared)]


def _scan_folder(root: Path) -> list[Recording]:
    found: list[Recording] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        if "metadata.json" in filenames and d != root:
            found.append(MemmapRecording(d))
            dirnames[:] = []
            continue
        found.extend(H5Recording(d / f) for f in sorted(filenames) if f.lower().endswith((".h5", ".hdf5")))
    return found
