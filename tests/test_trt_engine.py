"""TensorRT engine, CPU-side logic only, with a stand-in ``tensorrt`` module.

No GPU or TensorRT exists where these run, so the stand-in records what the engine asks of TensorRT; what needs the
hardware (stream order, graphs, parity with torch) is tested in test_engines.py behind the ``tensorrt`` marker.
These check the parts that would fail the same way on a GPU: the ONNX parsed from its path, and every boolean
TensorRT result checked.
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import pytest
import torch

from livenight.engines.export import export_onnx
from livenight.engines.sidecar import read_sidecar
from livenight.errors import SourceError
from livenight.model.nernet import NERNet, NERNetConfig

SIZE = (44, 30)


class _Parser:
    def __init__(self, network, logger, fail=False):
        self.calls, self.fail, self.num_errors = [], fail, 1 if fail else 0

    def parse(self, *args, **kwargs):  # the bytes API: must not be used (external weights would be lost)
        raise AssertionError("parse(bytes) called; the ONNX must be parsed from its path")

    def parse_from_file(self, path):
        self.calls.append(path)
        return not self.fail

    def get_error(self, i):
        return "node 3 (Conv): unsupported"


def _fake_trt(fail_parse=False):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99-fake"
    trt.parsers = []

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Config:
        def set_memory_pool_limit(self, *a):
            pass

        def create_timing_cache(self, data):
            return object()

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            return b"PLAN"

    def parser(network, logger):
        p = _Parser(network, logger, fail_parse)
        trt.parsers.append(p)
        return p

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, parser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    return trt


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trt") / "m.onnx"
    export_onnx(NERNet(NERNetConfig(sensor_size=SIZE, base_channels=8)).eval(), path)
    return path


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))


def test_build_parses_the_onnx_from_its_path_wherever_it_runs(onnx_path, tmp_path, monkeypatch, fake_gpu):
    from livenight.engines.trt_engine import build_engine

    trt = _fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.chdir(tmp_path)  # not the ONNX file's folder
    meta = build_engine(os.path.relpath(onnx_path, tmp_path), tmp_path / "m.engine")
    assert trt.parsers[0].calls == [str(onnx_path.resolve())]
    assert (tmp_path / "m.engine").read_bytes() == b"PLAN"
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side["tensorrt"]["gpu"] == "Fake GPU" and side["tensorrt"]["version"] == "10.99-fake"
    assert side["tensorrt"]["onnx_sha256"] == read_sidecar(onnx_path)["onnx"]["sha256"] == meta["tensorrt"]["onnx_sha256"]


def test_a_parse_failure_is_one_line_naming_the_file_and_the_error(onnx_path, tmp_path, monkeypatch, fake_gpu):
    from livenight.engines.trt_engine import build_engine

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(fail_parse=True))
    with pytest.raises(SourceError, match=r"m\.onnx: TensorRT cannot parse it: node 3 \(Conv\): unsupported$"):
        build_engine(onnx_path, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


class _Buf:
    def __init__(self, ptr):
        self.ptr = ptr

    def data_ptr(self):
        return self.ptr


class _Ctx:
    """Stands in for an IExecutionContext: refuses one named tensor's address, or the enqueue."""

    def __init__(self, refuse_name=None, refuse_enqueue=False):
        self.refuse_name, self.refuse_enqueue, self.bound = refuse_name, refuse_enqueue, {}

    def set_tensor_address(self, name, ptr):
        self.bound[name] = ptr
        return name != self.refuse_name

    def execute_async_v3(self, stream_handle):
        return not self.refuse_enqueue


def _engine_with(ctx):
    """A TensorRTEngine with just the fields binding and enqueueing use (no GPU to open one for real)."""
    from livenight.engines.trt_engine import TensorRTEngine

    eng = TensorRTEngine.__new__(TensorRTEngine)
    eng.path, eng._ctx = "/models/ner.engine", ctx
    eng._in_name, eng._out_name, eng._names = "input", "image", ["h0", "c0"]
    eng._in, eng._image = _Buf(1), _Buf(2)
    eng._sets = [[_Buf(10), _Buf(11)], [_Buf(20), _Buf(21)]]
    eng._stream = types.SimpleNamespace(cuda_stream=1234)
    return eng


def test_bindings_ping_pong_and_every_refused_address_raises_one_line():
    from livenight.engines.trt_engine import TensorRTError

    ctx = _Ctx()
    eng = _engine_with(ctx)
    eng._bind(1)  # parity 1 reads set 1 and writes set 0
    assert ctx.bound == {"input": 1, "image": 2, "h0_in": 20, "h0_out": 10, "c0_in": 21, "c0_out": 11}
    for name in ("input", "image", "c0_in", "h0_out"):
        with pytest.raises(TensorRTError, match=rf"^ner\.engine: TensorRT refused the address of '{name}' "):
            _engine_with(_Ctx(refuse_name=name))._bind(0)


def test_a_refused_enqueue_raises_instead_of_returning_a_stale_frame():
    from livenight.engines.trt_engine import TensorRTError

    _engine_with(_Ctx())._enqueue()
    with pytest.raises(TensorRTError, match=r"refused the enqueue \(execute_async_v3\)"):
        _engine_with(_Ctx(refuse_enqueue=True))._enqueue()


def test_the_old_cuda_graph_keyword_still_works(onnx_path, tmp_path):
    from livenight.engines.trt_engine import TensorRTEngine

    plan = tmp_path / "x.engine"
    plan.write_bytes(b"")
    (tmp_path / "x.engine.json").write_text((onnx_path.parent / "m.onnx.json").read_text())
    assert TensorRTEngine(plan, SIZE, cuda_graph=True).cuda_graphs is True
    assert TensorRTEngine(plan, SIZE, cuda_graphs=True).cuda_graphs is True
    assert TensorRTEngine(plan, SIZE).cuda_graphs is False
    np.testing.assert_array_equal(TensorRTEngine(plan, SIZE).info.sensor_size, SIZE)


# ---------------------------------------------------------------------------------------------- stream order
# A stand-in for the few torch.cuda pieces the engine's step uses, recording on which stream each operation is
# issued. It checks the order the engine asks for (upload, enqueue, download, event, wait); that CUDA then honours
# that order is what the GPU test in test_engines.py checks.
class _Streams:
    def __init__(self):
        self.log, self.active = [], ["default"]


class _FakeStream:
    def __init__(self, rec, name):
        self.rec, self.name, self.cuda_stream = rec, name, 7

    def wait_stream(self, other):
        self.rec.log.append(("wait", self.name, other.name))

    def synchronize(self):
        self.rec.log.append(("stream-sync", self.name))


class _FakeTensor:
    def __init__(self, rec, name, arr=None):
        self.rec, self.name, self.arr = rec, name, arr

    def copy_(self, src, non_blocking=False):
        self.rec.log.append(("copy", self.name, src.name, self.rec.active[-1]))

    def zero_(self):
        self.rec.log.append(("zero", self.name, self.rec.active[-1]))

    def __getitem__(self, key):
        return self

    def data_ptr(self):
        return id(self)

    def numpy(self):
        return self.arr


def _fake_torch(rec):
    from contextlib import contextmanager

    @contextmanager
    def stream(s):
        rec.active.append(s.name)
        try:
            yield
        finally:
            rec.active.pop()

    default = _FakeStream(rec, "default")
    cuda = types.SimpleNamespace(stream=stream, current_stream=lambda device=None: default)
    return types.SimpleNamespace(cuda=cuda)


class _LoggingCtx(_Ctx):
    def __init__(self, rec):
        super().__init__()
        self.rec = rec

    def execute_async_v3(self, stream_handle):
        self.rec.log.append(("enqueue", stream_handle, self.rec.active[-1]))
        return True


class _Event:
    def __init__(self, rec):
        self.rec = rec

    def record(self, stream):
        self.rec.log.append(("record", stream.name))

    def synchronize(self):
        self.rec.log.append(("event-sync",))


def _stream_engine(rec, cuda_graphs=False):
    eng = _engine_with(_LoggingCtx(rec))
    eng._torch, eng.device, eng.cuda_graphs, eng._parity = _fake_torch(rec), "cuda:0", cuda_graphs, 0
    eng._stream, eng._done = _FakeStream(rec, "engine"), _Event(rec)
    host_in = np.zeros((10, 3, 4), np.float32)
    eng._host_in, eng._input = _FakeTensor(rec, "host_in", host_in), host_in
    eng._host_out = _FakeTensor(rec, "host_out", np.zeros((8, 8), np.float32))
    eng._in, eng._in_f32 = _FakeTensor(rec, "in"), _FakeTensor(rec, "in_f32")
    eng._image, eng._image_f32 = _FakeTensor(rec, "image"), _FakeTensor(rec, "image_f32")
    eng._sets = [[_FakeTensor(rec, f"s{p}{i}") for i in range(2)] for p in range(2)]
    return eng


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_a_step_is_issued_on_the_engine_stream_and_read_after_its_event(cuda_graphs):
    rec = _Streams()
    eng = _stream_engine(rec, cuda_graphs)
    eng._graphs = {p: types.SimpleNamespace(replay=lambda p=p: rec.log.append(("replay", p, rec.active[-1])))
                   for p in (0, 1)}
    x = np.ones((10, 3, 4), np.float32)
    out = eng._run(x)
    np.testing.assert_array_equal(eng._input, x)  # the representation's output went into the pinned upload buffer
    run = ("replay", 0, "engine") if cuda_graphs else ("enqueue", 7, "engine")
    assert rec.log == [("wait", "engine", "default"),  # after whatever the caller queued on its stream
                       ("copy", "in_f32", "host_in", "engine"), ("copy", "in", "in_f32", "engine"), run,
                       ("copy", "image_f32", "image", "engine"), ("copy", "host_out", "image_f32", "engine"),
                       ("record", "engine"), ("event-sync",)]  # the host reads only after this
    assert out is eng._host_out.arr and eng._parity == 1


def test_reset_is_queued_on_the_engine_stream_behind_the_step():
    rec = _Streams()
    eng = _stream_engine(rec)
    eng._parity = 1
    eng._reset_state()
    assert rec.log == [("zero", f"s{p}{i}", "engine") for p in range(2) for i in range(2)] and eng._parity == 0
