"""The bundled firenet-s2 model: shipped small, described, reproducible from its config, the default engine, and
better than the classical filter; the other shipped weights (ner-tiny, ner-lite, firenet-night) described too."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from livenight import families
from livenight.cli import main
from livenight.engines import bundled_model
from livenight.model.checkpoint import load_model
from livenight.simulate import write_night

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "livenight" / "weights"


def test_bundled_model_is_small_described_and_reproducible_from_its_config():
    path = bundled_model()
    assert path is not None and path.name == "firenet-s2.pth"
    assert path.stat().st_size <= 1024 * 1024
    desc = json.loads(path.with_suffix(".json").read_text())
    assert set(desc) >= {"name", "config", "command", "data", "compute", "scores", "windows", "weights_from", "speed"}
    assert desc["windows"] == {"kind": "time", "window_us": 40_000, "stride_us": 40_000}  # every event counts
    ck = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer" not in ck and ck["family"] == desc["family"] == "e2vid"
    config = tomllib.loads((ROOT / desc["config"]).read_text())
    assert config["family"] == "e2vid" and desc["command"] == f"livenight train {desc['config']}"
    for key, value in config["model"].items():
        assert ck["model"][key] == value == desc["model"][key], key
    assert ck["step"] == config["steps"] == desc["steps"]  # the run's last step, not a checkpoint picked from it
    assert f"step-{desc['steps']:08d}.pth" in desc["weights_from"]
    # a fine-tune starts from the output of another config's run (never from the file it replaces), same network
    stage1 = tomllib.loads((ROOT / desc["init_config"]).read_text())
    assert config["init"] == f"{stage1['out_dir']}/last.pth" and stage1["model"] == config["model"]
    assert f"livenight train {desc['init_config']}" in desc["commands"]
    # the weights were trained with what the repo's config says (losses, data, schedule, ...): only where the run
    # wrote its files and read its start may differ (a path to the same stage-1 weights)
    from livenight.training import load_config

    repo = load_config(ROOT / desc["config"]).to_dict()
    ran = desc["train_config"]
    assert sorted(ran) == sorted(repo)
    assert {k: v for k, v in ran.items() if k not in ("out_dir", "init")} == \
        {k: v for k, v in repo.items() if k not in ("out_dir", "init")}
    net = families.load(path, (346, 260))[1]
    assert net.cfg.stem_stride == 2 and sum(p.numel() for p in net.parameters()) == desc["parameters"]
    # its bf16 CPU path was measured on its own weights, so "auto" takes it
    assert desc["fast_dtypes_checked"] == ["bfloat16"]


def test_ner_tiny_weights_are_small_described_and_reproducible_from_their_config():
    path = WEIGHTS / "ner-tiny.pth"
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


def test_default_engine_is_the_bundled_model_in_bf16_where_the_cpu_has_it(tmp_path, capsys):
    from livenight.cpu import fast_cpu_dtype

    write_night(tmp_path / "s.h5", seconds=0.3, size=(64, 48), seed=3)
    assert main(["--replay", str(tmp_path / "s.h5"), "--no-gui", "--max-frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "firenet-s2.pth: 2 frames" in out and f"(torch cpu {fast_cpu_dtype()})" in out


@pytest.mark.slow
def test_bundled_model_beats_the_classical_filter_on_a_held_out_night(tmp_path, capsys):
    # a night street from the other simulator (the bundled model was trained on natural scenes only), a seed no
    # training used; measured 0.504 / 0.066 (bf16 and float32 alike) against the classical filter's 0.441 / 0.074
    # (SSIM / MSE). The stage-1 weights had 0.479 / 0.047: the fine-tune on linear irradiance puts the unknown
    # background darker, which costs MSE against this simulator's mid-grey well-lit frames.
    write_night(tmp_path / "held.h5", seconds=1.0, size=(346, 260), seed=4242)
    assert main(["eval", str(tmp_path / "held.h5")]) == 0
    bundled = capsys.readouterr().out
    assert main(["eval", str(tmp_path / "held.h5"), "--engine", "complementary"]) == 0
    classical = capsys.readouterr().out

    def score(text, name):
        return float(text.split(f"{name} ")[1].split()[0])

    assert score(bundled, "SSIM") > score(classical, "SSIM") + 0.02
    assert score(bundled, "MSE") < score(classical, "MSE")


@pytest.mark.slow
def test_bundled_model_beats_the_classical_filter_on_the_real_davis_clip(shared_data, capsys):
    # issue 12's metric on the real DAVIS346 clip, every event in contiguous 40 ms windows; measured 0.203 / 0.269
    # (bf16; 0.204 / 0.270 float32) against the classical filter's 0.174 / 0.225 (active pixels / full frame).
    # The stage-1 weights scored 0.163 / 0.179 (below the filter on both); the stage 2 before the normalised SSIM
    # terms 0.188 / 0.234.
    path = shared_data("davis346.aedat4")
    args = ["eval", str(path), "--windows", "time", "--window-ms", "40", "--stride-ms", "40"]
    assert main(args) == 0
    bundled = capsys.readouterr().out
    assert main([*args, "--engine", "complementary"]) == 0
    classical = capsys.readouterr().out

    def scores(text):
        line = next(x for x in text.splitlines() if "SSIM on active pixels" in x)
        return float(line.split("active pixels ")[1].split()[0]), float(line.split("full-frame SSIM ")[1].split()[0])

    (active, full), (c_active, c_full) = scores(bundled), scores(classical)
    assert active > c_active + 0.005 and full > c_full + 0.005, (bundled, classical)
    assert active > 0.19 and full > 0.255  # (a regression from the shipped weights, ±0.01 being checkpoint noise)


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
