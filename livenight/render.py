"""Turning engine output and event windows into 8-bit pictures (pure functions; inputs are never modified)."""

from __future__ import annotations

import numpy as np

from .events import EVENT_DTYPE

#: RGB colours of the official NER-Net event frames: white background, ON red, OFF blue, last event wins
EVENT_COLOURS = {"background": (255, 255, 255), "on": (255, 0, 0), "off": (0, 0, 255)}


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """``clip(frame, 0, 1) · 255`` truncated to uint8: the official NER-Net output conversion."""
    return (np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)


def event_frame(events: np.ndarray, sensor_size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture of a window: the last event at each pixel sets its colour."""
    if events.dtype != EVENT_DTYPE:
        raise ValueError(f"event_frame expects EVENT_DTYPE events (got {events.dtype})")
    width, height = sensor_size
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[...] = EVENT_COLOURS["background"]
    if events.size:
        flat = events["y"].astype(np.int64) * width + events["x"]
        # the last occurrence of each pixel wins: take unique indices on the reversed order
        rev_flat = flat[::-1]
        pix, first_in_rev = np.unique(rev_flat, return_index=True)
        on = events["p"][::-1][first_in_rev].astype(bool)
        colours = np.where(on[:, None], np.array(EVENT_COLOURS["on"], np.uint8),
                           np.array(EVENT_COLOURS["off"], np.uint8))
        img.reshape(-1, 3)[pix] = colours
    return img
