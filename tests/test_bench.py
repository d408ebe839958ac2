"""Benchmarks of the fast paths: what they compute and report (numbers and ratios, never wall-clock limits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livenight import bench


def test_gpu_bench_says_one_line_and_returns_nothing_without_cuda(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.bench_gpu() == {}
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("bench gpu: no CUDA device here")


@pytest.mark.parametrize("name, fp16", [("NVIDIA H200", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0)])
def test_gpu_peaks_by_name(name, fp16):
    assert bench.gpu_peak_tflops(name)[0] == fp16
    assert bench.gpu_peak_tflops("Some Future GPU") is None


def test_conv_flops_counts_two_per_multiply_add():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 8, 1, stride=2, groups=2)

        def forward(self, x, state):
            return self.b(self.a(x)), state

    flops = bench.conv_flops(Net(), torch.zeros(1, 3, 16, 20), ())
    assert flops == 2 * (8 * 16 * 20 * 3 * 9) + 2 * (8 * 8 * 10 * 4)


@pytest.mark.parametrize("name", ["ner-tiny", "firenet-s2"])  # a NER-Net-family and an E2VID-family model
def test_cpu_bench_reports_speed_and_parity_of_the_bf16_path(capsys, name):
    res = bench.bench_cpu(model=str(bench.Path(bench.__file__).parent / "weights" / f"{name}.pth"), windows=4,
                          state_variant=False)
    rows = res["paths"]
    assert set(rows) == {"fp32", "bf16"}
    assert rows["fp32"]["p999_levels"] == 0.0 and rows["fp32"]["speedup"] == 1.0
    assert 0.0 < rows["bf16"]["p999_levels"] <= 2.0  # bf16 differs, within the 2-level budget
    out = capsys.readouterr().out
    assert "p99.9" in out and f"{name}.pth" in out


def test_recorded_windows_fall_back_to_simulated_events_at_other_sizes():
    wins, where = bench.recorded_windows(3, (64, 48))
    assert where.startswith("simulated") and len(wins) == 3 and wins[0].reset and not wins[1].reset
    assert all(int(w.events["x"].max()) < 64 for w in wins)


def test_pipeline_bench_runs_the_file_through_sinks_and_baselines(capsys):
    res = bench.bench_pipeline(backends=("complementary",), seconds=0.4)
    r = res["complementary"]
    assert r["frames"] >= 5
    assert np.isfinite(r["fps_png"]) and r["fps_png"] > 0 and r["fps_null"] > 0
    assert "PNG/engine" in capsys.readouterr().out
