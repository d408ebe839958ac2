"""``livenight prepare``: RLED h5 files → memory-mapped folders for fast training reads."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError, SourceNotFoundError
from .synthetic import _bar


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def prepare_file(h5_path: str | os.PathLike, dest: str | os.PathLike, chunk_events: int = 1 << 20) -> Path:
    """Convert one RLED h5 into a memmap folder (written to ``dest.partial`` and renamed when complete)."""
    import h5py

    from ..drivers.rled import RledFile

    h5_path, dest = Path(h5_path), Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with RledFile(h5_path) as f:
        if f.event_indices is None:
            raise SourceError(f"{h5_path}: no 'event_indices' dataset; cannot define training windows")
        n, (w, h) = f.num_events, f.sensor_size
        t = np.lib.format.open_memmap(tmp / "t.npy", "w+", np.int64, (n,))
        xy = np.lib.format.open_memmap(tmp / "xy.npy", "w+", np.int16, (n, 2))
        p = np.lib.format.open_memmap(tmp / "p.npy", "w+", np.uint8, (n,))
        for a, ev in f.iter_chunks(chunk_events):
            b = a + ev.size
            t[a:b] = ev["t"]
            xy[a:b, 0] = ev["x"]
            xy[a:b, 1] = ev["y"]
            p[a:b] = ev["p"]
        for arr in (t, xy, p):
            arr.flush()
        del t, xy, p
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (f.num_images, h, w))
        for i in range(f.num_images):
            images[i] = f.image(i)
        images.flush()
        del images
        np.save(tmp / "timestamps.npy", f.image_timestamps_us())
        np.save(tmp / "event_indices.npy", f.event_indices.astype(np.int64))
        num_images = f.num_images
    with h5py.File(h5_path, "r") as raw:
        attrs = {k: _jsonable(v) for k, v in raw.attrs.items()}
        if "flow" in raw and len(raw["flow"]):
            flow = np.lib.format.open_memmap(tmp / "flow.npy", "w+", np.float32, (num_images, 2, h, w))
            for i in range(num_images):
                flow[i] = raw["flow"][f"flow{i:09d}"][()]
            flow.flush()
            del flow
    st = h5_path.stat()
    meta = {**attrs, "sensor_resolution": [h, w], "sensor_size": [w, h], "num_events": n, "num_images": num_images,
            "t_unit": "us", "livenight_memmap": 1, "source": str(h5_path.resolve()), "source_size": st.st_size,
            "source_mtime_ns": st.st_mtime_ns}
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _up_to_date(h5_path: Path, dest: Path) -> bool:
    try:
        meta = json.loads((dest / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    st = h5_path.stat()
    return meta.get("source_size") == st.st_size and meta.get("source_mtime_ns") == st.st_mtime_ns


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, overwrite: bool = False,
            progress: bool = True) -> dict:
    """Convert every RLED h5 under ``data_dir`` (recursively; or one file) into memory-mapped folders.

    Each ``DATA_DIR/a/b.h5`` becomes ``OUT/a/b/`` holding ``t.npy`` int64 µs ``[N]``, ``xy.npy`` int16 ``[N, 2]``,
    ``p.npy`` uint8 ``[N]`` (1 = ON), ``images.npy`` uint8 ``[n, H, W]``, ``timestamps.npy`` int64 µs ``[n]`` (exposure
    ends), ``event_indices.npy`` int64 ``[n, 2]``, ``flow.npy`` when the h5 has flow, and ``metadata.json`` (the h5
    attributes, ``sensor_resolution`` as ``[H, W]`` like the official converter, ``sensor_size`` as ``[W, H]``).
    Folders whose source is unchanged (size and mtime) are skipped. ``out_dir`` defaults to ``DATA_DIR/memmap``.

    Returns:
        ``{"out_dir", "prepared": [folders], "skipped": [folders]}``.
    """
    src = Path(data_dir).expanduser()
    if not src.exists():
        raise SourceNotFoundError(f"{src}: no such file or folder")
    root = src.parent if src.is_file() else src
    out = Path(out_dir).expanduser() if out_dir else root / "memmap"
    if src.is_file():
        files = [src]
    else:
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".h5", ".hdf5") and p.is_file()
                       and out.resolve() not in p.resolve().parents)
    if not files:
        raise SourceNotFoundError(f"{src}: no .h5 / .hdf5 file found")
    prepared, skipped = [], []
    for f in _bar(files, progress, "prepare"):
        dest = out / f.relative_to(root).with_suffix("")
        if not overwrite and _up_to_date(f, dest):
            skipped.append(str(dest))
            continue
        prepare_file(f, dest)
        prepared.append(str(dest))
    return {"out_dir": str(out), "prepared": prepared, "skipped": skipped}


def run_prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """CLI entry: ``livenight prepare DATA_DIR [--out DIR]``; see :func:`prepare`."""
    return prepare(data_dir, out_dir)
