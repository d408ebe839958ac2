"""TensorRT engine (10.x and 11.x): build a strongly typed plan from the FP16 ONNX, run it with torch CUDA buffers.

Why it is like this (kept small on purpose, to be read against NVIDIA's documentation):

* One code path for TensorRT 10 and 11: 11 removed ``BuilderFlag.FP16`` and weak typing, so FP16 lives in the
  ONNX graph (``livenight export --fp16``) and the network is created ``STRONGLY_TYPED`` (required on 10.x,
  accepted on 11.x).
* Buffers are torch CUDA tensors bound by tensor name (``set_tensor_address``); no PyCUDA (it conflicts with
  PyTorch in one process). ``execute_async_v3`` runs on the current torch stream.
* The recurrent state lives in two buffer sets swapped every step (ping-pong): a buffer is never bound as both
  input and output, and nothing is copied.
* CUDA graphs freeze addresses, so one graph is captured per ping-pong parity.
* A plan is specific to the GPU and the TensorRT version: the sidecar records both, and loading refuses a plan
  built elsewhere with a sentence that says how to rebuild.

Not run in CI (no GPU, TensorRT not installable there); tests carry the ``tensorrt`` marker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from livenight._optional import require
from livenight.errors import EngineMismatchError, SourceError
from livenight.windowing import Window

from .base import EngineBase, EngineInfo
from .sidecar import check_sidecar, read_sidecar, sidecar_path


def _trt():
    return require("tensorrt", "the TensorRT engine")


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, workspace_mib: int = 4096,
                 timing_cache: str | os.PathLike | None = None) -> dict:
    """Parse the ONNX, build a serialized plan, write it and its sidecar (ONNX sidecar + TensorRT/GPU facts)."""
    trt = _trt()
    torch = require("torch")
    meta = read_sidecar(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SourceError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SourceError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    Path(engine_path).write_bytes(bytes(plan))
    if timing_cache:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    meta = dict(meta)
    meta["tensorrt"] = {"version": trt.__version__, "gpu": torch.cuda.get_device_name(),
                        "compute_capability": list(torch.cuda.get_device_capability()), "onnx": Path(onnx_path).name}
    sidecar_path(engine_path).write_text(json.dumps(meta, indent=1))
    return meta


class TensorRTEngine(EngineBase):
    """Run a ``.engine`` / ``.plan`` built by :func:`build_engine` on windows of events (CUDA only)."""

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int], device: str = "cuda",
                 cuda_graph: bool = False, crop: bool = False) -> None:
        self.path = os.fspath(path)
        self.meta = read_sidecar(path)
        check_sidecar(self.meta, path, sensor_size)
        self.sensor_size = tuple(int(v) for v in sensor_size)
        self.device_name = device
        self.cuda_graph = cuda_graph
        self.crop = crop
        pw, ph = self.meta["padded_size"]
        self.info = EngineInfo(os.path.basename(self.path), "tensorrt", device, self.meta["dtype"],
                               self.sensor_size if crop else (pw, ph), "events")

    def _check_build(self, trt, torch) -> None:
        built = self.meta.get("tensorrt") or {}
        here = {"version": trt.__version__, "gpu": torch.cuda.get_device_name(self.device)}
        for key, value in here.items():
            if built.get(key) != value:
                raise EngineMismatchError(
                    f"{Path(self.path).name} was built for {built.get('gpu')} with TensorRT {built.get('version')}; "
                    f"this is {here['gpu']} with TensorRT {here['version']}. Rebuild with 'livenight export MODEL "
                    f"--engine {Path(self.path).name} --fp16'")

    def _open_impl(self) -> None:
        trt = _trt()
        torch = require("torch")
        from livenight.letc import LetcTable

        self._torch = torch
        self.device = torch.device(self.device_name)
        self._check_build(trt, torch)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(self.path).read_bytes())
        if self._engine is None:
            raise SourceError(f"{self.path}: TensorRT could not deserialise the plan")
        self._ctx = self._engine.create_execution_context()
        dtype = {"float16": torch.float16, "float32": torch.float32}[self.meta["dtype"]]

        def alloc(name):  # the exported graph's I/O all use the export dtype
            return torch.zeros(tuple(self._engine.get_tensor_shape(name)), dtype=dtype, device=self.device)

        self._grid = alloc("grid")
        self._image = alloc("image")
        self._names = [s["name"] for s in self.meta["state"]]
        self._sets = [[alloc(f"{n}_in") for n in self._names] for _ in range(2)]
        self._parity = 0
        self._graphs: dict[int, object] = {}
        self.table = LetcTable.from_json(self.meta["letc"])
        w, h = self.sensor_size
        self._hwc = np.empty((h, w, 2 * self.meta["bins"]), dtype=np.float32)
        self._stream = torch.cuda.Stream(self.device)
        self._left, _, self._top, _ = self.meta["padding"]

    def _bind(self, parity: int) -> None:
        ctx = self._ctx
        ctx.set_tensor_address("grid", self._grid.data_ptr())
        ctx.set_tensor_address("image", self._image.data_ptr())
        for name, a, b in zip(self._names, self._sets[parity], self._sets[1 - parity]):
            ctx.set_tensor_address(f"{name}_in", a.data_ptr())
            ctx.set_tensor_address(f"{name}_out", b.data_ptr())

    def _run(self, parity: int) -> None:
        torch = self._torch
        if self.cuda_graph:
            g = self._graphs.get(parity)
            if g is None:  # warm up once, then capture this parity's bindings
                self._bind(parity)
                self._ctx.execute_async_v3(self._stream.cuda_stream)
                self._stream.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, stream=self._stream):
                    self._ctx.execute_async_v3(self._stream.cuda_stream)
                self._graphs[parity] = g
            g.replay()
        else:
            self._bind(parity)
            self._ctx.execute_async_v3(self._stream.cuda_stream)

    def _close_impl(self) -> None:
        self._graphs.clear()
        self._ctx = self._engine = self._runtime = None

    def _reset_impl(self) -> None:
        for s in self._sets:
            for t in s:
                t.zero_()
        self._parity = 0

    def _step_impl(self, window: Window) -> np.ndarray:
        torch = self._torch
        with self._timed("letc"):
            hwc = self.table.grid(window.events, self.sensor_size, self._hwc)
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            self._grid.copy_(torch.from_numpy(hwc).permute(2, 0, 1).unsqueeze(0), non_blocking=False)
            self._run(self._parity)
        self._parity = 1 - self._parity
        img = self._image[0, 0]
        if self.crop:
            w, h = self.sensor_size
            img = img[self._top:self._top + h, self._left:self._left + w]
        return img.float().cpu().numpy()  # synchronises the stream
