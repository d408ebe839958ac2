"""Reconstruction engines, installed as ``livenight.engines``: backends (torch, ONNX Runtime, TensorRT, the
classical filter) and the one entry point that picks and builds them, :func:`open_engine`.

``open_engine`` owns what the CLI and the Python API must not repeat: the bundled default model, the model-file
suffix table (``.pth``/``.pt``/``.tar`` checkpoint, ``.onnx`` ONNX Runtime, ``.engine``/``.plan`` TensorRT),
the family detection from a checkpoint's content, the ONNX export cache, the choice of backend for ``auto`` and a
model's metadata (its default windows). Each backend module imports its heavy package itself, failing with an
install hint. A new backend is one module plus one row in :data:`_BACKENDS`.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from livenight.errors import SourceNotFoundError, UnknownEngineError

#: backend name → "module:Class". Keep sorted.
_BACKENDS: dict[str, str] = {
    "complementary": "livenight.engines.complementary:ComplementaryFilterEngine",
    "onnxruntime": "livenight.engines.ort_engine:OnnxRuntimeEngine",
    "tensorrt": "livenight.engines.trt_engine:TensorRTEngine",
    "torch": "livenight.engines.torch_engine:TorchEngine",
}
#: model-file suffix → what the file is. Keep sorted.
_SUFFIXES: dict[str, str] = {
    ".engine": "tensorrt",
    ".onnx": "onnxruntime",
    ".plan": "tensorrt",
    ".pt": "checkpoint",
    ".pth": "checkpoint",
    ".tar": "checkpoint",  # rpg_e2vid's *.pth.tar
}
assert list(_BACKENDS) == sorted(_BACKENDS) and list(_SUFFIXES) == sorted(_SUFFIXES), "keep the tables sorted"
BACKENDS = ("auto", *_BACKENDS)
#: the bundled default model (livenight/weights/), used when no model is given
BUNDLED = "firenet-s2"


def backend_class(name: str):
    """The engine class of a backend name."""
    if name not in _BACKENDS:
        raise UnknownEngineError(f"unknown engine {name!r} (known: {', '.join(BACKENDS)})")
    module, cls = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def model_kind(path: str | os.PathLike) -> str:
    """``checkpoint``, ``onnxruntime`` or ``tensorrt`` for a model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise UnknownEngineError(f"unknown model file type {Path(path).name!r} (known: {', '.join(_SUFFIXES)})")
    return _SUFFIXES[suffix]


def bundled_model() -> Path | None:
    """The model shipped with livenight, or None if this installation has none."""
    import livenight

    path = Path(livenight.__file__).resolve().parent / "weights" / f"{BUNDLED}.pth"
    return path if path.exists() else None


def model_meta(path: str | os.PathLike) -> dict | None:
    """A model's metadata: the JSON beside a checkpoint (``name.json`` or ``name.pth.json``), if any."""
    path = Path(path)
    for side in (path.with_suffix(".json"), Path(str(path) + ".json")):
        if side.exists():
            try:
                meta = json.loads(side.read_text())
            except json.JSONDecodeError:
                return None
            return meta if isinstance(meta, dict) else None
    return None


def auto_backend(kind: str, device: str) -> str:
    """The backend ``auto`` picks for a model file on this machine."""
    if kind != "checkpoint":
        return kind
    return "torch"


def open_engine(model: str | os.PathLike | None = None, sensor_size: tuple[int, int] = (346, 260),
                backend: str = "auto", device: str = "cpu", dtype: str = "auto", crop: bool | None = None,
                exact: bool = False, cuda_graphs: bool = False, threads: int = 0, say=print, **options):
    """The engine for a model (not yet open: use it in a ``with`` block).

    Args:
        model: a checkpoint (any registered family, recognised from its content), an exported ``.onnx`` or
            TensorRT ``.engine``; None: the bundled default model.
        sensor_size: ``(width, height)`` of the source.
        backend: ``auto`` (the fastest that works here), ``torch``, ``onnxruntime`` (a checkpoint is exported
            once and cached), ``tensorrt`` or ``complementary`` (the classical filter: no model).
        device, dtype: where and in which precision the network runs (torch; TensorRT runs on CUDA). ``auto``:
            the fastest precision measured to stay within 2 grey levels of float32 (NER-Net family, and models
            whose JSON lists it in ``fast_dtypes_checked``: bfloat16 on CPUs with AMX / AVX512-BF16, float16 on
            CUDA), else float32.
        crop: crop frames to the sensor size (None: the family's choice).
        exact: the reference path (NER-Net: the official per-event LETC MLP).
        cuda_graphs: TensorRT: replay the step as a CUDA graph.
        threads: ONNX Runtime intra-op threads (0: the process's thread budget, livenight.cpu).
        **options: backend / family options (the classical filter's ``cutoff_hz``, E2VID's ``postprocess``, …).

    The engine's ``default_windows(event_indices)`` gives the window policy its model was trained with.
    """
    if backend not in BACKENDS:
        raise UnknownEngineError(f"unknown engine {backend!r} (known: {', '.join(BACKENDS)})")
    if backend == "complementary":
        return backend_class("complementary")(sensor_size, **options)
    if model is None:
        model = bundled_model()
        if model is None:
            raise SourceNotFoundError("this installation has no bundled model; give --model FILE or "
                                      "--engine complementary")
    kind = model_kind(model)
    if not Path(model).exists():
        raise SourceNotFoundError(f"{model}: no such model file")
    chosen = auto_backend(kind, device) if backend == "auto" else backend
    if not threads:
        from livenight.cpu import current_budget

        budget = current_budget()
        threads = budget.compute if budget is not None else 0
    meta = model_meta(model) if kind == "checkpoint" else None
    if kind == "checkpoint":
        if chosen == "torch":
            return backend_class("torch")(model, sensor_size, device=device, dtype=dtype, crop=crop, exact_letc=exact,
                                          meta=meta, name=Path(model).name, **options)
        if chosen == "onnxruntime":
            from .export import cached_onnx

            windows = (meta or {}).get("windows")
            onnx_path = cached_onnx(model, sensor_size, say=say, windows=windows)
            return backend_class("onnxruntime")(onnx_path, sensor_size, threads=threads, crop=crop, meta=meta)
        raise UnknownEngineError(f"--engine {chosen} runs an exported engine file; build one with "
                                 f"'livenight export {Path(model).name} --engine model.engine'")
    if chosen != kind:
        raise UnknownEngineError(f"{Path(model).name} is a {kind} file; it cannot run with --engine {chosen}")
    if kind == "onnxruntime":
        return backend_class("onnxruntime")(model, sensor_size, threads=threads, crop=crop)
    return backend_class("tensorrt")(model, sensor_size, device=device if device.startswith("cuda") else "cuda",
                                     cuda_graphs=cuda_graphs, crop=crop)
