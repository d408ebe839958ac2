"""TensorRT backend (10.x and 11.x): a strongly typed plan built from the exported ONNX, run with torch CUDA buffers.

Why it is like this (kept small on purpose, to be read against NVIDIA's documentation):

* One code path for TensorRT 10 and 11: 11 removed ``BuilderFlag.FP16`` and weak typing, so FP16 lives in the
  ONNX graph (``livenight export --fp16``) and the network is created ``STRONGLY_TYPED`` (required on 10.x,
  accepted on 11.x).
* The ONNX is parsed from its path (``OnnxParser.parse_from_file``), so weights stored beside the graph
  (``model.onnx.data``, what torch's exporter writes for large models) are found wherever the build runs from.
* Buffers are torch CUDA tensors bound by tensor name (``set_tensor_address``); no PyCUDA (it conflicts with
  PyTorch in one process). Every TensorRT call that reports success as a boolean is checked
  (:func:`_check`): a refused binding or enqueue raises one line instead of returning a stale frame.
* **One stream orders everything.** The engine owns a CUDA stream; the input upload (pinned host → device, then
  the cast to the plan's dtype), the enqueue (or the graph replay), the state reset (``zero_``) and the output
  download (device → pinned host) are all issued on it, and the host reads the frame only after an event recorded
  behind the download has completed. Nothing touches the engine's buffers from the default stream, so no frame is
  read half-written and a reset cannot race a step still in flight.
* The recurrent state lives in two buffer sets swapped every step (ping-pong): a buffer is never bound as both
  input and output, and nothing is copied.
* CUDA graphs (``cuda_graphs=True``) freeze addresses, so one graph is captured per ping-pong parity, at open,
  after one ordinary enqueue per parity (TensorRT needs one before capture), on the engine's (non-default) stream;
  the state is zeroed afterwards. A plan that cannot be captured falls back to plain enqueues with one warning.
* A plan is specific to the GPU and the TensorRT version: the sidecar records both, and loading refuses a plan
  built elsewhere with a sentence that says how to rebuild.

Not run in CI (no GPU, TensorRT not installable there); the GPU tests carry the ``tensorrt`` marker, and the
CPU-side checks (return values, parse from path) are tested with a stand-in ``tensorrt`` module.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from livenight._optional import require
from livenight.errors import EngineMismatchError, LivenightError, SourceError

from .base import EngineInfo, ModelEngine
from .sidecar import check_sidecar, family_parts, read_sidecar, sidecar_path


class TensorRTError(LivenightError, RuntimeError):
    """TensorRT refused a binding or an enqueue."""


def _trt():
    return require("tensorrt", "the TensorRT engine")


def _check(ok, what: str, path: str) -> None:
    """TensorRT reports many failures as ``False`` (details go to its logger): turn them into one-line errors."""
    if ok is False or ok is None:
        raise TensorRTError(f"{Path(path).name}: TensorRT refused {what} (see the TensorRT log above)")


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, workspace_mib: int = 4096,
                 timing_cache: str | os.PathLike | None = None) -> dict:
    """Parse the ONNX from its path, build a serialized plan, write it and its sidecar (the ONNX sidecar plus the
    TensorRT version, GPU and the ONNX file's hash)."""
    trt = _trt()
    torch = require("torch")
    meta = read_sidecar(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    # from the path, not from bytes: external weights (model.onnx.data) are resolved beside the file
    if not parser.parse_from_file(os.fspath(Path(onnx_path).resolve())):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SourceError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    _check(config.set_timing_cache(cache, ignore_mismatch=False), "the timing cache", os.fspath(onnx_path))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SourceError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    Path(engine_path).write_bytes(bytes(plan))
    if timing_cache:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    meta = dict(meta)
    meta["tensorrt"] = {"version": trt.__version__, "gpu": torch.cuda.get_device_name(),
                        "compute_capability": list(torch.cuda.get_device_capability()),
                        "onnx": Path(onnx_path).name, "onnx_sha256": (meta.get("onnx") or {}).get("sha256")}
    meta.pop("files", None)
    sidecar_path(engine_path).write_text(json.dumps(meta, indent=1))
    return meta


class TensorRTEngine(ModelEngine):
    """Run a ``.engine`` / ``.plan`` built by :func:`build_engine` on windows of events (CUDA only).

    Args:
        path: the plan file (with its ``.json`` sidecar).
        sensor_size: ``(width, height)`` of the source; must equal the exported size.
        device: ``"cuda"`` or ``"cuda:N"``.
        cuda_graphs: replay each step as a captured CUDA graph (one per ping-pong parity).
        crop: crop the padded output to the sensor size (None: the family's choice).
        meta: model metadata (default windows); the sidecar's ``windows`` when not given.
    """

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int], device: str = "cuda",
                 cuda_graphs: bool = False, crop: bool | None = None, meta: dict | None = None,
                 cuda_graph: bool | None = None) -> None:  # cuda_graph: the earlier spelling, still accepted
        self.path = os.fspath(path)
        self.sidecar = read_sidecar(path)
        check_sidecar(self.sidecar, path, sensor_size)
        self.sensor_size = tuple(int(v) for v in sensor_size)
        self.device_name = device
        self.cuda_graphs = bool(cuda_graphs if cuda_graph is None else cuda_graph)
        self.crop = crop
        self.meta = meta if meta is not None else {"windows": self.sidecar.get("windows")}
        self.info = EngineInfo(os.path.basename(self.path), "tensorrt", device, self.sidecar["dtype"],
                               self.sensor_size, "events")

    # ------------------------------------------------------------------ open / close
    def _check_build(self, trt, torch) -> None:
        built = self.sidecar.get("tensorrt") or {}
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
        self._torch = torch
        self.device = torch.device(self.device_name)
        self._check_build(trt, torch)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(self.path).read_bytes())
        if self._engine is None:
            raise SourceError(f"{self.path}: TensorRT could not deserialise the plan")
        self._ctx = self._engine.create_execution_context()
        if self._ctx is None:
            raise TensorRTError(f"{Path(self.path).name}: TensorRT could not create an execution context "
                                "(out of GPU memory?)")
        meta = self.sidecar
        self._in_name, self._out_name = meta["input"]["name"], meta["output"]["name"]
        self._names = [s["name"] for s in meta["state"]]
        self._check_names()
        dtype = {"float16": torch.float16, "float32": torch.float32}[meta["dtype"]]
        self._stream = torch.cuda.Stream(self.device)
        self._done = torch.cuda.Event()
        with torch.cuda.stream(self._stream):  # allocated (and zeroed) in the stream that will use them
            shape = tuple(meta["input"]["shape"])
            self._in = torch.zeros(shape, dtype=dtype, device=self.device)
            self._in_f32 = torch.zeros(shape, dtype=torch.float32, device=self.device)  # upload target
            self._image = torch.zeros(tuple(meta["output"]["shape"]), dtype=dtype, device=self.device)
            self._image_f32 = torch.zeros(tuple(meta["output"]["shape"][2:]), dtype=torch.float32,
                                          device=self.device)
            self._sets = [[torch.zeros(tuple(s["shape"]), dtype=dtype, device=self.device) for s in meta["state"]]
                          for _ in range(2)]
        # pinned host buffers: the representation writes straight into the upload buffer (via its numpy view)
        self._host_in = torch.zeros(shape[1:], dtype=torch.float32).pin_memory()
        self._host_out = torch.zeros(tuple(meta["output"]["shape"][2:]), dtype=torch.float32).pin_memory()
        self._input = self._host_in.numpy()
        self._parity = 0
        self._graphs: dict[int, object] = {}
        if self.cuda_graphs:
            self._capture_graphs()
        family, representation, post = family_parts(meta)
        self._setup(family, representation, post, meta["padded_size"], meta["padding"], shape[1])

    def _check_names(self) -> None:
        """The plan's I/O tensors must be the ones the sidecar names (a plan and a sidecar from different exports)."""
        engine = self._engine
        have = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        want = {self._in_name, self._out_name, *(f"{n}_in" for n in self._names), *(f"{n}_out" for n in self._names)}
        if have != want:
            raise EngineMismatchError(f"{Path(self.path).name}: the plan's tensors {sorted(have - want)} / missing "
                                      f"{sorted(want - have)} do not match its sidecar; rebuild it with 'livenight "
                                      f"export MODEL --engine {Path(self.path).name} --fp16'")

    def _close_impl(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._stream.synchronize()  # nothing may still write into buffers about to be freed
        getattr(self, "_graphs", {}).clear()
        self._ctx = self._engine = self._runtime = None
        self._sets = []

    # ------------------------------------------------------------------ TensorRT calls (each result checked)
    def _bind(self, parity: int) -> None:
        """Bind input, image and state set ``parity`` → set ``1 − parity``."""
        ctx, path = self._ctx, self.path
        _check(ctx.set_tensor_address(self._in_name, self._in.data_ptr()), f"the address of '{self._in_name}'", path)
        _check(ctx.set_tensor_address(self._out_name, self._image.data_ptr()), f"the address of '{self._out_name}'",
               path)
        for name, a, b in zip(self._names, self._sets[parity], self._sets[1 - parity]):
            _check(ctx.set_tensor_address(f"{name}_in", a.data_ptr()), f"the address of '{name}_in'", path)
            _check(ctx.set_tensor_address(f"{name}_out", b.data_ptr()), f"the address of '{name}_out'", path)

    def _enqueue(self) -> None:
        _check(self._ctx.execute_async_v3(self._stream.cuda_stream), "the enqueue (execute_async_v3)", self.path)

    def _capture_graphs(self) -> None:
        """One CUDA graph per parity, captured on the engine's stream after one ordinary enqueue each."""
        torch = self._torch
        try:
            for parity in (0, 1):
                self._bind(parity)
                with torch.cuda.stream(self._stream):
                    self._enqueue()  # TensorRT: enqueue once before capturing (deferred updates, lazy allocations)
                self._stream.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, stream=self._stream):
                    self._enqueue()
                self._graphs[parity] = g
        except (RuntimeError, TensorRTError) as e:
            self._graphs.clear()
            self.cuda_graphs = False
            print(f"livenight: warning: {Path(self.path).name}: CUDA graph capture failed ({str(e).splitlines()[0]}); "
                  "running without CUDA graphs", file=sys.stderr)
        self._reset_state()  # the warm-up enqueues wrote into the state buffers

    # ------------------------------------------------------------------ the step, in stream order
    def _reset_state(self) -> None:
        with self._torch.cuda.stream(self._stream):  # ordered after any step still in flight
            for s in self._sets:
                for t in s:
                    t.zero_()
        self._parity = 0

    def _upload(self, x: np.ndarray) -> None:
        """Host input → the plan's input buffer, on the engine's stream (call inside ``torch.cuda.stream``)."""
        if x.ctypes.data != self._input.ctypes.data:
            self._input[...] = x
        self._in_f32.copy_(self._host_in[None], non_blocking=True)
        self._in.copy_(self._in_f32)  # the cast to float16 (a no-op copy for float32 plans)

    def _execute(self, parity: int) -> None:
        if self.cuda_graphs:
            self._graphs[parity].replay()  # replays on the current stream: the engine's
        else:
            self._bind(parity)
            self._enqueue()

    def _download(self) -> np.ndarray:
        """Padded frame → pinned host memory, then wait for the event recorded behind it."""
        self._image_f32.copy_(self._image[0, 0])
        self._host_out.copy_(self._image_f32, non_blocking=True)
        self._done.record(self._stream)
        self._done.synchronize()
        return self._host_out.numpy()

    def _run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        self._stream.wait_stream(torch.cuda.current_stream(self.device))  # after anything the caller queued
        with torch.cuda.stream(self._stream):
            self._upload(x)
            self._execute(self._parity)
            self._parity = 1 - self._parity  # the state just written is the next step's input
            return self._download()
