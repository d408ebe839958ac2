"""PNG folders (``--out DIR``) and the sink that discards (benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from livenight.render import event_frame

from .base import Frame


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
