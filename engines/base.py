"""The one engine interface every reconstruction backend implements.

Why it is like this: backends differ (a classical filter on raw events, PyTorch, ONNX Runtime, TensorRT), but
the pipeline must not care. Each engine is a context manager that owns its recurrent state; ``step`` consumes one
window and returns one frame; ``reset`` zeroes the state. Shared checks live in :class:`EngineBase` (template
methods); backends implement the ``_*_impl`` methods only.

Output-buffer rule: the array returned by ``step`` may be reused by the next call. Copy it to keep it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from livenight.windowing import Window


@dataclass(frozen=True)
class EngineInfo:
    """Self-description shown by the CLI, the viewer and benchmarks."""

    name: str  # model or algorithm
    backend: str  # "numba", "torch", "onnxruntime", "tensorrt"
    device: str  # "cpu", "cuda:0"
    dtype: str  # "float32", "float16"
    sensor_size: tuple[int, int]  # (width, height) of the frames it returns
    input_kind: Literal["events", "voxel"]


class Engine(Protocol):
    info: EngineInfo

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc: object) -> None: ...

    def reset(self) -> None: ...

    def step(self, window: Window) -> np.ndarray: ...  # (H, W) float32 in [0, 1]; reused by the next call


class EngineBase:
    """Life cycle and checks shared by all engines."""

    info: EngineInfo
    _active = False
    #: seconds spent per stage since the engine was made ("letc", "net"; backends add what they measure)
    stage_s: dict[str, float]

    @contextmanager
    def _timed(self, stage: str):
        if not hasattr(self, "stage_s"):
            self.stage_s = {}
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + time.perf_counter() - t0

    def __enter__(self):
        self._open_impl()
        self._active = True
        self.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._active:
            self._active = False
            self._close_impl()

    def reset(self) -> None:
        """Zero the recurrent state (new source, long gap, resolution change, user request)."""
        self._reset_impl()

    def step(self, window: Window) -> np.ndarray:
        """Reconstruct one frame from one window. The returned array is reused by the next call."""
        if not self._active:
            raise RuntimeError(f"{type(self).__name__} is not open; use it in a 'with' block")
        if window.reset:
            self.reset()
        return self._step_impl(window)

    # backends override these
    def _open_impl(self) -> None:
        pass

    def _close_impl(self) -> None:
        pass

    def _reset_impl(self) -> None:
        raise NotImplementedError

    def _step_impl(self, window: Window) -> np.ndarray:
        raise NotImplementedError
