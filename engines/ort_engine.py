"""ONNX Runtime engine: the exported NER-Net graph with the recurrent state kept in place by I/O binding.

Why it is like this: two sets of state ``OrtValue`` buffers are bound ping-pong (inputs from set A, outputs into
set B, swap after the step), so the state never makes a round trip through Python objects; the grid input is one
bound buffer updated in place. CPU everywhere; the CUDA / TensorRT execution providers are used when installed and
asked for. Output-buffer rule: the returned frame is reused by the next call.
"""

from __future__ import annotations

import os

import numpy as np

from livenight._optional import require
from livenight.windowing import Window

from .base import EngineBase, EngineInfo
from .export import check_sidecar, read_sidecar


class OnnxRuntimeEngine(EngineBase):
    """Run an exported ``.onnx`` (with its ``.onnx.json`` sidecar) on windows of events.

    Args:
        path: the ``.onnx`` file.
        sensor_size: ``(width, height)`` of the source; must equal the exported size.
        providers: ORT execution providers (default: CPU).
        threads: intra-op threads (0: ORT's default).
        crop: crop the padded output back to the sensor size.
    """

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int], providers: list[str] | None = None,
                 threads: int = 0, crop: bool = False) -> None:
        self.path = os.fspath(path)
        self.meta = read_sidecar(path)
        check_sidecar(self.meta, path, sensor_size)
        self.sensor_size = tuple(int(v) for v in sensor_size)
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self.crop = crop
        pw, ph = self.meta["padded_size"]
        self.info = EngineInfo(name=os.path.basename(self.path), backend="onnxruntime", device=self.providers[0],
                               dtype=self.meta["dtype"], sensor_size=self.sensor_size if crop else (pw, ph),
                               input_kind="events")

    def _open_impl(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime engine")
        from livenight.letc import LetcTable

        so = ort.SessionOptions()
        # idle ORT threads must not spin: LETC, post-processing and capture share these cores between steps
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            so.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, so, providers=self.providers)
        self.table = LetcTable.from_json(self.meta["letc"])
        self._np_dtype = np.float16 if self.meta["dtype"] == "float16" else np.float32
        w, h = self.sensor_size
        c = self.meta["bins"] * 2
        self._hwc = np.empty((h, w, c), dtype=np.float32)
        self._grid = np.zeros((1, c, h, w), dtype=self._np_dtype)
        self._names = [s["name"] for s in self.meta["state"]]
        self._sets = [[np.zeros(s["shape"], dtype=self._np_dtype) for s in self.meta["state"]] for _ in range(2)]
        self._image = np.zeros(self.meta["output"]["shape"], dtype=self._np_dtype)
        self._out = np.zeros(self.meta["output"]["shape"][2:], dtype=np.float32)
        self._ab = 0
        self._binding = [self._bind(a) for a in (0, 1)]
        left, _, top, _ = self.meta["padding"]
        self._left, self._top = left, top

    def _bind(self, a: int):
        """An I/O binding that reads state set ``a`` and writes set ``1 − a`` (numpy buffers, bound in place)."""
        b = self.session.io_binding()
        b.bind_cpu_input("grid", self._grid)
        for name, arr in zip(self._names, self._sets[a]):
            b.bind_cpu_input(f"{name}_in", arr)
        b.bind_output("image", "cpu", 0, self._image.dtype, self._image.shape, self._image.ctypes.data)
        for name, arr in zip(self._names, self._sets[1 - a]):
            b.bind_output(f"{name}_out", "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
        return b

    def _close_impl(self) -> None:
        self.session = None
        self._binding = None

    def _reset_impl(self) -> None:
        for s in self._sets:
            for arr in s:
                arr.fill(0)
        self._ab = 0

    def _step_impl(self, window: Window) -> np.ndarray:
        with self._timed("letc"):
            if self._np_dtype == np.float32:  # scatter straight into the bound input buffer
                self.table.grid_into_chw(window.events, self.sensor_size, self._grid[0])
            else:
                hwc = self.table.grid(window.events, self.sensor_size, self._hwc)
                self._grid[0] = hwc.transpose(2, 0, 1)
        with self._timed("net"):
            self.session.run_with_iobinding(self._binding[self._ab])
        self._ab = 1 - self._ab  # the state just written becomes the next input
        img = self._image[0, 0]
        if self.crop:
            w, h = self.sensor_size
            img = img[self._top:self._top + h, self._left:self._left + w]
            return img.astype(np.float32)
        np.copyto(self._out, img)
        return self._out
