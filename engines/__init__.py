"""Reconstruction engines, installed as ``livenight.engines``; chosen by model-file suffix or by name.

``open_engine(path, sensor_size)`` maps ``.pth``/``.pt`` → torch, ``.onnx`` → ONNX Runtime, ``.engine``/``.plan`` →
TensorRT. Each backend module imports its heavy package itself, failing with an install hint.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from livenight.errors import SourceNotFoundError, UnknownSourceError

#: suffix → "module:Class"
_BY_SUFFIX: dict[str, str] = {
    ".engine": "livenight.engines.trt_engine:TensorRTEngine",
    ".onnx": "livenight.engines.ort_engine:OnnxRuntimeEngine",
    ".plan": "livenight.engines.trt_engine:TensorRTEngine",
    ".pt": "livenight.engines.torch_engine:TorchEngine",
    ".pth": "livenight.engines.torch_engine:TorchEngine",
}
_BY_NAME = {"torch": ".pth", "onnxruntime": ".onnx", "tensorrt": ".engine"}
assert list(_BY_SUFFIX) == sorted(_BY_SUFFIX), "keep the engine table sorted"


def engine_class(path: str | os.PathLike, kind: str | None = None):
    """The engine class for a model file (or for ``kind``: torch, onnxruntime, tensorrt)."""
    if kind is not None:
        if kind not in _BY_NAME:
            raise UnknownSourceError(f"unknown engine {kind!r} (known: {', '.join(_BY_NAME)})")
        suffix = _BY_NAME[kind]
    else:
        suffix = Path(path).suffix.lower()
        if suffix not in _BY_SUFFIX:
            raise UnknownSourceError(f"unknown model file type {Path(path).name!r} (known: {', '.join(_BY_SUFFIX)})")
    module, cls = _BY_SUFFIX[suffix].split(":")
    return getattr(importlib.import_module(module), cls)


def open_engine(path: str | os.PathLike, sensor_size: tuple[int, int], kind: str | None = None, **options):
    """Build (not yet open: use it in a ``with`` block) the engine for ``path``."""
    if not Path(path).exists():
        raise SourceNotFoundError(f"{path}: no such model file")
    return engine_class(path, kind)(path, sensor_size, **options)
