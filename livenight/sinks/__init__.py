"""Where reconstructed frames go when there is no window: PNG folders (and, for benchmarks, nowhere).

A sink receives :class:`Frame` objects in order. ``close()`` is always called (also after an error), so what was
written before a failure stays valid on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .frames import event_frame


@dataclass(frozen=True)
class Frame:
    """One reconstruction and what it came from."""

    number: int  # output counter: 0, 1, 2, … (file names use it)
    image: np.ndarray  # (H, W) uint8
    window_index: int
    t0_us: int
    t1_us: int
    events: np.ndarray  # the window's events (for event frames)
    sensor_size: tuple[int, int]
    reference: np.ndarray | None = None  # (H, W) uint8 ground-truth / APS frame, when the source has one
    host_time_s: float = 0.0  # monotonic time the newest contributing packet arrived


class FrameSink(Protocol):
    def write(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".part")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)  # a reader never sees a half-written PNG


class PngSink:
    """``DIR/frame_00000.png …``; with ``save_gt`` also ``DIR/gt/frame_*.png``; with ``save_evframe``
    ``DIR/events/evs_*.png``."""

    def __init__(self, out_dir: str | os.PathLike, save_gt: bool = False, save_evframe: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.save_gt = save_gt
        self.save_evframe = save_evframe
        if save_gt:
            (self.out_dir / "gt").mkdir(exist_ok=True)
        if save_evframe:
            (self.out_dir / "events").mkdir(exist_ok=True)
        self.written = 0

    def write(self, frame: Frame) -> None:
        n = frame.number
        _save_png(self.out_dir / f"frame_{n:05d}.png", frame.image)
        if self.save_gt and frame.reference is not None:
            _save_png(self.out_dir / "gt" / f"frame_{n:05d}.png", frame.reference)
        if self.save_evframe:
            _save_png(self.out_dir / "events" / f"evs_{n:05d}.png", event_frame(frame.events, frame.sensor_size))
        self.written += 1

    def close(self) -> None:
        pass


class NullSink:
    """Discards frames (benchmarks)."""

    written = 0

    def write(self, frame: Frame) -> None:
        self.written += 1

    def close(self) -> None:
        pass
