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
    ".tar": "livenight.engines.torch_engine:TorchEngine",  # rpg_e2vid's *.pth.tar
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


def checkpoint_engine(path: str | os.PathLike, sensor_size: tuple[int, int], device: str = "cpu",
                      dtype: str = "float32", exact_letc: bool = False, crop: bool = False):
    """A torch engine for a checkpoint, picking the family from its content: E2VID / E2VID+ / FireNet / FireNet+
    (their voxel grid and post-processing) or NER-Net (LETC)."""
    from livenight.model import checkpoint, e2vid

    ck = checkpoint.read_checkpoint(path)  # read once: family detection and the weights
    if e2vid.detect_family(ck) is not None:
        from .e2vid_engine import E2VIDEngine

        model, family = e2vid.model_from_checkpoint(ck, sensor_size, source=str(path))
        return E2VIDEngine(model, sensor_size, device=device, dtype=dtype, family=family, name=Path(path).name)
    from .torch_engine import TorchEngine

    model = checkpoint.model_from_checkpoint(ck, sensor_size, path)
    return TorchEngine(model, sensor_size, device=device, dtype=dtype, exact_letc=exact_letc, crop=crop,
                       name=Path(path).name)


def bundled_model() -> Path | None:
    """The model shipped with livenight (``ner-tiny``), or None if this installation has none."""
    import livenight

    path = Path(livenight.__file__).resolve().parent / "weights" / "ner-tiny.pth"
    return path if path.exists() else None
