"""Engines: export + ONNX Runtime parity with torch over recurrent steps, sidecar checks, suffix dispatch, CUDA/TRT
paths behind markers."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

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


# ---------------------------------------------------------------------------------------------- CUDA / TensorRT
BUNDLED = Path(__file__).resolve().parents[1] / "livenight" / "weights" / "ner-tiny.pth"


@pytest.fixture(scope="module")
def tiny44():
    """The bundled ner-tiny built at 44x30: its trained recurrence makes the state matter (carried vs reset on the
    sequence below: about 0.15), where the random `small` net's state effect is only about 4e-3."""
    from livenight.model.checkpoint import load_model

    return load_model(BUNDLED, SIZE).eval()


def _state_sequence():
    """20 dense windows, then one with only 20 events: the last frame is mostly what the state carries."""
    wins = _windows(20)
    sparse = _windows(1, seed=5, per_window=20)[0].events.copy()
    t0 = wins[-1].t0_us + 40_000
    sparse["t"] += t0 - int(sparse["t"][0])
    return wins + [Window(20, t0, int(sparse["t"][-1]) + 1, sparse, False, 0)]


def _torch_outputs(net, seq):
    with TorchEngine(copy.deepcopy(net), SIZE) as eng:
        return [eng.step(w).copy() for w in seq]


@pytest.mark.gpu
def test_torch_engine_cuda_fp16_close_to_fp32_over_20_recurrent_steps(tiny44):
    # the engine gets a model whose weights are already in place (its LETC table is built on open, from them)
    wins = _windows(20)
    ref = _torch_outputs(tiny44, wins)
    with TorchEngine(copy.deepcopy(tiny44), SIZE, device="cuda", dtype="float16") as half:
        diffs = [float(np.abs(half.step(w) - r).max()) for w, r in zip(wins, ref)]
    assert max(diffs) <= 1e-2, diffs
    assert next(tiny44.parameters()).dtype == torch.float32  # the caller's model is untouched


@pytest.mark.tensorrt
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_tensorrt_carries_the_state_reads_finished_frames_and_resets(tiny44, tmp_path, cuda_graphs):
    from livenight.engines.export import build_tensorrt
    from livenight.engines.trt_engine import TensorRTEngine

    seq = _state_sequence()
    ref = _torch_outputs(tiny44, seq)
    last = seq[-1]
    fresh = _torch_outputs(tiny44, [Window(0, last.t0_us, last.t1_us, last.events, True, 0)])[0]
    effect = float(np.abs(ref[-1] - fresh).max())  # what the carried state contributes to the last frame
    assert effect > 0.05
    tol = effect / 10
    # a frame read before the stream finished would be the previous one: consecutive frames differ by more than tol
    assert min(float(np.abs(a - b).max()) for a, b in zip(ref[:-1], ref[1:])) > tol
    export_onnx(tiny44, tmp_path / "h.onnx", fp16=True)
    build_tensorrt(tmp_path / "h.onnx", tmp_path / "h.engine")
    with TensorRTEngine(tmp_path / "h.engine", SIZE, cuda_graphs=cuda_graphs) as trt:
        assert trt.cuda_graphs == cuda_graphs  # capture worked (it falls back with a warning otherwise)
        errors = [float(np.abs(trt.step(w) - r).max()) for w, r in zip(seq, ref)]
        trt.reset()  # queued on the engine's stream, after the last step
        after_reset = trt.step(last).copy()
    assert max(errors) <= tol, (errors, tol)
    assert float(np.abs(after_reset - fresh).max()) <= tol


@pytest.mark.tensorrt
def test_tensorrt_builds_from_an_onnx_with_external_weights_from_another_folder(tiny44, tmp_path, monkeypatch):
    """torch's exporter can leave weights in ``model.onnx.data``: the parser must find them from the file's path."""
    import onnx

    from livenight.engines.export import build_tensorrt

    export_onnx(tiny44, tmp_path / "x.onnx", fp16=True)
    proto = onnx.load(str(tmp_path / "x.onnx"))
    onnx.save_model(proto, str(tmp_path / "x.onnx"), save_as_external_data=True, location="x.onnx.data",
                    size_threshold=0)
    assert (tmp_path / "x.onnx.data").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    meta = build_tensorrt(tmp_path / "x.onnx", elsewhere / "x.engine")
    assert (elsewhere / "x.engine").stat().st_size > 0 and meta["tensorrt"]["onnx"] == "x.onnx"
