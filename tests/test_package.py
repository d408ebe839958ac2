"""Packaging: cheap import, drivers/ and engines/ mapped into the livenight namespace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_import_is_cheap():
    code = ("import sys, livenight, livenight.drivers, livenight.engines; "
            "heavy = [m for m in ('torch', 'numba', 'PyQt5', 'h5py', 'dv_processing', 'onnxruntime') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == ""


def test_drivers_and_engines_are_subpackages_of_livenight():
    import livenight.drivers
    import livenight.engines

    assert Path(livenight.drivers.__file__).parent == ROOT / "drivers"
    assert Path(livenight.engines.__file__).parent == ROOT / "engines"
    assert livenight.__version__.count(".") == 2


def test_no_generic_top_level_modules_installed():
    # run outside the repository so the source tree is not on sys.path
    code = "import importlib.util as u; print(u.find_spec('drivers'), u.find_spec('engines'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "None None"
