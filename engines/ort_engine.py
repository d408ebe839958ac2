"""ONNX Runtime backend: an exported network of any registered family, recurrent state kept in place by I/O
binding.

Why it is like this: two sets of state buffers are bound ping-pong (inputs from set A, outputs into set B, swap
after the step), so the state never makes a round trip through Python objects; the network input is one bound
buffer the family's representation writes into directly (float32 exports). Idle ORT threads must not spin: the
representation, post-processing and capture share these cores between steps. CPU by default; the CUDA /
TensorRT execution providers are used when installed and asked for. Output-buffer rule: the returned frame is
reused by the next call.
"""

from __future__ import annotations

import os

import numpy as np

from livenight._optional import require

from .base import EngineInfo, ModelEngine
from .sidecar import check_file_hash, check_sidecar, family_parts, read_sidecar


class OnnxRuntimeEngine(ModelEngine):
    """Run an exported ``.onnx`` (with its ``.onnx.json`` sidecar) on windows of events.

    Args:
        path: the ``.onnx`` file.
        sensor_size: ``(width, height)`` of the source; must equal the exported size.
        providers: ORT execution providers (default: CPU).
        threads: intra-op threads (0: ORT's default).
        crop: crop the padded output to the sensor size (None: the family's choice).
        meta: model metadata (default windows); the sidecar's ``windows`` when not given.
    """

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int], providers: list[str] | None = None,
                 threads: int = 0, crop: bool | None = None, meta: dict | None = None) -> None:
        self.path = os.fspath(path)
        self.sidecar = read_sidecar(path)
        check_sidecar(self.sidecar, path, sensor_size)
        self.sensor_size = tuple(int(v) for v in sensor_size)
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self.crop = crop
        self.meta = meta if meta is not None else {"windows": self.sidecar.get("windows")}
        self.info = EngineInfo(name=os.path.basename(self.path), backend="onnxruntime", device=self.providers[0],
                               dtype=self.sidecar["dtype"], sensor_size=self.sensor_size, input_kind="events")

    def _open_impl(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime engine")
        check_file_hash(self.sidecar, self.path)
        meta = self.sidecar
        so = ort.SessionOptions()
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            so.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, so, providers=self.providers)
        family, representation, post = family_parts(meta)
        self._np_dtype = np.float16 if meta["dtype"] == "float16" else np.float32
        shape = meta["input"]["shape"]
        self._grid = np.zeros(shape, dtype=self._np_dtype)
        # float32: the representation writes straight into the bound input; float16: into a float32 buffer
        self._input = self._grid[0] if self._np_dtype == np.float32 else np.zeros(shape[1:], dtype=np.float32)
        self._names = [s["name"] for s in meta["state"]]
        self._sets = [[np.zeros(s["shape"], dtype=self._np_dtype) for s in meta["state"]] for _ in range(2)]
        self._image = np.zeros(meta["output"]["shape"], dtype=self._np_dtype)
        self._ab = 0
        self._binding = [self._bind(a) for a in (0, 1)]
        self._setup(family, representation, post, meta["padded_size"], meta["padding"], shape[1])

    def _bind(self, a: int):
        """An I/O binding that reads state set ``a`` and writes set ``1 − a`` (numpy buffers, bound in place)."""
        b = self.session.io_binding()
        b.bind_cpu_input(self.sidecar["input"]["name"], self._grid)
        for name, arr in zip(self._names, self._sets[a]):
            b.bind_cpu_input(f"{name}_in", arr)
        b.bind_output("image", "cpu", 0, self._image.dtype, self._image.shape, self._image.ctypes.data)
        for name, arr in zip(self._names, self._sets[1 - a]):
            b.bind_output(f"{name}_out", "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
        return b

    def _close_impl(self) -> None:
        self.session = None
        self._binding = None

    def _reset_state(self) -> None:
        for s in self._sets:
            for arr in s:
                arr.fill(0)
        self._ab = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        if x.ctypes.data != self._grid.ctypes.data:  # float16: convert into the bound input
            self._grid[0] = x
        self.session.run_with_iobinding(self._binding[self._ab])
        self._ab = 1 - self._ab  # the state just written becomes the next input
        img = self._image[0, 0]
        return img if img.dtype == np.float32 else img.astype(np.float32)
