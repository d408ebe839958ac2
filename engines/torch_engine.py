"""PyTorch engine for NER-Net-family models: the reference backend (CPU, or CUDA when present).

Each step: the window's events go through LETC's quantisation (lookup-table scatter on the CPU by default, or the
exact per-event MLP with ``exact_letc=True``), then the network runs with the recurrent state this engine owns
(kept on the engine's device between calls). Output-buffer rule: the returned array is reused by the next call.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Literal

import numpy as np

from livenight.windowing import Window

from .base import EngineBase, EngineInfo


class TorchEngine(EngineBase):
    """Run a :class:`~livenight.model.nernet.NERNet` on windows of events.

    Args:
        model: a checkpoint path, a built ``NERNet``, or a zero-argument callable returning one (built on open).
        sensor_size: ``(width, height)`` of the source.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        dtype: network precision (float16 / bfloat16 only on CUDA).
        exact_letc: use the official per-event MLP instead of the lookup table (slow; reference path).
        crop: crop the padded output back to the sensor size (the official inference does not).
    """

    def __init__(self, model, sensor_size: tuple[int, int], device: str = "cpu",
                 dtype: Literal["float32", "float16", "bfloat16"] = "float32", exact_letc: bool = False,
                 crop: bool = False, name: str | None = None) -> None:
        self._model_arg = model
        self.sensor_size = tuple(int(v) for v in sensor_size)
        self.device_name = device
        self.dtype_name = dtype
        self.exact_letc = exact_letc
        self.crop = crop
        if dtype != "float32" and not device.startswith("cuda"):
            raise ValueError(f"dtype {dtype} needs a CUDA device (got device {device!r}); use float32 on the CPU")
        label = name or (os.path.basename(model) if isinstance(model, (str, os.PathLike)) else "NER-Net")
        # the output size (padded to the model's multiple unless cropped) is set once the model is built, on open
        self.info = EngineInfo(name=str(label), backend="torch", device=device, dtype=dtype,
                               sensor_size=self.sensor_size, input_kind="events")

    def _build(self):
        from livenight.model.checkpoint import load_model
        from livenight.model.nernet import NERNet

        m = self._model_arg
        if isinstance(m, (str, os.PathLike)):
            return load_model(m, self.sensor_size)
        if isinstance(m, NERNet):
            return m
        if callable(m):
            return m()
        raise TypeError(f"model must be a path, a NERNet or a callable returning one (got {type(m).__name__})")

    def _open_impl(self) -> None:
        import torch

        from livenight.letc import LetcTable

        self._torch = torch
        model = self._build()
        if tuple(model.cfg.sensor_size) != self.sensor_size:
            raise ValueError(f"model was built for {model.cfg.sensor_size[0]}x{model.cfg.sensor_size[1]} but the "
                             f"source is {self.sensor_size[0]}x{self.sensor_size[1]}")
        self.model = model.eval()
        self.cfg = model.cfg
        self.device = torch.device(self.device_name)
        self.dtype = getattr(torch, self.dtype_name)
        self.net = model.to(self.device, self.dtype) if not self.exact_letc else model.to(self.device)
        self.table = LetcTable.from_model(model)
        w, h = self.sensor_size
        self._grid = np.empty((h, w, self.cfg.in_channels), dtype=np.float32)
        self.info = replace(self.info, device=str(self.device),
                            sensor_size=self.sensor_size if self.crop else self.cfg.padded_size)
        self._left, _, self._top, _ = self.cfg.padding()

    def _close_impl(self) -> None:
        self.state = None

    def _reset_impl(self) -> None:
        self.state = self.model.initial_state(device=self.device, dtype=self.dtype)

    def grid(self, window: Window):
        """The LETC quantisation grid ``[1, 2C, H, W]`` of a window, on the engine's device."""
        torch = self._torch
        if self.exact_letc:
            from livenight.letc import official_times

            ev = window.events
            with torch.no_grad():
                g = self.model.quantize(torch.from_numpy(ev["x"].astype(np.int64)),
                                        torch.from_numpy(ev["y"].astype(np.int64)),
                                        torch.from_numpy(official_times(ev["t"])),
                                        torch.from_numpy(ev["p"].astype(np.float32) * 2 - 1))
            return g.to(self.device, self.dtype)
        hwc = self.table.grid(window.events, self.sensor_size, self._grid)
        g = torch.from_numpy(hwc).permute(2, 0, 1).unsqueeze(0)  # channels-last view, no copy
        return g.to(self.device, self.dtype, non_blocking=True)

    def _step_impl(self, window: Window) -> np.ndarray:
        torch = self._torch
        with self._timed("letc"):
            grid = self.grid(window)
        with self._timed("net"), torch.inference_mode():
            img, self.state = self.net(grid, self.state)
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
        out = img[0, 0]
        if self.crop:
            w, h = self.sensor_size
            out = out[self._top:self._top + h, self._left:self._left + w]
        return out.float().cpu().numpy()
