"""Training: config loading, sequence windows, crop/flip alignment, memmap preparation, losses, a real overfit,
checkpoint round trip, exact resume, and a two-process DDP step on the CPU (gloo)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import livenight
from livenight.events import EVENT_DTYPE
from livenight.letc import official_times
from livenight.model.checkpoint import load_model
from livenight.simulate import write_night
from livenight.model.nernet import NERNet, NERNetConfig
from livenight.training import (ArrayRecording, Augment, H5Recording, MemmapRecording, SequenceDataset,
                                SequenceModel, StepBatchSampler, TrainConfig, Trainer, load_config, natural_params,
                                prepare, run_train, ssim, synthetic_params, train, warp)

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"base_channels": 4, "num_encoders": 2, "num_residual_blocks": 1, "kernel_size": 3, "rep_channels": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP spin-waits make 2 threads up to
    50x slower under contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rled_dir(tmp_path_factory) -> Path:
    """Two 0.5 s training recordings (13 frames, 12 windows each) and one 0.3 s validation recording, 48×40."""
    d = tmp_path_factory.mktemp("rled")
    (d / "train").mkdir()
    (d / "val").mkdir()
    write_night(d / "train" / "a.h5", seconds=0.5, size=(48, 40), seed=3)
    write_night(d / "train" / "b.h5", seconds=0.5, size=(48, 40), seed=4)
    write_night(d / "val" / "v.h5", seconds=0.3, size=(48, 40), seed=5)
    return d


def _config(tmp_path: Path, rled_dir: Path, name: str = "cfg", **top) -> Path:
    cfg = {"out_dir": str(tmp_path / name), "sequence_length": 4, "crop": 32, "steps": 2, "lr": 1e-3,
           "checkpoint_every": 1, "val_every": 2, "seed": 7, "model": TINY_MODEL,
           "losses": {"l1": 1.0, "ssim": 0.5, "lpips": 0.0},
           "log": {"progress": False, "tensorboard": False},
           "data": {"files": [str(rled_dir / "train" / "*.h5")]},
           "val": {"files": [str(rled_dir / "val")], "sequence_length": 4}}
    cfg.update(top)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


# ------------------------------------------------------------------------------------------------ config


def test_ner_tiny_config_loads_with_overrides_and_unknown_keys_fail(tmp_path):
    cfg = load_config(ROOT / "configs" / "ner-tiny.toml", overrides={"steps": 7, "model.base_channels": 8})
    assert cfg.steps == 7 and cfg.model.base_channels == 8 and cfg.model.num_encoders == 3
    assert cfg.model.sensor_size == (cfg.crop, cfg.crop) == (128, 128)
    assert cfg.sequence_length == 16 and cfg.amsgrad and cfg.schedule == "constant"
    assert cfg.data.synthetic.count > 0 and cfg.val.synthetic.seed != cfg.data.synthetic.seed
    assert cfg.data.synthetic.illuminance == (0.02, 0.2)
    assert load_config(ROOT / "configs" / "ner-tiny.toml", overrides=["crop=96"]).model.sensor_size == (96, 96)
    # the JSON form of the same config round-trips
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert load_config(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="unknown config keys.*stepz"):
        load_config(ROOT / "configs" / "ner-tiny.toml", overrides={"stepz": 1})
    with pytest.raises(ValueError, match=r"unknown \[model\] keys"):
        load_config(ROOT / "configs" / "ner-tiny.toml", overrides={"model.width": 1})


def test_synthetic_recordings_draw_varied_deterministic_parameters():
    cfg = load_config(ROOT / "configs" / "ner-tiny.toml")
    spec = cfg.data.synthetic
    draws = [synthetic_params(spec, i) for i in range(12)]
    illum = [d[2].illuminance for d in draws]
    assert all(0.02 <= v <= 0.2 for v in illum) and max(illum) / min(illum) > 2
    assert len({d[0] for d in draws}) == 12  # distinct simulation seeds
    assert len({d[1].n_objects for d in draws}) > 1 and len({round(d[2].tau_ref_us) for d in draws}) == 12
    assert synthetic_params(spec, 3) == draws[3]
    held_out = {synthetic_params(cfg.val.synthetic, i)[0] for i in range(cfg.val.synthetic.count)}
    assert not held_out & {synthetic_params(spec, i)[0] for i in range(spec.count)}


# ------------------------------------------------------------------------------------------------ data


def test_dataset_windows_equal_event_indices_slices(rled_dir):
    rec = H5Recording(rled_dir / "train" / "a.h5")
    ds = SequenceDataset([rec], sequence_length=4, crop=None)
    assert rec.num_windows == rec.num_images - 1 == 12 and len(ds) == 3
    from livenight.drivers.rled import RledFile

    with RledFile(rec.path) as f:
        for k in range(len(ds)):
            item = ds[k]
            for j, (x, y, t, p) in enumerate(item.events):
                i = item.start + j
                a, b = f.event_indices[i]
                ev = f.read_events(a, b)
                assert ev.size > 0
                np.testing.assert_array_equal(x, ev["x"])
                np.testing.assert_array_equal(y, ev["y"])
                np.testing.assert_array_equal(t, official_times(ev["t"]))
                np.testing.assert_array_equal(p, ev["p"].astype(np.float32) * 2 - 1)
                np.testing.assert_array_equal(item.frames[j], f.image(i))
    assert [ds.index[k][1] for k in range(3)] == [0, 4, 8]


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("vflip", [False, True])
def test_crop_and_flips_keep_events_on_their_pixels(hflip, vflip):
    w, h = 30, 20
    frame = np.zeros((1, h, w), np.uint8)
    frame[0, 7, 13] = 255  # bright pixel at x=13, y=7
    ev = np.zeros(3, EVENT_DTYPE)
    ev["t"] = [100, 5000, 9000]
    ev["x"] = [13, 2, 13]  # the second event lies left of the crop
    ev["y"] = [7, 7, 7]
    ev["p"] = [1, 0, 1]
    rec = ArrayRecording(ev, np.repeat(frame, 2, axis=0), [[0, 3], [3, 3]])
    aug = Augment(x0=5, y0=3, width=16, height=12, hflip=hflip, vflip=vflip)
    item = SequenceDataset([rec], 1, crop=16).item(0, aug)
    x, y, t, p = item.events[0]
    assert x.tolist() == [x[0]] * 2 and y.tolist() == [y[0]] * 2  # the outside event is gone
    ys, xs = np.nonzero(item.frames[0])
    assert (xs.tolist(), ys.tolist()) == ([x[0]], [y[0]])
    assert x[0] == (16 - 1 - 8 if hflip else 8) and y[0] == (12 - 1 - 4 if vflip else 4)
    np.testing.assert_array_equal(t, official_times(np.array([100, 9000])))
    # flow moves with the pixels: a flip negates the flipped component
    fl = np.zeros((2, h, w), np.float32)
    fl[:, 7, 13] = (2.0, -1.0)
    out = aug.flow(fl)
    assert out[:, y[0], x[0]].tolist() == [-2.0 if hflip else 2.0, 1.0 if vflip else -1.0]


def test_empty_window_gets_the_official_dummy_event():
    ev = np.zeros(1, EVENT_DTYPE)
    ev["x"], ev["y"] = 29, 19  # outside the crop below
    rec = ArrayRecording(ev, np.zeros((2, 20, 30), np.uint8), [[0, 1], [1, 1]])
    x, y, t, p = SequenceDataset([rec], 1, crop=8).item(0, Augment(0, 0, 8, 8)).events[0]
    assert (x.tolist(), y.tolist(), t.tolist(), p.tolist()) == ([0], [0], [0.0], [1.0])


def test_sampler_is_deterministic_and_shards_disjoint():
    a = [StepBatchSampler(10, batch=1, steps=5, seed=3, rank=r, world_size=2) for r in range(2)]
    seqs = [[k[0][0] for k in s] for s in a]
    assert not set(seqs[0]) & set(seqs[1]) and sorted(seqs[0] + seqs[1]) == list(range(10))
    resumed = StepBatchSampler(10, batch=1, steps=5, start_step=2, seed=3, rank=0, world_size=2)
    assert list(resumed) == list(a[0])[2:]
    assert len({k[0][1] for k in a[0]}) == 5  # a fresh crop / flip seed per step


def test_prepared_memmap_gives_the_same_sequences_as_h5(rled_dir, tmp_path):
    res = prepare(rled_dir / "train", tmp_path / "mm", progress=False)
    assert sorted(Path(p).name for p in res["prepared"]) == ["a", "b"]
    assert prepare(rled_dir / "train", tmp_path / "mm", progress=False)["skipped"]  # unchanged: skipped
    mm = MemmapRecording(tmp_path / "mm" / "a")
    meta = json.loads((tmp_path / "mm" / "a" / "metadata.json").read_text())
    assert meta["sensor_size"] == [48, 40] and meta["sensor_resolution"] == [40, 48]
    assert np.load(tmp_path / "mm" / "a" / "t.npy").dtype == np.int64
    assert np.load(tmp_path / "mm" / "a" / "xy.npy").dtype == np.int16
    h5 = H5Recording(rled_dir / "train" / "a.h5")
    ds_h5 = SequenceDataset([h5], 4, crop=32, flips=True)
    ds_mm = SequenceDataset([mm], 4, crop=32, flips=True)
    assert len(ds_h5) == len(ds_mm) == 3
    for key in [(0, 11), (1, 12), (2, 13)]:
        a, b = ds_h5[key], ds_mm[key]
        assert a.augment == b.augment
        np.testing.assert_array_equal(a.frames, b.frames)
        for ea, eb in zip(a.events, b.events):
            for ca, cb in zip(ea, eb):
                np.testing.assert_array_equal(ca, cb)
                assert ca.dtype == cb.dtype
    # the data loader finds prepared folders through their parent folder too
    from livenight.training import open_recordings

    assert sorted(r.name for r in open_recordings([str(tmp_path / "mm")])) == ["a", "b"]
    both = open_recordings([str(tmp_path / "mm"), str(rled_dir / "train" / "*.h5")])
    assert sorted((type(r).__name__, r.name) for r in both) == [("MemmapRecording", "a"), ("MemmapRecording", "b")]


# ------------------------------------------------------------------------------------------------ losses


def test_ssim_matches_scikit_image_and_warp_shifts():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((24, 30))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ref = metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
    got = ssim(torch.from_numpy(a)[None, None].double(), torch.from_numpy(b)[None, None].double())
    assert abs(float(got) - ref) < 1e-5
    img = torch.arange(20.0).view(1, 1, 4, 5)
    flow = torch.zeros(1, 2, 4, 5)
    flow[:, 0] = 1.0  # sample one pixel to the right
    out = warp(img, flow)
    torch.testing.assert_close(out[..., :4], img[..., 1:])
    assert torch.all(out[..., 4] < img[..., 4])  # half outside: zero padded


def test_active_ssim_loss_scores_only_where_the_scene_moved():
    from livenight.eval import active_mask as eval_mask
    from livenight.training.losses import active_mask, active_ssim_loss

    rng = np.random.default_rng(3)
    prev = rng.integers(0, 256, (40, 50)).astype(np.uint8)
    cur = prev.copy()
    cur[10:14, 20:26] = np.clip(cur[10:14, 20:26].astype(int) + 60, 0, 255)  # an object moved here
    cur[30, 5] = cur[30, 5] ^ 4  # a change of 4 grey levels: below the threshold
    as_t = lambda a: torch.from_numpy(a.astype(np.float32) / 255)[None, None]
    # the same pixels as livenight eval's metric (numpy / scipy, written separately)
    assert np.array_equal(active_mask(as_t(cur), as_t(prev))[0, 0].numpy() > 0, eval_mask(cur, prev))
    gt, prev_gt = as_t(cur), as_t(prev)
    wrong_far = gt.clone()
    wrong_far[..., 30:, :8] = 0.5  # wrong only where nothing moved: no active loss
    assert float(active_ssim_loss(wrong_far, gt, prev_gt)) < 1e-6
    wrong_near = gt.clone()
    wrong_near[..., 8:16, 18:28] = 0.5  # wrong where the object moved
    assert float(active_ssim_loss(wrong_near, gt, prev_gt)) > 0.1
    assert float(active_ssim_loss(gt, gt, gt)) == 0.0  # nothing moved anywhere


def test_normalised_ssim_sees_a_faint_blotch_and_change_loss_sees_flicker_and_trails():
    from livenight.eval import percentile_normalise as eval_normalise
    from livenight.training.config import LossConfig
    from livenight.training.losses import LossTerms, percentile_normalise

    rng = np.random.default_rng(5)
    img = rng.random((30, 40)).astype(np.float32) * 0.4 + 0.1
    got = percentile_normalise(torch.from_numpy(img)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, eval_normalise(img), atol=1e-5)  # numpy's and torch's percentiles agree
    # a flat background with a bright object, and the same with a faint (2 grey level) blotch beside it
    gt = torch.full((1, 1, 48, 48), 0.2)
    gt[..., 20:28, 20:28] = 0.8
    out = gt.clone() * 0.25 + 0.1  # low contrast: the percentile normalisation undoes it
    blotched = out.clone()
    blotched[..., 5:9, 5:9] += 2 / 255
    cfg = LossConfig(l1=0.0, ssim=1.0, norm_ssim=1.0, lpips=0.0, change=1.0)
    terms = LossTerms(cfg, torch.device("cpu"), has_flow=False, say=lambda m: None)
    clean, dirty = (terms.window(1, o, gt, o, gt, None) for o in (out, blotched))
    assert float(clean["norm_ssim"]) < 1e-3  # contrast and offset do not count after normalisation
    assert float(dirty["norm_ssim"]) > 0.01 > float(dirty["ssim"] - clean["ssim"])  # the blotch does
    # change: the output may differ from the truth by a constant, but not change where the truth did not
    still = terms.window(1, gt + 0.1, gt, gt + 0.1, gt, None)["change"]
    flicker = terms.window(1, gt + 0.1, gt, gt, gt, None)["change"]
    moved = gt.roll(4, dims=-1)
    trail = terms.window(1, torch.maximum(gt, moved), moved, gt, gt, None)["change"]  # the old place stays bright
    assert float(still) == 0.0 and float(flicker) == pytest.approx(0.1)
    assert float(trail) == pytest.approx(4 * 8 * 0.6 / 48 ** 2)
    assert "change" not in terms.window(0, gt, gt, None, None, None)  # the first window has nothing before it


def test_unseen_pixels_are_weighed_down_until_an_event_fires_near_them():
    from livenight.training.config import LossConfig
    from livenight.training.losses import LossTerms, seen_weights

    def ev(xs, ys):
        n = len(xs)
        return (torch.tensor(xs), torch.tensor(ys), torch.zeros(n), torch.ones(n))
    windows = [[ev([5], [5])], [ev([20], [10])]]  # one sequence: an event at (5, 5), then one at (20, 10)
    w0, w1 = seen_weights(windows, (16, 32), unseen=0.25, radius_px=1, device="cpu")
    assert w0.shape == (1, 1, 16, 32)
    assert torch.all(w0[0, 0, 4:7, 4:7] == 1) and float(w0.sum()) == 9 + 0.25 * (16 * 32 - 9)
    assert torch.all(w1[0, 0, 4:7, 4:7] == 1) and torch.all(w1[0, 0, 9:12, 19:22] == 1)  # seen stays seen
    assert float(w1[0, 0, 0, 31]) == 0.25
    # L1 with weights: an error only where nothing was seen costs nothing when unseen = 0
    cfg = LossConfig(l1=1.0, ssim=0.0, lpips=0.0, unseen=0.0)
    terms = LossTerms(cfg, torch.device("cpu"), has_flow=False, say=lambda m: None)
    gt = torch.full((1, 1, 16, 32), 0.5)
    out = gt.clone()
    out[..., 12:, :3] = 0.0
    (blind,) = seen_weights(windows[:1], (16, 32), unseen=0.0, radius_px=1, device="cpu")
    assert float(terms.window(0, out, gt, None, None, None, blind)["l1"]) == 0.0
    assert float(terms.window(0, out, gt, None, None, None)["l1"]) > 0.0
    with pytest.raises(ValueError, match=r"losses.unseen must be a number in \[0, 1\]"):
        LossConfig(unseen=1.5)


# ------------------------------------------------------------------------------------------------ training


def _tiny_cfg(tmp_path, **kw) -> TrainConfig:
    base = TrainConfig.from_dict({"sequence_length": 4, "crop": 32, "lr": 3e-3, "model": TINY_MODEL,
                                  "losses": {"l1": 1.0, "ssim": 0.0, "lpips": 0.0}, "out_dir": str(tmp_path)})
    return replace(base, **kw)


def test_overfitting_a_fixed_batch_reduces_the_loss(rled_dir, tmp_path):
    cfg = _tiny_cfg(tmp_path, freeze_letc=False, checkpoint_letc=False, lr=5e-3)
    ds = SequenceDataset([H5Recording(rled_dir / "train" / "a.h5")], 4, crop=32, flips=True)
    trainer = Trainer(cfg)
    batch = [ds[(1, 5)]]
    losses = [trainer.train_step(batch)["loss"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert trainer.step == 30


def test_letc_loaded_from_letc_pth_stays_frozen(rled_dir, tmp_path):
    # GIVEN a file shaped like the official letc.pth: {'state_dict': ...} without the 'representation.' prefix
    donor = Trainer(_tiny_cfg(tmp_path, seed=99)).net
    letc = {k[len("representation."):]: v for k, v in donor.state_dict().items() if k.startswith("representation.")}
    torch.save({"state_dict": letc}, tmp_path / "letc.pth")
    trainer = Trainer(_tiny_cfg(tmp_path, letc=str(tmp_path / "letc.pth"), freeze_letc=True))
    # THEN LETC is the donor's, is not optimised, and stays unchanged by a step while the U-Net moves
    rep = {k: v.clone() for k, v in trainer.net.representation.state_dict().items()}
    assert all(torch.equal(rep[k], letc[k]) for k in letc)
    assert not any(p.requires_grad for p in trainer.net.representation.parameters())
    unet = _params(trainer.net.unetrecurrent)
    ds = SequenceDataset([H5Recording(rled_dir / "train" / "a.h5")], 4, crop=32, flips=True)
    trainer.train_step([ds[(0, 1)]])
    assert all(torch.equal(v, trainer.net.representation.state_dict()[k]) for k, v in rep.items())
    assert any(not torch.equal(p, q) for p, q in zip(unet, _params(trainer.net.unetrecurrent)))


def test_letc_checkpointing_and_bptt_chunks(rled_dir, tmp_path):
    ds = SequenceDataset([H5Recording(rled_dir / "train" / "b.h5")], 4, crop=32, flips=True)
    batch = [ds[(0, 9)]]
    runs = {}
    for name, kw in {"plain": dict(checkpoint_letc=False), "ckpt": dict(checkpoint_letc=True),
                     "bptt4": dict(bptt=4), "bptt2": dict(bptt=2)}.items():
        trainer = Trainer(_tiny_cfg(tmp_path, freeze_letc=False, **kw))
        runs[name] = (trainer.train_step(batch), _params(trainer.net))
    mlp = "representation.quantization_layer.value_layer.mlp.0.weight"
    assert list(Trainer(_tiny_cfg(tmp_path)).net.state_dict()).index(mlp) == 0
    for name in ("ckpt", "bptt4"):  # recomputation / a single full chunk: the same step
        assert runs[name][0]["loss"] == pytest.approx(runs["plain"][0]["loss"], rel=1e-6)
        for p, q in zip(runs[name][1], runs["plain"][1]):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    assert not torch.equal(runs["plain"][1][0], _params(Trainer(_tiny_cfg(tmp_path)).net)[0])  # the MLP trained
    assert runs["bptt2"][0]["loss"] == pytest.approx(runs["plain"][0]["loss"], rel=1e-5)  # same forward
    assert any(not torch.equal(p, q) for p, q in zip(runs["bptt2"][1], runs["plain"][1]))  # truncated gradient


def test_temporal_loss_is_used_when_flow_exists(tmp_path):
    rng = np.random.default_rng(1)
    ev = np.zeros(200, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, 90_000, 200))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 16, 200), rng.integers(0, 16, 200), rng.integers(0, 2, 200)
    frames = rng.integers(0, 255, (4, 16, 16)).astype(np.uint8)
    idx = np.searchsorted(ev["t"], np.array([[0, 20_000], [20_000, 40_000], [40_000, 60_000], [60_000, 80_000]]))
    rec = ArrayRecording(ev, frames, idx, flow=np.zeros((4, 2, 16, 16), np.float32))
    ds = SequenceDataset([rec], 3, crop=16)
    cfg = _tiny_cfg(tmp_path, crop=16, sequence_length=3, losses=replace(_tiny_cfg(tmp_path).losses, temporal=1.0))
    stats = Trainer(cfg, has_flow=ds.has_flow).train_step([ds[0]])
    assert stats["temporal"] > 0 and np.isfinite(stats["loss"])


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.state_dict().values()]


def test_checkpoint_roundtrip_and_exact_resume(rled_dir, tmp_path):
    # GIVEN a 2-step run with a checkpoint per step and validation at step 2
    cfg_path = _config(tmp_path, rled_dir, "a")
    first = train(load_config(cfg_path))
    out = Path(first.out_dir)
    assert first.step == 2 and (out / "checkpoints" / "step-00000001.pth").is_file()
    # the checkpoint is livenight's format: load_model gives the trained network, outputs identical
    loaded = load_model(out / "last.pth", (32, 32))
    grid = torch.rand(1, 10, 32, 32)
    with torch.no_grad():
        net = first.trainer.net.eval()
        a, _ = net(grid, net.initial_state())
        b, _ = loaded(grid, loaded.initial_state())
    assert torch.equal(a, b)
    ck = torch.load(out / "last.pth", weights_only=True)
    assert ck["step"] == 2 and ck["train_config"]["crop"] == 32

    # WHEN it resumes to 4 steps, and a fresh run goes to 4 steps in one go
    resumed = run_train(cfg_path, resume=out / "last.pth", overrides={"steps": 4})
    straight = train(load_config(_config(tmp_path, rled_dir, "b", steps=4)))

    # THEN the step count, the optimiser state and the weights continue exactly
    assert resumed["start_step"] == 2 and resumed["step"] == 4
    ck = torch.load(out / "last.pth", weights_only=True)
    assert ck["step"] == 4 and float(ck["optimizer"]["state"][0]["step"]) == 4
    for p, q in zip(_params(load_model(out / "last.pth", (32, 32))), _params(straight.trainer.net)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    rows = list(csv.DictReader(open(out / "train.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[1]["val_mse"] and float(rows[3]["val_ssim"]) > -1 and not rows[0]["val_mse"]
    assert float(rows[0]["lr"]) == 1e-3 and rows[0]["l1"] and not rows[0]["lpips"]


def test_ema_checkpoints_hold_the_average_and_resume_continues_it(rled_dir, tmp_path):
    # GIVEN a run keeping an average with decay 0.5, and the raw weights after each of its steps
    cfg = _tiny_cfg(tmp_path, freeze_letc=False, checkpoint_letc=False, ema_decay=0.5)
    ds = SequenceDataset([H5Recording(rled_dir / "train" / "a.h5")], 4, crop=32, flips=False)
    trainer = Trainer(cfg)
    raw = []
    for k in range(3):
        trainer.train_step([ds[(1, k)]])
        raw.append(_params(trainer.net))
    # THEN the checkpoint's weights are the average (first step copied, then 0.5 old + 0.5 new), the raw ones beside
    trainer.save(tmp_path / "ema.pth")
    ck = torch.load(tmp_path / "ema.pth", weights_only=True)
    want = [0.25 * a + 0.25 * b + 0.5 * c for a, b, c in zip(*raw)]
    for got, w in zip(ck["state_dict"].values(), want):
        torch.testing.assert_close(got, w, rtol=1e-6, atol=1e-7)
    for got, r in zip(ck["raw_state_dict"].values(), raw[-1]):
        assert torch.equal(got, r)
    assert ck["ema_updates"] == 3
    assert not all(torch.equal(a, b) for a, b in zip(ck["state_dict"].values(), raw[-1]))  # they differ
    loaded = load_model(tmp_path / "ema.pth", (32, 32))  # what inference loads is the average
    for p, w in zip(_params(loaded), want):
        torch.testing.assert_close(p, w, rtol=1e-6, atol=1e-7)

    # WHEN a fresh trainer resumes from it and both take the same fourth step
    resumed = Trainer(cfg)
    assert resumed.load(tmp_path / "ema.pth") == 3
    for t in (trainer, resumed):
        t.train_step([ds[(1, 3)]])
    # THEN raw weights and average continue exactly (the average did not restart at the raw weights)
    for a, b in zip(_params(resumed.net), _params(trainer.net)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(_params(resumed.averaged_net), _params(trainer.averaged_net)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ema_decay must be a number in \\[0, 1\\)"):
        _tiny_cfg(tmp_path, ema_decay=1.0)


# ------------------------------------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg_path: str, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    if Path("/sys/class/net/lo").exists():
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    res = train(load_config(cfg_path))
    torch.save({"params": _params(res.trainer.net), "step": res.step, "world_size": res.world_size,
                "wrote_csv": res.csv is not None}, Path(result_dir) / f"rank{rank}.pt")


def test_ddp_two_processes_on_cpu_gloo(rled_dir, tmp_path):
    import torch.multiprocessing as mp

    cfg_path = _config(tmp_path, rled_dir, "ddp", val={"files": []}, checkpoint_every=0)
    init = Trainer(load_config(cfg_path)).net
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(cfg_path), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["step"] == r1["step"] == 2 and r0["world_size"] == 2
    assert r0["wrote_csv"] and not r1["wrote_csv"]
    for p, q in zip(r0["params"], r1["params"]):
        torch.testing.assert_close(p, q)  # gradients were all-reduced: the replicas agree
    assert any(not torch.equal(p, q) for p, q in zip(r0["params"], _params(init)))
    assert (tmp_path / "ddp" / "last.pth").is_file()
    assert len(list(csv.DictReader(open(tmp_path / "ddp" / "train.csv")))) == 2


# ------------------------------------------------------------------------------------------------ the bundled model


def test_ner_lite_config_and_natural_draws():
    cfg = load_config(ROOT / "configs" / "ner-lite.toml")
    assert cfg.model.stem_stride == 4 and not cfg.model.letc_cnn and cfg.sequence_length >= 40
    assert cfg.letc_table > 0 and cfg.data.natural.count > 0 and cfg.val.natural.seed != cfg.data.natural.seed
    spec = cfg.data.natural
    draws = [natural_params(spec, i) for i in range(16)]
    th = [d[2].threshold_on for d in draws]
    assert all(0.2 <= v <= 1.5 for v in th) and max(th) / min(th) > 2  # widely drawn contrast thresholds
    assert {d[1].static_camera for d in draws} == {True, False}  # fixed-camera and ego-motion scenes
    assert all(30_000 <= d[3] <= 50_000 for d in draws)
    assert natural_params(spec, 5) == draws[5]
    with pytest.raises(ValueError, match=r"unknown \[data.natural\] keys"):
        load_config(ROOT / "configs" / "ner-lite.toml", overrides={"data.natural.tresh": 1})


def test_natural_gamma_range_sets_the_tone_exponent_and_keeps_old_cache_names():
    from livenight.training.synthetic import _synthetic_key

    old = load_config(ROOT / "configs" / "firenet-s2-cpu.toml").data.natural
    lin = load_config(ROOT / "configs" / "firenet-s2-ft.toml").data.natural
    assert old.gamma == (0.6, 1.6) and lin.gamma == (1.2, 3.2)
    g = [natural_params(lin, i)[1].gamma for i in range(24)]
    assert all(1.2 <= v <= 3.2 for v in g) and np.median(g) > 1.6  # most scenes linear (dark-skewed)
    # a fixed exponent changes the tone only: every other draw of the recording is the same
    fixed = replace(old, gamma=(2.2, 2.2))
    a, b = natural_params(old, 3), natural_params(fixed, 3)
    assert b[1].gamma == pytest.approx(2.2) and a[1].gamma != b[1].gamma
    assert replace(a[1], gamma=2.2) == b[1] and a[2] == b[2] and a[3:] == b[3:]
    # the default leaves the cache key as it was before the setting existed; another range gets its own files
    legacy = {f.name: getattr(old, f.name) for f in dataclasses.fields(old) if f.name not in ("count", "cache_dir",
                                                                                             "gamma")}
    blob = json.dumps({"spec": legacy, "version": livenight.__version__}, sort_keys=True, default=list)
    assert _synthetic_key(old) == hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert _synthetic_key(fixed) != _synthetic_key(old)
    with pytest.raises(ValueError, match=r"natural.gamma must be > 0"):
        load_config(ROOT / "configs" / "firenet-s2-cpu.toml", overrides={"data.natural.gamma": [0.0, 2.0]})


def test_table_letc_matches_the_exact_per_event_mlp_and_trains_it():
    torch.manual_seed(0)
    net = NERNet(NERNetConfig(sensor_size=(32, 32), base_channels=4, num_encoders=2, kernel_size=3,
                              stem_stride=4, pred_kernel=3, letc_cnn=False))
    for p in net.representation.parameters():
        p.data.uniform_(-1, 1)
    model = SequenceModel(net, letc_table=4097)
    n = 400
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 32, (n,), generator=g), torch.randint(0, 32, (n,), generator=g)
    t = torch.sort(torch.rand(n, generator=g))[0] * 0.04
    p = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    u = torch.linspace(-4, 4, 4097)
    table = net.representation.quantization_layer.value_layer(u)
    fast, exact = model._table_quantize(table, x, y, t, p), net.quantize(x, y, t, p)
    torch.testing.assert_close(fast, exact, rtol=1e-3, atol=1e-3 * float(exact.detach().abs().max()))
    fast.sum().backward()
    assert net.representation.quantization_layer.value_layer.mlp[0].weight.grad.abs().sum() > 0


def test_stem_stride_runs_the_unet_at_lower_resolution_and_outputs_full_size():
    cfg = NERNetConfig(sensor_size=(346, 260), base_channels=16, num_encoders=2, kernel_size=3, stem_stride=4,
                       pred_kernel=3, letc_cnn=False)
    assert cfg.pad_multiple == 16 and cfg.padded_size == (352, 272)
    shapes = cfg.state_shapes()
    assert shapes["m"] == (1, 16, 68, 88) and shapes["h0"] == (1, 32, 34, 44) and shapes["h1"] == (1, 64, 17, 22)
    net = NERNet(cfg).eval()
    assert not any(k.startswith("representation.ConvLayer") for k in net.state_dict())
    assert net.state_dict()["unetrecurrent.head.conv2d.weight"].shape == (16, 10 * 16, 3, 3)
    with torch.no_grad():
        img, state = net(torch.rand(1, 10, 260, 346), net.initial_state())
    assert img.shape == (1, 1, 272, 352) and [tuple(s.shape) for s in state] == list(shapes.values())
    with pytest.raises(ValueError, match="stem_stride"):
        NERNetConfig(stem_stride=0)
    # the stem's reshape + permute is torch's pixel_unshuffle, channel for channel
    from livenight.model.nernet import space_to_depth
    v = torch.rand(2, 10, 272, 352)
    assert torch.equal(space_to_depth(v, 4), torch.nn.functional.pixel_unshuffle(v, 4))
    # the defaults are the official architecture: no new keys, same config as before the options existed
    assert NERNetConfig().stem_stride == 1 and NERNetConfig().letc_cnn and NERNetConfig().pred_kernel == 1


# ------------------------------------------------------------------------------------------------ scripts


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["bench_arch", "event_stats", "simulate_cache", "eval_bundled", "bundle_model",
                                  "davis_figure", "event_response"])
def test_scripts_explain_themselves(name, capsys):
    with pytest.raises(SystemExit) as e:
        _script(name).parse_args(["--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


def test_bench_arch_times_a_candidate(capsys):
    rows = _script("bench_arch").run(_script("bench_arch").parse_args(["--size", "64x48", "--only", "ner-tiny",
                                                                        "--threads", "1", "--repeat", "1"]))
    assert rows[0]["name"] == "ner-tiny" and rows[0]["parameters"] == 550_754
    assert rows[0]["fp32_1T"] > 0 and rows[0]["bf16_1T"] > 0 and "| ner-tiny |" in capsys.readouterr().out


def test_bundle_model_strips_training_state_and_writes_windows(tmp_path):
    from livenight.model.checkpoint import save_model

    net = NERNet(NERNetConfig(sensor_size=(32, 32), base_channels=4, num_encoders=2, kernel_size=3, stem_stride=4,
                              pred_kernel=3, letc_cnn=False))
    save_model(net, tmp_path / "last.pth", step=7, optimizer={"state": {}})
    (tmp_path / "card.json").write_text(json.dumps({"config": "configs/x.toml", "scores": {"a": 1}}))
    mod = _script("bundle_model")
    path = mod.run(mod.parse_args([str(tmp_path / "last.pth"), "--name", "x", "--out", str(tmp_path),
                                   "--card", str(tmp_path / "card.json")]))
    ck = torch.load(path, weights_only=True)
    assert ck["step"] == 7 and "optimizer" not in ck and ck["model"]["stem_stride"] == 4
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["windows"] == {"kind": "time", "window_us": 40_000, "stride_us": 40_000}
    assert meta["steps"] == 7 and meta["scores"] == {"a": 1} and "sensor_size" not in meta["model"]
    assert meta["parameters"] == sum(p.numel() for p in net.parameters())


def test_voxel_letc_init_gives_the_triangle_kernel_and_needs_nernet(tmp_path):
    """letc_init = "voxel" starts the LETC MLP at max(0, 1 − |u|): a new small model sees order-one inputs, not the
    ~0.05 a random MLP gives (with which it learned to ignore the events and predict the mean grey)."""
    from livenight.training.trainer import build_model
    cfg = load_config(ROOT / "configs" / "ner-lite.toml", overrides={"init": None, "letc_init": "voxel",
                                                                     "crop": 32})
    torch.manual_seed(0)
    net = build_model(cfg)
    u = torch.tensor([-4.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 4.0])
    with torch.no_grad():
        got = net.representation.quantization_layer.value_layer(u)
    torch.testing.assert_close(got, (1 - u.abs()).clamp(min=0), atol=0.03, rtol=0)
    torch.manual_seed(0)
    random = build_model(replace(cfg, letc_init="random"))
    with torch.no_grad():
        assert (random.representation.quantization_layer.value_layer(u) - got).abs().max() > 0.2
    assert all(p.requires_grad for p in net.representation.parameters())  # ner-lite.toml: freeze_letc = false
    frozen = build_model(replace(cfg, freeze_letc=True))
    assert not any(p.requires_grad for p in frozen.representation.parameters())
    assert any(p.requires_grad for p in frozen.parameters())
    torch.manual_seed(0)
    gained = build_model(replace(cfg, head_gain=8.0))  # same seed: the first convolution's weights x 8, the rest equal
    torch.testing.assert_close(gained.unetrecurrent.head.conv2d.weight, 8 * net.unetrecurrent.head.conv2d.weight)
    torch.testing.assert_close(gained.unetrecurrent.pred.conv2d.weight, net.unetrecurrent.pred.conv2d.weight)
    with pytest.raises(ValueError, match="head_gain must be a number > 0"):
        load_config(ROOT / "configs" / "ner-lite.toml", overrides={"head_gain": 0})
    with pytest.raises(ValueError, match="letc_init must be 'random' or 'voxel'"):
        load_config(ROOT / "configs" / "ner-lite.toml", overrides={"letc_init": "grid"})


def test_event_response_is_zero_for_a_network_that_cannot_see_its_events(rled_dir, tmp_path):
    """The collapse probe: a network whose first convolution is zero draws the same frames with and without events."""
    from livenight.model.checkpoint import save_model

    torch.manual_seed(0)
    net = NERNet(NERNetConfig(sensor_size=(48, 40), **TINY_MODEL))
    save_model(net, tmp_path / "seeing.pth")
    with torch.no_grad():
        net.representation.ConvLayer.cnn[0].weight.zero_()
    save_model(net, tmp_path / "blind.pth")
    probe = _script("event_response")
    rows = probe.run(probe.parse_args([str(tmp_path / "seeing.pth"), str(tmp_path / "blind.pth"),
                                       "--recording", str(rled_dir / "train" / "a.h5"), "--windows", "6"]))
    (_, seeing, _), (_, blind, _) = rows
    assert seeing > 1e-3 and blind == 0.0
