"""Shared test helpers.

Real recordings are found through one setting: the environment variable ``LIVENIGHT_DATA`` (a folder), by
default ``../shared/data`` beside the repository. A test that needs one asks the ``shared_data`` fixture for
it by name: absent, the test is skipped with a one-line reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from livenight.synthetic import random_events


REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The folder of the real recordings: ``$LIVENIGHT_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("LIVENIGHT_DATA") or REPO.parent / "shared" / "data")


def shared_path(name: str) -> Path:
    """``data_dir() / name``; skips the calling test when the file is absent (fails under ``CI=true``)."""
    path = data_dir() / name
    if not path.is_file():
        reason = f"recording {name} not found in {data_dir()} (set LIVENIGHT_DATA to the folder that holds it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def shared_data():
    """``shared_data("davis346.aedat4")`` -> the path of a real recording (see :func:`shared_path`)."""
    return shared_path


@pytest.fixture
def make_events():
    """Factory for a synthetic, time-sorted :data:`EVENT_DTYPE` stream.

    ``make_events(n, sensor=(346, 260), rate_ev_per_s=1e6, seed=0, t0_us=0)``: ``n`` events with exponential
    inter-event times at ``rate_ev_per_s`` (so equal timestamps occur at high rates), starting at ``t0_us``,
    uniform positions inside ``sensor`` = (width, height) and random polarities. Deterministic per ``seed``.
    """

    def _make(n: int, sensor: tuple[int, int] = (346, 260), rate_ev_per_s: float = 1e6, seed: int = 0,
              t0_us: int = 0) -> np.ndarray:
        return random_events(n, sensor, rate_ev_per_s, seed, t0_us)

    return _make


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def pytest_collection_modifyitems(config, items):
    """Opt-in hardware markers skip cleanly where the hardware or package is missing."""
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_trt = pytest.mark.skip(reason="needs the tensorrt package and a CUDA device")
    skip_hw = pytest.mark.skip(reason="needs a physical camera (run with LIVENIGHT_HARDWARE=1)")
    import os

    cuda = _has_cuda()
    trt = cuda and _has_module("tensorrt")
    hardware = os.environ.get("LIVENIGHT_HARDWARE") == "1"
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "tensorrt" in item.keywords and not trt:
            item.add_marker(skip_trt)
        if "hardware" in item.keywords and not hardware:
            item.add_marker(skip_hw)
