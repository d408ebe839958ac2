"""The CPU fast path: bf16 detection, the prepared bf16 model, and the thread budget."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from livenight.cpu import (CpuFeatures, ThreadBudget, configure_threads, cpu_features, describe_cpu_path,
                           fast_cpu_dtype, parse_cpu_flags, plan_threads, prepare_cpu_model)
from livenight.model.nernet import NERNet, NERNetConfig

SPR = "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n"
ZEN4 = "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
OLD = "flags\t\t: fpu sse2 avx2\n"


@pytest.mark.parametrize("text, amx, avx, dtype, line", [
    (SPR, True, True, "bfloat16", "bf16 on AMX"),
    (ZEN4, False, True, "bfloat16", "bf16 on AVX512-BF16"),
    (OLD, False, False, "float32", "fp32"),
])
def test_features_from_cpuinfo_flags(tmp_path, text, amx, avx, dtype, line):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    f = cpu_features(path)
    assert (f.amx_bf16, f.avx512_bf16, f.source) == (amx, avx, "/proc/cpuinfo")
    assert fast_cpu_dtype(f) == dtype
    assert describe_cpu_path(fast_cpu_dtype(f), f) == line
    assert describe_cpu_path("float32", f) == "fp32"


def test_first_flags_line_only_and_torch_fallback(tmp_path):
    assert parse_cpu_flags(SPR) == {"fpu", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert parse_cpu_flags("no flags here") == set()
    f = cpu_features(tmp_path / "missing")  # no /proc/cpuinfo (macOS, Windows): torch's probes answer
    assert f.source == "torch"
    assert f.avx512_bf16 == torch.cpu._is_avx512_bf16_supported()


def _net(base=6, size=(64, 48)):
    torch.manual_seed(0)
    return NERNet(NERNetConfig(sensor_size=size, base_channels=base, kernel_size=3, num_residual_blocks=1,
                               rep_channels=16)).eval()


def test_float32_is_the_model_itself_and_other_dtypes_are_refused():
    net = _net()
    assert prepare_cpu_model(net, "float32") is net
    with pytest.raises(ValueError, match="'float16' needs a CUDA device|float16 needs a CUDA device"):
        prepare_cpu_model(net, "float16")


def test_bf16_model_casts_only_convolutions_of_a_copy_and_keeps_the_interface():
    net = _net()
    before = copy.deepcopy(net.state_dict())
    fast = prepare_cpu_model(net, "bfloat16")
    for k, v in net.state_dict().items():  # the caller's model is untouched
        assert v.dtype == torch.float32 and torch.equal(v, before[k])
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    others = [p for n, p in fast.named_parameters() if "LayerNorm" in type(fast.get_submodule(n.rsplit(".", 1)[0])).__name__
              or "PReLU" in type(fast.get_submodule(n.rsplit(".", 1)[0])).__name__]
    assert others and all(p.dtype == torch.float32 for p in others)
    mlp = fast.model.representation.quantization_layer.value_layer.mlp  # LETC's MLP stays float32 (the table)
    assert all(m.weight.dtype == torch.float32 for m in mlp)
    state = fast.initial_state()
    assert all(s.dtype == torch.float32 for s in state)
    grid = torch.rand(1, 10, 48, 64)
    with torch.inference_mode():
        img, new_state = fast(grid, state)
    assert img.dtype == torch.float32 and img.shape == (1, 1, 48, 64)
    assert [s.shape for s in new_state] == [s.shape for s in state]


def test_bf16_keeps_the_cell_state_in_float32_and_tracks_fp32_over_40_steps():
    # GIVEN the same 40 random grids through the fp32 model and the bf16 path
    net = _net()
    fast = prepare_cpu_model(net, "bfloat16")
    rng = np.random.default_rng(1)
    s32, s16 = net.initial_state(), fast.initial_state()
    diffs = []
    with torch.inference_mode():
        for _ in range(40):
            g = torch.from_numpy(rng.random((1, 10, 48, 64), dtype=np.float32) * (rng.random((1, 1, 48, 64)) < 0.05))
            a, s32 = net(g, s32)
            b, s16 = fast(g, s16)
            diffs.append(float((a - b).abs().max()))
    # THEN the LSTM cell states (c0..c2, only ever used elementwise) stay float32, and the frames stay close
    assert [s.dtype for s in s16[3:6]] == [torch.float32] * 3
    spread = float(a.max() - a.min())
    assert max(diffs) < 0.05 * max(spread, 1e-3), (max(diffs), spread)
    assert max(diffs[-10:]) < 3 * max(max(diffs[:10]), 1e-6)  # no drift: late errors like early ones


def test_a_gru_network_runs_wholly_in_bf16_and_tracks_fp32_over_40_steps():
    # GIVEN a FireNet (GRU state: declares bf16_state) and the same 40 sparse random voxel grids through both paths
    from livenight.model.e2vid import FireNet, FireNetConfig

    torch.manual_seed(0)
    net = FireNet(FireNetConfig(family="FireNet", sensor_size=(64, 48), stem_stride=2, base_channels=8)).eval()
    fast = prepare_cpu_model(net, "bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    rng = np.random.default_rng(2)
    s32, s16 = net.initial_state(), fast.initial_state()
    assert all(s.dtype == torch.bfloat16 for s in s16)
    diffs = []
    with torch.inference_mode():
        for _ in range(40):
            g = torch.from_numpy((rng.standard_normal((1, 5, 48, 64)) * (rng.random((1, 1, 48, 64)) < 0.05))
                                 .astype(np.float32))
            a, s32 = net(g, s32)
            b, s16 = fast(g, s16)
            diffs.append(float((a - b).abs().max()))
    # THEN the state stays bf16, the image comes back float32, and the frames stay close without drifting
    assert all(s.dtype == torch.bfloat16 for s in s16) and b.dtype == torch.float32
    spread = float(a.max() - a.min())
    assert max(diffs) < 0.05 * max(spread, 1e-3), (max(diffs), spread)
    assert max(diffs[-10:]) < 3 * max(max(diffs[:10]), 1e-6)


@pytest.mark.parametrize("cores, compute, want", [(1, None, 1), (2, None, 1), (8, None, 7), (8, 3, 3), (2, 5, 2)])
def test_plan_leaves_a_core_for_capture_and_display(cores, compute, want):
    b = plan_threads(cores=cores, compute=compute)
    assert (b.cores, b.compute, b.numba, b.interop) == (cores, want, want, 1)
    with pytest.raises(ValueError, match="compute threads must be >= 1"):
        plan_threads(cores=2, compute=0)


def test_configure_writes_the_environment_and_user_values_win():
    env = {}
    b = configure_threads(environ=env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["KMP_BLOCKTIME"] == "0"
    assert env["OMP_NUM_THREADS"] == str(b.compute)
    assert b.passive is False  # torch is already imported in this test process: its OpenMP pool exists
    assert "may spin" in b.describe()
    assert env["NUMBA_NUM_THREADS"] == str(b.numba)
    env = {"OMP_WAIT_POLICY": "ACTIVE", "LIVENIGHT_THREADS": "1", "OMP_NUM_THREADS": "3"}
    b = configure_threads(environ=env)  # $LIVENIGHT_THREADS beats the user's OMP_NUM_THREADS; ACTIVE is kept
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["OMP_NUM_THREADS"] == "1" and b.compute == 1
    assert b.passive is False
    assert configure_threads(compute=1, environ={"LIVENIGHT_THREADS": "2"}).compute == 1  # --threads beats both
    assert configure_threads(environ={"OMP_NUM_THREADS": "1"}).compute == 1


def test_configure_before_torch_sets_every_pool():
    # a fresh interpreter: the budget is applied before torch loads its OpenMP runtime
    code = ("import livenight.cpu as c, sys; b = c.configure_threads(); import torch, numba, os;"
            "print(b.compute, torch.get_num_threads(), numba.get_num_threads(), os.environ['OMP_WAIT_POLICY'],"
            " b.passive, b.describe())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split(maxsplit=5)
    compute = int(out[0])
    assert int(out[1]) == compute and int(out[2]) == compute and out[3] == "PASSIVE" and out[4] == "True"
    assert "workers sleep" in out[5]


def test_ort_options_size_the_pool_and_stop_spinning():
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    ThreadBudget(cores=2, compute=1, numba=1, interop=1, passive=True).ort_options(so)
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert CpuFeatures(False, False, "none").bf16_unit == ""


def test_doctor_reports_the_cpu_path_and_the_thread_budget():
    from livenight.doctor import report

    rows = {name: (ok, detail) for name, ok, detail in report()}
    ok, detail = rows["CPU fast path"]
    feats = cpu_features()
    assert ok and detail.startswith(describe_cpu_path(fast_cpu_dtype(feats), feats))
    assert "compute thread" in detail and "cores" in detail
