"""The one engine interface every reconstruction backend implements.

Why it is like this: backends differ (a classical filter on raw events, PyTorch, ONNX Runtime, TensorRT), but
the pipeline must not care. Each engine is a context manager that owns its recurrent state; ``step`` consumes one
window and returns one frame; ``reset`` zeroes the state. Shared checks live in :class:`EngineBase` (template
methods); backends implement the ``_*_impl`` methods only.

Neural backends derive from :class:`ModelEngine`, which does what is the same for every backend once: the
family's input representation (numpy), the family's post-processing and the crop, the stage timings and the
default window policy. A backend only opens its runtime, runs ``input → padded output`` with the recurrent state
it owns, and zeroes that state.

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

    def default_windows(self, event_indices=None): ...  # the window policy this engine's model was trained with


class EngineBase:
    """Life cycle and checks shared by all engines."""

    info: EngineInfo
    _active = False
    #: seconds spent per stage since the engine was made ("represent", "net", "postprocess"; backends may add more)
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

    def default_windows(self, event_indices=None):
        from livenight.windowing import TimeWindows

        return TimeWindows(40_000, 40_000)

    def windows_for_source(self, source):
        """``(policy, note)``: the windows this engine's model was trained with, for ``source`` (its RLED indices
        where the model uses them), adjusted to a sensor larger than the one they were chosen for (the model's
        ``meta["sensor_size"]``, else 346×260); ``note`` says why when they were adjusted, else None."""
        from livenight.windowing import windows_for_sensor

        trained = (getattr(self, "meta", None) or {}).get("sensor_size")
        default = self.default_windows(getattr(source, "event_indices", None))
        policy, why = windows_for_sensor(default, source.sensor_size, tuple(trained) if trained else None)
        return policy, (why if policy is not default else None)


class ModelEngine(EngineBase):
    """A neural network of a registered model family, run by a backend.

    Set by the backend in ``_open_impl``: ``family``, ``representation``, ``post``, ``padded_size`` (w, h),
    ``padding`` (left, right, top, bottom) and, optionally, ``_input`` (a ``[C, H, W]`` float32 buffer the
    representation writes into, e.g. the backend's bound input). Backends implement ``_run(x) -> [Hp, Wp]`` and
    ``_reset_state()``.

    Args (common to every backend):
        crop: crop the padded output to the sensor size (None: the family's choice — NER-Net keeps the official
            padded frames, the E2VID family crops).
        meta: the model's metadata (a bundled model's JSON: its default windows, description).
    """

    family = None
    meta: dict | None = None
    crop: bool | None = None

    def _setup(self, family, representation, post, padded_size, padding, channels: int) -> None:
        """Called by backends at the end of ``_open_impl``: everything that is the same for every backend."""
        self.family, self.representation, self.post = family, representation, post
        w, h = self.sensor_size
        if self.crop is None:
            self.crop = family.crop_by_default
        self.padded_size = tuple(int(v) for v in padded_size)
        self.padding = tuple(int(v) for v in padding)
        left, _, top, _ = self.padding
        self._crop_box = (left, top, w, h) if self.crop else None
        if getattr(self, "_input", None) is None:
            self._input = np.zeros((channels, h, w), dtype=np.float32)
        out_w, out_h = (w, h) if self.crop else self.padded_size
        self._out = np.zeros((out_h, out_w), dtype=np.float32)
        from dataclasses import replace

        self.info = replace(self.info, sensor_size=(out_w, out_h))
        self._warm_up()

    def _warm_up(self) -> None:
        """Run one throw-away window at open (JIT compilation, kernel and memory set-up: ~0.5 s on a CPU), so
        the first real window is as fast as the rest; a live source would otherwise skip the windows that
        arrived meanwhile. ``__enter__`` resets the state afterwards."""
        from livenight.events import EVENT_DTYPE

        events = np.zeros(2, dtype=EVENT_DTYPE)
        events["t"] = (0, 1)
        events["p"] = (0, 1)
        self._reset_state()
        x = self.representation(events, self.sensor_size, self._input)
        self.post(self._run(x), self._crop_box)

    def _reset_impl(self) -> None:
        self._reset_state()
        self.post.reset()

    def _step_impl(self, window: Window) -> np.ndarray:
        with self._timed("represent"):
            x = self.representation(window.events, self.sensor_size, self._input)
        with self._timed("net"):
            img = self._run(x)
        with self._timed("postprocess"):
            np.copyto(self._out, self.post(img, self._crop_box))
        return self._out

    def default_windows(self, event_indices=None):
        return self.family.default_windows(self.meta, event_indices)

    # backends override these
    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reset_state(self) -> None:
        raise NotImplementedError
