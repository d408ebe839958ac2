"""dv-processing helpers shared by the aedat4, DAVIS and network drivers (private).

Nothing here imports ``dv_processing`` at module level: the functions take dv objects that the caller already
has, and :func:`dv_module` imports the package with the install hint when it is missing.
"""

from __future__ import annotations

import datetime
from types import ModuleType

import numpy as np

from livenight._optional import require
from livenight.errors import SourceError
from livenight.events import EVENT_DTYPE

_ONE_US = datetime.timedelta(microseconds=1)


def dv_module(purpose: str) -> ModuleType:
    """``import dv_processing`` or raise MissingDependencyError naming ``pip install 'livenight[davis]'``."""
    return require("dv_processing", purpose)


def store_to_events(store, sensor_size: tuple[int, int] | None, what: str) -> np.ndarray:
    """Convert a ``dv.EventStore`` to an :data:`EVENT_DTYPE` array (one copy), checking sensor bounds.

    dv's layout is ``timestamp`` int64 µs, ``x``/``y`` int16, ``polarity`` int8 0/1 (1 = brighter), so the
    conversion is a field-by-field copy; coordinates are checked on the signed values before the cast to uint16.
    """
    raw = store.numpy()
    n = int(raw.shape[0])
    ev = np.empty(n, dtype=EVENT_DTYPE)
    if n == 0:
        return ev
    x, y = raw["x"], raw["y"]
    if sensor_size is not None:
        width, height = sensor_size
        bad = np.flatnonzero((x < 0) | (y < 0) | (x >= width) | (y >= height))
        if bad.size:
            j = int(bad[0])
            raise SourceError(f"{what}: event at (x={int(x[j])}, y={int(y[j])}), t={int(raw['timestamp'][j])} µs "
                              f"lies outside the {width}x{height} sensor")
    ev["t"] = raw["timestamp"]
    ev["x"] = x
    ev["y"] = y
    ev["p"] = raw["polarity"] != 0
    return ev


def events_to_store(dv: ModuleType, events: np.ndarray):
    """Build a ``dv.EventStore`` from :data:`EVENT_DTYPE` events.

    dv-processing 2.0.4 has no bulk numpy constructor, so this is a Python loop (~1 M events/s): fine for tests
    and file output, not for a hot path.
    """
    store = dv.EventStore()
    for t, x, y, p in zip(events["t"].tolist(), events["x"].tolist(), events["y"].tolist(), events["p"].tolist()):
        store.push_back(t, x, y, bool(p))
    return store


def exposure_us(frame) -> int:
    """A ``dv.Frame``'s exposure duration in integer µs (dv gives a ``timedelta``)."""
    exp = frame.exposure
    if isinstance(exp, datetime.timedelta):
        return int(exp // _ONE_US)
    return int(exp)


def frame_to_grey(frame, sensor_size: tuple[int, int]) -> np.ndarray:
    """A ``dv.Frame``'s image as (H, W) uint8 on the full sensor.

    Colour frames (BGR, as dv stores them) are converted with the BT.601 luma weights; a frame smaller than the
    sensor (an APS region of interest) is placed at its ``positionX/Y`` on a black canvas.
    """
    img = np.asarray(frame.image)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        else:
            b, g, r = (img[:, :, k].astype(np.float32) for k in range(3))
            img = np.clip(np.rint(0.114 * b + 0.587 * g + 0.299 * r), 0, 255).astype(np.uint8)
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:  # some DAVIS pipelines keep 16-bit APS values
            img = (img >> 8).astype(np.uint8)
        else:
            raise SourceError(f"frame at t={frame.timestamp} µs has dtype {img.dtype}, expected uint8 or uint16")
    width, height = sensor_size
    if img.shape == (height, width):
        return np.ascontiguousarray(img)
    x0, y0 = int(getattr(frame, "positionX", 0)), int(getattr(frame, "positionY", 0))
    h, w = img.shape
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise SourceError(f"frame at t={frame.timestamp} µs: a {w}x{h} image at ({x0}, {y0}) does not fit the "
                          f"{width}x{height} sensor")
    canvas = np.zeros((height, width), dtype=np.uint8)
    canvas[y0:y0 + h, x0:x0 + w] = img
    return canvas
