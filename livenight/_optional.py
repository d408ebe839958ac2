"""Optional heavy dependencies: imported only where needed, failing with an install hint (never installed)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependencyError

#: pip extra (or vendor instruction) that provides each optional top-level module.
INSTALL_HINTS: dict[str, str] = {
    "PyQt5": "pip install 'livenight[viewer]'",
    "dv_processing": "pip install 'livenight[davis]'",
    "metavision_sdk_stream": "the Metavision SDK is a vendor install (not on PyPI): see docs.prophesee.ai",
    "numba": "pip install numba",
    "onnx": "pip install 'livenight[onnx]'",
    "onnxruntime": "pip install 'livenight[onnx]'",
    "onnxscript": "pip install 'livenight[onnx]'",
    "pyqtgraph": "pip install 'livenight[viewer]'",
    "tensorrt": "pip install 'livenight[tensorrt]' (needs NVIDIA's TensorRT wheels)",
    "torch": "pip install torch",
}


def has(module: str) -> bool:
    """True when ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        hint = INSTALL_HINTS.get(top, f"pip install {top}")
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(f"{top} is needed{what} but cannot be imported ({e}); {hint}") from e
