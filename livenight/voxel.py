"""The E2VID voxel grid (bilinear in time) and the voxel normalisations of the E2VID family.

Why it is like this:

* Definition (rpg_e2vid ``events_to_voxel_grid``, used unchanged by E2VID, E2VID+, FireNet, FireNet+ and EVREAL):
  ``ts = (B−1)·(t − t_first)/(t_last − t_first)`` (``t_last − t_first`` taken as 1 when it is 0), polarity ±1,
  each event adds ``pol·(1 − (ts − ⌊ts⌋))`` to bin ``⌊ts⌋`` and ``pol·(ts − ⌊ts⌋)`` to bin ``⌊ts⌋+1`` when that bin
  exists. Times are normalised by the window's first and last *event*, not by the window bounds: that is what
  the networks were trained on.
* Time arithmetic stays in int64 µs: ``(B−1)·(t − t_first)`` is an exact integer, divided once in float64, so a
  stream hours long loses nothing (float32 loses µs past 16.8 s).
* Pure: the reference implementation rewrites the caller's polarity and timestamp arrays in place; these
  functions never write to their inputs (only to ``out`` when given).
* Fast: a numba scatter reading the packed event records directly (``livenight._voxel_kernel``, compiled on
  first use); without numba, one ``np.bincount`` over left and right contributions (``formats.md`` §8).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ._optional import has
from .errors import ShapeError, SourceError
from .events import EVENT_DTYPE

Backend = Literal["auto", "numba", "numpy"]

_kernel = None


def _numba_kernel():
    """The compiled kernel module, imported on first use (``None`` when numba is not installed)."""
    global _kernel
    if _kernel is None and has("numba"):
        from . import _voxel_kernel

        _kernel = _voxel_kernel
    return _kernel


def _use_numba(backend: Backend) -> bool:
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy' (got {backend!r})")
    if backend == "numpy":
        return False
    if _numba_kernel() is None:
        if backend == "numba":
            from ._optional import require

            require("numba", "the numba voxel grid")
        return False
    return True


def _check_out(out: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape \
            or not out.flags.c_contiguous or not out.flags.writeable:
        got = f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        raise ShapeError(f"{what}: out must be a writable C-contiguous float32 array of shape {shape} (got {got})")
    return out


def voxel_grid(events: np.ndarray, num_bins: int, sensor_size: tuple[int, int], out: np.ndarray | None = None,
               backend: Backend = "auto") -> np.ndarray:
    """The E2VID voxel grid ``[num_bins, H, W]`` (float32) of one window of events.

    Args:
        events: time-sorted :data:`~livenight.events.EVENT_DTYPE` array (never modified).
        num_bins: B, the number of temporal bins (5 for every E2VID-family checkpoint).
        sensor_size: ``(width, height)``; every event must lie inside.
        out: optional ``[B, H, W]`` float32 C-contiguous buffer, overwritten and returned (reuse it per window).
        backend: ``"auto"`` (numba when installed), ``"numba"`` or ``"numpy"`` (``np.bincount``).

    Returns:
        ``out`` (or a new array) holding the grid. An empty window gives zeros.

    Example:
        >>> from livenight.events import make_events
        >>> ev = make_events([0, 50, 100], [0, 1, 2], [0, 0, 0], [1, 0, 1])
        >>> v = voxel_grid(ev, 3, (4, 1))
        >>> v[:, 0, :3].tolist()
        [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        got = getattr(events, "dtype", type(events).__name__)
        raise ShapeError(f"voxel_grid: expected a 1-D array of livenight.events.EVENT_DTYPE (got {got})")
    num_bins = int(num_bins)
    if num_bins < 1:
        raise ValueError(f"voxel_grid: num_bins must be >= 1 (got {num_bins})")
    width, height = (int(v) for v in sensor_size)
    out = _check_out(out, (num_bins, height, width), "voxel_grid")
    if events.size == 0:
        out.fill(0.0)
        return out
    x, y = events["x"], events["y"]
    if int(x.max()) >= width or int(y.max()) >= height:
        j = int(np.flatnonzero((x >= width) | (y >= height))[0])
        raise SourceError(f"voxel_grid: event {j} at (x={int(x[j])}, y={int(y[j])}) lies outside the "
                          f"{width}x{height} sensor")
    if _use_numba(backend):
        _numba_kernel().scatter(out, events, num_bins)
        return out
    return _voxel_grid_bincount(events, num_bins, width, height, out)


def _voxel_grid_bincount(events, num_bins, width, height, out):
    t = events["t"]
    d = t - t[0]  # int64, exact
    den = int(t[-1] - t[0]) or 1
    ts = (d * (num_bins - 1)).astype(np.float64) / np.float64(den)
    fl = np.floor(ts)
    ti = fl.astype(np.int64)
    frac = ts - fl
    pol = events["p"].astype(np.float64) * 2.0 - 1.0
    base = events["x"].astype(np.int64) + width * events["y"].astype(np.int64)
    plane = width * height
    left_ok = (ti >= 0) & (ti < num_bins)
    right_ok = (ti + 1 >= 0) & (ti + 1 < num_bins)
    idx = np.concatenate([np.where(left_ok, base + plane * ti, 0), np.where(right_ok, base + plane * (ti + 1), 0)])
    w = np.concatenate([np.where(left_ok, pol * (1.0 - frac), 0.0), np.where(right_ok, pol * frac, 0.0)])
    out.reshape(-1)[:] = np.bincount(idx, weights=w, minlength=num_bins * plane)
    return out


def normalize_voxel(v: np.ndarray, out: np.ndarray | None = None, backend: Backend = "auto") -> np.ndarray:
    """E2VID's event-tensor normalisation: the **non-zero** entries to mean 0 and standard deviation 1.

    As rpg_e2vid's ``EventPreprocessor`` and event_cnn_minimal's ``LegacyNorm`` compute it: over the non-zero
    entries, ``mean = Σv / n`` and ``std = sqrt(Σv² / n − mean²)`` (population std), then
    ``v ← (v − mean) / std`` there; zeros stay zero. A grid with no non-zero entry is returned unchanged.
    Where the reference would divide by a zero std (all non-zero entries equal), they become 0 instead of NaN.

    Args:
        v: float32 array of any shape (never modified unless ``out is v``).
        out: optional float32 C-contiguous array of the same shape (may be ``v`` itself for in-place use).
        backend: ``"auto"``, ``"numba"`` or ``"numpy"``.

    Example:
        >>> normalize_voxel(np.array([0, 1, 3], np.float32)).tolist()
        [0.0, -1.0, 1.0]
    """
    v = np.asarray(v)
    if v.dtype != np.float32:
        raise ShapeError(f"normalize_voxel: expected a float32 array (got {v.dtype})")
    out = _check_out(out, v.shape, "normalize_voxel")
    src = np.ascontiguousarray(v).reshape(-1)
    dst = out.reshape(-1)
    numba_ok = _use_numba(backend)
    if numba_ok:
        n, s, ss = _numba_kernel().nonzero_moments(src)
    else:
        nz = src[src != 0].astype(np.float64)
        n, s, ss = nz.size, float(nz.sum()), float(np.dot(nz, nz))
    if n == 0:
        if out is not v:
            dst[:] = src
        return out
    mean = s / n
    var = ss / n - mean * mean
    std = float(np.sqrt(var)) if var > 0 else 0.0
    if not np.isfinite(std) or std == 0.0:
        std = 1.0  # all non-zero entries equal the mean: they become 0
    if numba_ok:
        _numba_kernel().apply_norm(src, dst, mean, std)
    else:
        mask = src != 0
        res = (src - np.float32(mean)) / np.float32(std)
        dst[:] = np.where(mask, res, np.float32(0.0))
    return out


def robust_normalize_voxel(v: np.ndarray, low_perc: float = 0.0, top_perc: float = 95.0) -> np.ndarray:
    """event_cnn_minimal's ``RobustNorm`` (an alternative input normalisation; not used by the official models).

    Percentiles by nearest rank (``k = round(q/100 · (n − 1))`` of the sorted values); the grid is clamped to
    ``[p_low, p_top]``, then ``(v − min) / (max + 1e-6)``. Returned unchanged when both percentiles are 0.
    Returns a new float32 array.
    """
    v = np.asarray(v, dtype=np.float32)
    flat = v.reshape(-1)
    if flat.size == 0:
        return v.copy()
    n = flat.size

    def perc(q: float) -> np.float32:
        k = int(round(0.01 * float(q) * (n - 1)))
        return np.partition(flat, k)[k]

    hi, lo = perc(top_perc), perc(low_perc)
    if hi == 0 and lo == 0:
        return v.copy()
    c = np.clip(v, lo, hi)
    return ((c - c.min()) / (c.max() + np.float32(1e-6))).astype(np.float32)
