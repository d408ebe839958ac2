"""``livenight doctor`` / ``livenight devices``: what can run here and why not. Probes without importing heavy
packages where a spec lookup suffices; never installs anything."""

from __future__ import annotations

import importlib
import platform

from ._optional import INSTALL_HINTS, has


def _check(name: str, probe) -> tuple[str, bool, str]:
    try:
        ok, detail = probe()
    except Exception as e:  # a probe must never take doctor down
        ok, detail = False, f"{type(e).__name__}: {e}"
    return name, ok, detail


def _module(mod: str, what: str):
    def probe():
        if not has(mod):
            return False, f"not installed; {INSTALL_HINTS.get(mod, 'pip install ' + mod)}"
        m = importlib.import_module(mod)
        return True, f"{what} {getattr(m, '__version__', '')}".strip()

    return probe


def _torch():
    if not has("torch"):
        return False, "not installed; pip install torch"
    import torch

    cuda = torch.cuda.is_available()
    dev = f", CUDA {torch.version.cuda} on {torch.cuda.get_device_name()}" if cuda else ", CPU only (no CUDA device)"
    return True, f"torch {torch.__version__}{dev}"


def _cpu_path():
    from .cpu import cpu_features, current_budget, describe_cpu_path, fast_cpu_dtype, plan_threads

    feats = cpu_features()
    budget = current_budget() or plan_threads()
    path = describe_cpu_path(fast_cpu_dtype(feats), feats) + ("" if feats.bf16 else " (no AMX / AVX512-BF16 here)")
    return True, f"{path}; thread budget: {budget.describe()}"


def _ort():
    if not has("onnxruntime"):
        return False, f"not installed; {INSTALL_HINTS['onnxruntime']}"
    import onnxruntime as ort

    return True, f"onnxruntime {ort.__version__}, providers {', '.join(ort.get_available_providers())}"


def _tensorrt():
    if not has("tensorrt"):
        return False, ("not installed; TensorRT wheels come from NVIDIA (pip install 'livenight[tensorrt]' with "
                       "NVIDIA's index); needs an NVIDIA GPU")
    import tensorrt

    return True, f"tensorrt {tensorrt.__version__}"


def _metavision():
    if has("metavision_sdk_stream"):
        return True, "Metavision SDK (metavision_sdk_stream)"
    if has("neuromorphic_drivers"):
        return True, "neuromorphic-drivers (pip-only Prophesee/iniVation USB access)"
    return False, ("neither the Metavision SDK (a vendor install, not on PyPI) nor neuromorphic-drivers "
                   "(pip install neuromorphic-drivers) is installed; .raw/.dat files still replay")


def _display():
    try:
        from .viewer.platform_check import check_display
    except ImportError:
        return False, "viewer not available in this installation"
    return check_display(probe=True)


def report() -> list[tuple[str, bool, str]]:
    """(component, usable, detail) for every backend, engine and viewer piece."""
    return [
        _check("python", lambda: (True, platform.python_version())),
        _check("numba (fast kernels)", _module("numba", "numba")),
        _check("h5py (RLED files)", _module("h5py", "h5py")),
        _check("torch engine", _torch),
        _check("CPU fast path", _cpu_path),
        _check("onnxruntime engine", _ort),
        _check("tensorrt engine", _tensorrt),
        _check("aedat (.aedat4 files)", _module("aedat", "aedat")),
        _check("dv-processing (DAVIS cameras, tcp://)", _module("dv_processing", "dv-processing")),
        _check("Prophesee live", _metavision),
        _check("Prophesee .raw/.dat files", lambda: (True, "built-in decoders (EVT 2.0/2.1/3.0, DAT)")),
        _check("PyQt5 (viewer)", _module("PyQt5.QtCore", "PyQt5")),
        _check("pyqtgraph (viewer)", _module("pyqtgraph", "pyqtgraph")),
        _check("display for the viewer", _display),
        _check("PyAV (--video MP4)", _module("av", "PyAV")),
        _check("scikit-image (eval SSIM)", _module("skimage", "scikit-image")),
        _check("rosbags (ROS 1 / ROS 2 bags)", _rosbags),
        _check("text / CSV / NumPy event files", lambda: (True, "built-in readers (.txt, .zip, .csv, .npy, .npz)")),
    ]


def _rosbags():
    if not has("rosbags"):
        return False, "not installed; pip install 'livenight[ros]'"
    from importlib.metadata import version

    return True, f"rosbags {version('rosbags')}"


def devices() -> list[tuple[str, str]]:
    """(backend, description) of every connected camera found by the installed backends; probe errors included."""
    found: list[tuple[str, str]] = []
    if has("dv_processing"):
        try:
            from livenight.drivers.davis import list_devices

            for d in list_devices():
                found.append(("dv-processing", f"{d['model']} serial {d['serial']} ({d['uri']})"))
        except Exception as e:
            found.append(("dv-processing", f"probe failed: {e}"))
    if has("metavision_sdk_stream"):  # pragma: no cover - vendor SDK
        try:
            from metavision_sdk_stream import Camera

            cam = Camera.from_first_available()
            found.append(("metavision", f"{cam.width()}x{cam.height()} camera"))
        except Exception as e:
            found.append(("metavision", f"no camera ({e})"))
    elif has("neuromorphic_drivers"):  # pragma: no cover - needs USB
        try:
            import neuromorphic_drivers as nd

            for d in nd.list_devices():
                found.append(("neuromorphic-drivers", str(d)))
        except Exception as e:
            found.append(("neuromorphic-drivers", f"probe failed: {e}"))
    return found
