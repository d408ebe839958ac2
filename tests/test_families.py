"""Model families: the registry, a toy family added with one file + one table row and run through the torch and
ONNX Runtime backends and the CLI, and every E2VID-family format exported to ONNX matching torch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from livenight import families
from livenight.engines import open_engine
from livenight.engines.export import export_onnx
from livenight.engines.ort_engine import OnnxRuntimeEngine
from livenight.engines.torch_engine import TorchEngine
from livenight.errors import UnknownEngineError
from livenight.synthetic import random_windows
from livenight.windowing import TimeWindows

DATA = Path(__file__).parent / "data"
SIZE = (32, 24)


def _windows(n=20, size=SIZE, seed=0, per_window=800):
    return random_windows(n, size, rate_ev_per_s=per_window / 0.04, window_us=40_000, seed=seed)


@pytest.fixture
def toy(monkeypatch):
    """The toy family registered the way a user would: its file importable, one row in the table."""
    monkeypatch.syspath_prepend(str(DATA))
    monkeypatch.setitem(families._FAMILIES, "toy", ("toy_family", "a toy family (tests/data/toy_family.py)"))
    yield families.get("toy")
    sys.modules.pop("toy_family", None)


def test_registry_is_sorted_and_names_unknown_families():
    assert list(families._FAMILIES) == sorted(families._FAMILIES) == ["e2vid", "nernet"]
    with pytest.raises(UnknownEngineError, match=r"unknown model family 'nope' \(known: e2vid, nernet\)"):
        families.get("nope")


def test_toy_family_runs_on_torch_and_onnxruntime_and_matches(toy, tmp_path):
    torch.manual_seed(0)
    net = toy.from_config({"hidden": 4}, SIZE).eval()
    toy.save(net, tmp_path / "toy.pth")
    with open_engine(tmp_path / "toy.pth", SIZE) as te:  # family detected from the checkpoint's content
        assert te.family is toy and te.info.backend == "torch" and te.info.sensor_size == SIZE
        torch_frames = [te.step(w).copy() for w in _windows()]
        assert isinstance(te.default_windows(), TimeWindows)  # the base class default: contiguous 40 ms
    export_onnx(net, tmp_path / "toy.onnx")
    with OnnxRuntimeEngine(tmp_path / "toy.onnx", SIZE) as oe:
        ort_frames = [oe.step(w).copy() for w in _windows()]
    diffs = [float(np.abs(a - b).max()) for a, b in zip(torch_frames, ort_frames)]
    assert max(diffs) <= 1e-4
    # the recurrent state matters here (so the comparison above covers it): without it the last frame differs
    with open_engine(tmp_path / "toy.pth", SIZE) as te:
        alone = te.step(_windows()[-1])
    assert float(np.abs(alone - torch_frames[-1]).max()) > 10 * max(max(diffs), 1e-6)


def test_toy_family_through_the_cli(toy, tmp_path, capsys):
    from PIL import Image

    from livenight.cli import main
    from livenight.simulate import write_night

    torch.manual_seed(1)
    toy.save(toy.from_config({"hidden": 4}, SIZE), tmp_path / "toy.pth")
    write_night(tmp_path / "n.h5", seconds=0.3, size=SIZE, seed=3)
    assert main(["export", str(tmp_path / "toy.pth"), "--onnx", str(tmp_path / "toy.onnx"),
                 "--size", f"{SIZE[0]}x{SIZE[1]}"]) == 0
    assert "toy.onnx.json" in capsys.readouterr().out
    for model, out in (("toy.pth", "a"), ("toy.onnx", "b")):
        assert main(["--replay", str(tmp_path / "n.h5"), "--model", str(tmp_path / model), "--no-gui",
                     "--out", str(tmp_path / out), "--windows", "time", "--window-ms", "40"]) == 0
    a = sorted((tmp_path / "a").glob("frame_*.png"))
    b = sorted((tmp_path / "b").glob("frame_*.png"))
    assert len(a) == len(b) == 7
    for fa, fb in zip(a, b):  # torch and ONNX Runtime frames agree to one grey level
        ia, ib = np.asarray(Image.open(fa), np.int16), np.asarray(Image.open(fb), np.int16)
        assert ia.shape == (SIZE[1], SIZE[0]) and np.abs(ia - ib).max() <= 1


@pytest.mark.parametrize("variant", ["E2VID", "E2VID+", "FireNet", "FireNet+"])
def test_e2vid_family_checkpoints_export_and_match_torch(variant, tmp_path, capsys):
    from test_e2vid import SIZE as E_SIZE
    from test_e2vid import _formats

    from livenight.cli import main

    build, save, _ = _formats()[variant]
    net = build()
    # random weights give outputs of ±90 where float32 rounding alone reaches 3e-4; scale the prediction layer
    # so outputs span about [-1, 2] as trained networks' do, and compare at the issue's 1e-4
    pred = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        probe = net(torch.randn(1, net.cfg.num_bins, E_SIZE[1], E_SIZE[0]), net.initial_state())[0]
        pred.weight /= max(1.0, float(probe.abs().max()) / 2)
    ck = save(tmp_path / "m.pth", net)
    assert main(["export", str(ck), "--onnx", str(tmp_path / "m.onnx"), "--size", f"{E_SIZE[0]}x{E_SIZE[1]}"]) == 0
    windows = _windows(20, size=E_SIZE, per_window=300)
    with open_engine(ck, E_SIZE) as te, open_engine(tmp_path / "m.onnx", E_SIZE) as oe:
        assert oe.family.name == "e2vid" and oe.info.backend == "onnxruntime"
        diffs = [float(np.abs(te.step(w) - oe.step(w)).max()) for w in windows]
    assert max(diffs) <= 1e-4


def test_the_training_package_trains_a_registered_family(toy, tmp_path):
    """`family = "toy"` in a training config: the trainer builds the toy network through the registry, feeds it
    the family's inference representation, saves a checkpoint the engine then opens by content."""
    from livenight.simulate import write_night
    from livenight.training import train
    from livenight.training.config import TrainConfig

    write_night(tmp_path / "a.h5", seconds=0.5, size=(48, 40), seed=3)
    cfg = TrainConfig.from_dict({
        "family": "toy", "model": {"hidden": 3}, "out_dir": str(tmp_path / "run"), "sequence_length": 4,
        "crop": 24, "steps": 12, "lr": 1e-2, "checkpoint_every": 0, "seed": 1, "threads": 1,
        "losses": {"l1": 1.0, "ssim": 0.0, "lpips": 0.0}, "log": {"progress": False, "tensorboard": False},
        "data": {"files": [str(tmp_path / "a.h5")]}, "val": {"files": []}})
    result = train(cfg)
    assert result.step == 12
    losses = [float(r.split(",")[1]) for r in (tmp_path / "run" / "train.csv").read_text().splitlines()[1:]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # it learns something
    ck = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert ck["family"] == "toy" and ck["model"] == {"hidden": 3}  # size-free: the engine builds it at any size
    with open_engine(tmp_path / "run" / "last.pth", SIZE) as eng:  # any size: the weights are size-free
        assert eng.family is toy and eng.step(_windows(1)[0]).shape == (SIZE[1], SIZE[0])
