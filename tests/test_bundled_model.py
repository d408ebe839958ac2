"""The bundled ner-tiny model: shipped small, described, the default engine, and better than the classical filter."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from livenight.cli import main
from livenight.engines import bundled_model
from livenight.model.checkpoint import load_model
from livenight.simulate import write_night

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_model_is_small_described_and_reproducible_from_its_config():
    path = bundled_model()
    assert path is not None and path.name == "ner-tiny.pth"
    assert path.stat().st_size <= 5 * 1024 * 1024
    desc = json.loads(path.with_suffix(".json").read_text())
    ck = torch.load(path, map_location="cpu", weights_only=True)
    config = tomllib.loads((ROOT / desc["config"]).read_text())
    for key, value in config["model"].items():
        assert ck["model"][key] == value == desc["model"][key], key
    assert desc["command"] == f"livenight train {desc['config']}"
    assert ck["step"] == config["steps"] == desc["steps"]
    net = load_model(path, (346, 260))
    assert net.cfg.base_channels == config["model"]["base_channels"]


def test_default_engine_is_the_bundled_model(tmp_path, capsys):
    write_night(tmp_path / "s.h5", seconds=0.3, size=(64, 48), seed=3)
    assert main(["--replay", str(tmp_path / "s.h5"), "--no-gui", "--max-frames", "2"]) == 0
    assert "ner-tiny.pth: 2 frames" in capsys.readouterr().out


@pytest.mark.slow
def test_bundled_model_beats_the_classical_filter_on_a_held_out_night(tmp_path, capsys):
    write_night(tmp_path / "held.h5", seconds=1.0, size=(346, 260), seed=4242)  # a seed training never saw
    assert main(["eval", str(tmp_path / "held.h5")]) == 0
    tiny = capsys.readouterr().out
    assert main(["eval", str(tmp_path / "held.h5"), "--engine", "complementary"]) == 0
    classical = capsys.readouterr().out

    def ssim(text):
        return float(text.split("SSIM ")[1].split()[0])

    assert ssim(tiny) > ssim(classical) + 0.05


def test_ner_lite_weights_are_described_and_reproducible_from_their_config():
    # the experimental ner-lite weights (not the default: see livenight/weights/ner-lite.md)
    path = ROOT / "livenight" / "weights" / "ner-lite.pth"
    assert path.stat().st_size <= 5 * 1024 * 1024
    desc = json.loads(path.with_suffix(".json").read_text())
    assert desc["windows"] == {"kind": "time", "window_us": 40_000, "stride_us": 40_000}  # every event counts
    ck = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer" not in ck  # weights only
    config = tomllib.loads((ROOT / desc["config"]).read_text())
    for key, value in config["model"].items():
        assert ck["model"][key] == value == desc["model"][key], key
    assert desc["command"] == f"livenight train {desc['config']}"
    assert ck["step"] == config["steps"] == desc["steps"]
    assert set(desc) >= {"name", "config", "command", "data", "compute", "scores", "windows"}
    net = load_model(path, (346, 260))
    assert net.cfg.stem_stride == 4 and sum(p.numel() for p in net.parameters()) == desc["parameters"]


def test_the_bundled_model_sees_every_event_in_contiguous_windows(tmp_path, capsys):
    """Its metadata names contiguous 40 ms windows (every event counts), also on files that have RLED indices."""
    desc = json.loads(bundled_model().with_suffix(".json").read_text())
    assert desc["windows"] == {"kind": "time", "window_us": 40_000, "stride_us": 40_000}
    write_night(tmp_path / "s.h5", seconds=0.3, size=(64, 48), seed=3)  # a file with event_indices
    assert main(["--replay", str(tmp_path / "s.h5"), "--no-gui", "--max-frames", "2"]) == 0
    assert "contiguous 40 ms windows (25 frames/s)" in capsys.readouterr().out


def test_firenet_night_weights_are_described_and_reproducible_from_their_config(tmp_path, capsys):
    # the experimental FireNet weights (not the default: see livenight/weights/firenet-night.md)
    path = ROOT / "livenight" / "weights" / "firenet-night.pth"
    assert path.stat().st_size <= 1024 * 1024
    desc = json.loads(path.with_suffix(".json").read_text())
    assert desc["family"] == "e2vid" and desc["model"]["family"] == "FireNet"
    assert desc["windows"] == {"kind": "time", "window_us": 40_000, "stride_us": 40_000}  # every event counts
    ck = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer" not in ck and ck["family"] == "e2vid"
    config = tomllib.loads((ROOT / desc["config"]).read_text())
    assert config["family"] == "e2vid" and config["model"]["base_channels"] == desc["model"]["base_channels"]
    assert desc["command"] == f"livenight train {desc['config']}"
    assert ck["step"] == desc["steps"] <= config["steps"]  # a checkpoint of that (deterministic) run
    assert f"step-{desc['steps']:08d}.pth" in desc["weights_from"]
    assert set(desc) >= {"name", "config", "command", "data", "compute", "scores", "windows"}
    write_night(tmp_path / "s.h5", seconds=0.3, size=(64, 48), seed=3)
    assert main(["--replay", str(tmp_path / "s.h5"), "--no-gui", "--max-frames", "2", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "firenet-night.pth: 2 frames" in out and "contiguous 40 ms windows" in out
