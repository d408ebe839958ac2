"""Engines: export + ONNX Runtime parity with torch over recurrent steps, sidecar checks, suffix dispatch, CUDA/TRT
paths behind markers."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from livenight.engines import backend_class, model_kind, open_engine
from livenight.engines.export import export_onnx
from livenight.engines.sidecar import read_sidecar
from livenight.engines.ort_engine import OnnxRuntimeEngine
from livenight.engines.torch_engine import TorchEngine
from livenight.errors import EngineMismatchError, MissingDependencyError, SourceNotFoundError, UnknownEngineError
from livenight.events import make_events
from livenight.model.checkpoint import save_model
from livenight.model.nernet import NERNet, NERNetConfig
from livenight.windowing import Window

SIZE = (44, 30)  # pads to 48x32


def _windows(n=20, seed=0, size=SIZE, per_window=2000):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = np.sort(rng.integers(10_000_000 + 40_000 * k, 10_020_000 + 40_000 * k, per_window))
        ev = make_events(t, rng.integers(0, size[0], per_window), rng.integers(0, size[1], per_window),
                         rng.integers(0, 2, per_window))
        out.append(Window(k, int(t[0]), int(t[-1]) + 1, ev, k == 0, 0))
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    torch.manual_seed(0)
    net = NERNet(NERNetConfig(sensor_size=SIZE, base_channels=8)).eval()
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    export_onnx(net, path)
    return net, path


def test_sidecar_describes_the_export(small):
    net, path = small
    meta = read_sidecar(path)
    assert meta["sensor_size"] == [44, 30] and meta["padded_size"] == [48, 32]
    assert [s["name"] for s in meta["state"]] == ["h0", "h1", "h2", "c0", "c1", "c2", "m"]
    assert meta["state"][6]["shape"] == [1, 8, 32, 48] and meta["dtype"] == "float32"
    assert meta["input"] == {"name": "input", "shape": [1, 10, 30, 44]}
    fam = meta["family"]
    assert fam["name"] == "nernet" and fam["config"]["base_channels"] == 8 and "sensor_size" not in fam["config"]
    assert fam["representation"]["kind"] == "letc" and fam["representation"]["num_bins"] == 5
    assert len(fam["representation"]["weights"]) == 4
    # one self-contained file (weights folded in) whose hash the sidecar records
    assert not list(path.parent.glob("*.data")) and len(meta["onnx"]["sha256"]) == 64


def test_ort_matches_torch_over_20_recurrent_steps(small):
    net, path = small
    wins = _windows()
    diffs = []
    with TorchEngine(net, SIZE) as te, OnnxRuntimeEngine(path, SIZE) as oe:
        for w in wins:
            a, b = te.step(w).copy(), oe.step(w).copy()
            diffs.append(np.abs(a - b).max())
        assert a.shape == (32, 48)
        # the state is carried: a fresh engine on the last window alone gives something else
        te.reset()
        fresh = te.step(wins[-1])
        assert np.abs(fresh - a).max() > 1e-3
    assert max(diffs) <= 1e-4


def test_ort_reset_restores_the_first_output(small):
    _, path = small
    wins = _windows(4)
    with OnnxRuntimeEngine(path, SIZE) as oe:
        first = oe.step(wins[0]).copy()
        oe.step(wins[1])
        oe.reset()
        again = oe.step(wins[0]).copy()
    np.testing.assert_array_equal(first, again)


def test_crop_returns_the_sensor_size(small):
    net, path = small
    w = _windows(1)[0]
    with TorchEngine(net, SIZE, crop=True) as te, OnnxRuntimeEngine(path, SIZE, crop=True) as oe:
        a, b = te.step(w), oe.step(w)
    assert a.shape == b.shape == (30, 44)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_sidecar_mismatch_and_missing_sidecar(small, tmp_path):
    _, path = small
    with pytest.raises(EngineMismatchError, match=r"expects 10 input channels at 48x32 \(44x30 padded\); the source is "
                                                  r"346x260\. Rebuild with 'livenight export MODEL --onnx small.onnx "
                                                  r"--size 346x260'"):
        OnnxRuntimeEngine(path, (346, 260))
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(path.read_bytes())
    with pytest.raises(EngineMismatchError, match="lone.onnx.json is missing"):
        OnnxRuntimeEngine(lone, SIZE)
    side = tmp_path / "old.onnx.json"
    (tmp_path / "old.onnx").write_bytes(b"")
    side.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(EngineMismatchError, match="rebuild"):
        OnnxRuntimeEngine(tmp_path / "old.onnx", SIZE)


def test_full_nernet_exports_and_matches(tmp_path):
    torch.manual_seed(1)
    net = NERNet(NERNetConfig(sensor_size=(40, 24))).eval()
    export_onnx(net, tmp_path / "ner.onnx")
    wins = _windows(3, size=(40, 24))
    with TorchEngine(net, (40, 24)) as te, OnnxRuntimeEngine(tmp_path / "ner.onnx", (40, 24)) as oe:
        for w in wins:
            np.testing.assert_allclose(te.step(w), oe.step(w), atol=1e-4)


def test_engine_table_by_suffix_and_errors(tmp_path, small):
    assert [model_kind(f"m.{s}") for s in ("pth", "pt", "pth.tar", "onnx", "engine", "plan")] == \
        ["checkpoint"] * 3 + ["onnxruntime"] + ["tensorrt"] * 2
    assert backend_class("torch").__name__ == "TorchEngine"
    assert backend_class("onnxruntime").__name__ == "OnnxRuntimeEngine"
    assert backend_class("complementary").__name__ == "ComplementaryFilterEngine"
    with pytest.raises(UnknownEngineError, match=r"unknown model file type 'm\.xyz' \(known: \.engine, \.onnx"):
        model_kind("m.xyz")
    with pytest.raises(UnknownEngineError, match=r"unknown engine 'tpu'"):
        open_engine(None, SIZE, backend="tpu")
    with pytest.raises(SourceNotFoundError):
        open_engine(tmp_path / "nope.onnx", SIZE)
    net, path = small
    with pytest.raises(UnknownEngineError, match="is a onnxruntime file; it cannot run with --engine torch"):
        open_engine(path, SIZE, backend="torch")
    save_model(net, tmp_path / "m.pth")
    with open_engine(tmp_path / "m.pth", SIZE) as eng:  # NER-Net keeps the official padding unless cropped
        assert eng.info.backend == "torch" and eng.info.sensor_size == (48, 32)
    with open_engine(tmp_path / "m.pth", SIZE, crop=True) as eng:
        assert eng.info.sensor_size == (44, 30) and eng.family.name == "nernet"


def test_missing_onnxruntime_names_the_extra(small, monkeypatch):
    _, path = small
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'livenight\[onnx\]'"):
        with OnnxRuntimeEngine(path, SIZE):
            pass


def test_tensorrt_without_the_package_names_what_to_install(small, tmp_path, monkeypatch):
    from livenight.engines.trt_engine import TensorRTEngine

    _, path = small
    plan = tmp_path / "x.engine"
    plan.write_bytes(b"")
    (tmp_path / "x.engine.json").write_text((path.parent / "small.onnx.json").read_text())
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        with TensorRTEngine(plan, SIZE):
            pass


@pytest.mark.gpu
def test_torch_engine_cuda_fp16_close_to_fp32(small):
    net, _ = small
    wins = _windows(5)
    with TorchEngine(net, SIZE) as ref, TorchEngine(NERNet(net.cfg).eval(), SIZE, device="cuda", dtype="float16") as half:
        half.model.load_state_dict(net.state_dict())
        half.net.half()
        for w in wins:
            np.testing.assert_allclose(half.step(w), ref.step(w), atol=2e-2, rtol=2e-2)


@pytest.mark.tensorrt
def test_tensorrt_matches_torch(small, tmp_path):
    from livenight.engines.export import build_tensorrt
    from livenight.engines.trt_engine import TensorRTEngine

    net, _ = small
    import copy

    export_onnx(copy.deepcopy(net), tmp_path / "h.onnx", fp16=True)
    build_tensorrt(tmp_path / "h.onnx", tmp_path / "h.engine")
    wins = _windows(5)
    with TorchEngine(net, SIZE) as ref, TensorRTEngine(tmp_path / "h.engine", SIZE, cuda_graph=True) as trt:
        for w in wins:
            assert np.abs(trt.step(w) - ref.step(w)).max() < 5e-2
