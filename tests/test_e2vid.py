"""E2VID family: official key layouts and checkpoint formats, the voxel grid and its normalisation, explicit
state, the FireNet → FireNet+ key map, and the engine end to end on synthetic events."""

from __future__ import annotations

import math
import pathlib
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from livenight.engines.torch_engine import TorchEngine
from livenight.families.e2vid import unsharp_kernel
from livenight.errors import EngineMismatchError, ShapeError, SourceError
from livenight.events import EVENT_DTYPE
from livenight.events import make_events as pack_events
from livenight.model.e2vid import (FIRENET_TO_PLUS, ConvGRU, ConvLSTM, E2VIDConfig, E2VIDRecurrent, FireNet,
                                   FireNetConfig, FireNetLegacy, detect_family, firenet_to_plus, load_e2vid_family)
from livenight.model.nernet import NERNet, NERNetConfig
from livenight.voxel import normalize_voxel, robust_normalize_voxel, voxel_grid
from livenight.windowing import Window

SIZE = (20, 13)  # (width, height): pads to 24x16 with 3 encoders
BACKENDS = ["numba", "numpy"]

# FireNet / FireNet+ keys and shapes, written from e2vid-family.md §3.3
_GRU = [(f"{g}_gate.{p}", (16, 32, 3, 3) if p == "weight" else (16,)) for g in ("reset", "update", "out")
        for p in ("weight", "bias")]
_RES = [(f"{c}.{p}", (16, 16, 3, 3) if p == "weight" else (16,)) for c in ("conv1", "conv2")
        for p in ("weight", "bias")]
FIRENET_PLUS_KEYS = dict([("head.conv2d.weight", (16, 5, 3, 3)), ("head.conv2d.bias", (16,))]
                         + [("G1." + k, s) for k, s in _GRU] + [("R1." + k, s) for k, s in _RES]
                         + [("G2." + k, s) for k, s in _GRU] + [("R2." + k, s) for k, s in _RES]
                         + [("pred.conv2d.weight", (1, 16, 1, 1)), ("pred.conv2d.bias", (1,))])
FIRENET_KEYS = dict([("net.head.conv.conv2d.weight", (16, 5, 3, 3)), ("net.head.conv.conv2d.bias", (16,))]
                    + [("net.head.recurrent_block." + k, s) for k, s in _GRU]
                    + [("net.resblocks.0.conv." + k, s) for k, s in _RES]
                    + [("net.resblocks.0.recurrent_block." + k, s) for k, s in _GRU]
                    + [("net.resblocks.1." + k, s) for k, s in _RES]
                    + [("net.pred.conv2d.weight", (1, 16, 1, 1)), ("net.pred.conv2d.bias", (1,))])


# ------------------------------------------------------------------------------------------------ helpers
def _randomise(model, seed):
    torch.manual_seed(seed)
    for p in model.parameters():  # larger than default init so every path matters numerically
        p.data.uniform_(-0.4, 0.4)
    return model.eval()


def _e2vid(seed=0, **kw):
    return _randomise(E2VIDRecurrent(E2VIDConfig(sensor_size=SIZE, base_channels=4, **kw)), seed)


def _run(model, steps=3, seed=42):
    g = torch.Generator().manual_seed(seed)
    w, h = model.cfg.sensor_size
    s = model.initial_state()
    outs = []
    with torch.no_grad():
        for _ in range(steps):
            y, s = model(torch.randn(1, model.cfg.num_bins, h, w, generator=g), s)
            outs.append(y)
    return torch.cat(outs)


def _config_parser_pickle(config: dict):
    """An object that pickles as event_cnn_minimal's ``parse_config.ConfigParser`` (with PosixPath members)."""
    mod = types.ModuleType("parse_config")

    class ConfigParser:
        pass

    ConfigParser.__module__ = "parse_config"
    ConfigParser.__qualname__ = "ConfigParser"
    mod.ConfigParser = ConfigParser
    cfg = ConfigParser()
    cfg.__dict__.update({"_config": OrderedDict(config), "resume": None, "modification": None,
                         "log_levels": {0: 30, 1: 20, 2: 10},
                         "_save_dir": pathlib.PosixPath("/models/saved/run"),
                         "_log_dir": pathlib.PosixPath("/models/log/run")})
    return mod, cfg


def _save(obj, path, legacy: bool, config_module=None):
    if config_module is not None:
        sys.modules["parse_config"] = config_module
    try:
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    finally:
        sys.modules.pop("parse_config", None)
    return path


def _optimizer(model):
    return torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True).state_dict()


def save_rpg_e2vid(path, model: E2VIDRecurrent):
    """rpg_e2vid: ``{'arch': 'E2VIDRecurrent', 'model': kwargs, 'state_dict'}`` (legacy container)."""
    c = model.cfg
    kw = {"num_bins": c.num_bins, "skip_type": "sum", "recurrent_block_type": c.recurrent_block,
          "num_encoders": c.num_encoders, "base_num_channels": c.base_channels,
          "num_residual_blocks": c.num_residual_blocks, "use_upsample_conv": c.upsample == "bilinear",
          "norm": "none"}
    return _save({"arch": "E2VIDRecurrent", "model": kw, "state_dict": model.state_dict()}, path, legacy=True)


def save_ecm_e2vid_plus(path, model: E2VIDRecurrent):
    """event_cnn_minimal: arch + epoch + optimizer + monitor_best + pickled ConfigParser holding ``arch``."""
    c = model.cfg
    unet = {"num_bins": c.num_bins, "skip_type": "sum", "recurrent_block_type": c.recurrent_block,
            "num_encoders": c.num_encoders, "base_num_channels": c.base_channels,
            "num_residual_blocks": c.num_residual_blocks, "use_upsample_conv": True, "final_activation": "",
            "norm": "none"}
    mod, cfg = _config_parser_pickle({"name": "reconstruction", "n_gpu": 1,
                                      "arch": {"type": "E2VIDRecurrent", "args": {"unet_kwargs": unet}}})
    ck = {"arch": "E2VIDRecurrent", "epoch": 200, "state_dict": model.state_dict(), "optimizer": _optimizer(model),
          "monitor_best": 0.5, "config": cfg}
    return _save(ck, path, legacy=False, config_module=mod)


def save_rpg_firenet(path, model: FireNetLegacy):
    """The original FireNet: arch 'FireNet', plain-dict config with ``model`` kwargs, ``net.*`` keys, legacy file."""
    kw = {"num_bins": 5, "skip_type": "no_skip", "recurrent_block_type": "convgru", "base_num_channels": 16,
          "num_residual_blocks": 2, "recurrent_blocks": {"resblock": [0]}, "kernel_size": 3,
          "final_activation": "none", "norm": "none"}
    ck = {"arch": "FireNet", "epoch": 1000, "logger": ["train"], "state_dict": model.state_dict(),
          "optimizer": _optimizer(model), "monitor_best": 0.2718, "config": {"name": "firenet", "model": kw}}
    return _save(ck, path, legacy=True)


def save_ecm_firenet_plus(path, model: FireNet):
    mod, cfg = _config_parser_pickle({"name": "firenet_seqLength120_all_cts_noise_tc0.2", "n_gpu": 1, "arch": {
        "type": "FireNet", "args": {"num_bins": 5, "base_num_channels": 16, "kernel_size": 3}}})
    ck = {"arch": "FireNet", "epoch": 233, "state_dict": model.state_dict(), "optimizer": _optimizer(model),
          "monitor_best": 0.4753, "config": cfg}
    return _save(ck, path, legacy=True, config_module=mod)


def _formats():
    return {
        "E2VID": (lambda: _e2vid(1), save_rpg_e2vid, E2VIDRecurrent),
        "E2VID+": (lambda: _e2vid(2, upsample="bilinear", final_activation="none", pad_mode="zeros"),
                   save_ecm_e2vid_plus, E2VIDRecurrent),
        "FireNet": (lambda: _randomise(FireNetLegacy(FireNetConfig(family="FireNet", sensor_size=SIZE)), 3),
                    save_rpg_firenet, FireNet),
        "FireNet+": (lambda: _randomise(FireNet(FireNetConfig(sensor_size=SIZE)), 4), save_ecm_firenet_plus,
                     FireNet),
    }


def _window(events, reset=False, index=0):
    t0 = int(events["t"][0]) if events.size else 0
    return Window(index, t0, int(events["t"][-1]) + 1 if events.size else t0, events, reset, 0)


# ------------------------------------------------------------------------------------------------ layouts
def test_official_key_layouts_and_parameter_counts():
    plus = FireNet().state_dict()
    assert list(plus) == list(FIRENET_PLUS_KEYS)
    assert {k: tuple(v.shape) for k, v in plus.items()} == FIRENET_PLUS_KEYS
    legacy = FireNetLegacy().state_dict()
    assert {k: tuple(v.shape) for k, v in legacy.items()} == FIRENET_KEYS
    assert sum(v.numel() for v in plus.values()) == sum(v.numel() for v in legacy.values()) == 37_777
    for up, dec_key, dec_shape in (("transposed", "unetrecurrent.decoders.0.transposed_conv2d.weight",
                                    (256, 128, 5, 5)),
                                   ("bilinear", "unetrecurrent.decoders.0.conv2d.weight", (128, 256, 5, 5))):
        sd = E2VIDRecurrent(E2VIDConfig(upsample=up)).state_dict()
        assert sum(v.numel() for v in sd.values()) == 10_710_401  # e2vid-family.md §1.1 / §2.1
        assert tuple(sd[dec_key].shape) == dec_shape
        assert tuple(sd["unetrecurrent.head.conv2d.weight"].shape) == (32, 5, 5, 5)
        assert tuple(sd["unetrecurrent.encoders.0.conv.conv2d.weight"].shape) == (64, 32, 5, 5)
        assert tuple(sd["unetrecurrent.encoders.2.recurrent_block.Gates.weight"].shape) == (1024, 512, 3, 3)
        assert tuple(sd["unetrecurrent.resblocks.1.conv2.weight"].shape) == (256, 256, 3, 3)
        assert tuple(sd["unetrecurrent.pred.conv2d.weight"].shape) == (1, 32, 1, 1)
        assert "unetrecurrent.encoders.3.conv.conv2d.weight" not in sd


def test_padding_and_state_shapes_for_davis346():
    cfg = E2VIDConfig(sensor_size=(346, 260))
    assert cfg.padded_size == (352, 264) and cfg.padding() == (3, 3, 2, 2)
    assert E2VIDConfig(sensor_size=(345, 259)).padding() == (4, 3, 3, 2)  # top/left get the larger half
    shapes = cfg.state_shapes()
    assert list(shapes) == ["h0", "h1", "h2", "c0", "c1", "c2"]
    assert shapes["h0"] == (1, 64, 132, 176) and shapes["c2"] == (1, 256, 33, 44)
    assert list(E2VIDConfig(recurrent_block="convgru").state_shapes()) == ["h0", "h1", "h2"]
    assert FireNetConfig(sensor_size=(346, 260)).state_shapes() == {"h0": (1, 16, 260, 346), "h1": (1, 16, 260, 346)}


def test_strided_firenet_pads_folds_and_unfolds_every_pixel():
    cfg = FireNetConfig(family="FireNet", sensor_size=(346, 260), stem_stride=4, base_channels=8)
    assert cfg.padded_size == (348, 260) and cfg.padding() == (1, 1, 0, 0)
    assert cfg.state_shapes()["h0"] == (1, 8, 65, 87)
    assert cfg.to_dict()["stem_stride"] == 4 and "stem_stride" not in FireNetConfig().to_dict()
    with pytest.raises(ValueError, match="stem_stride"):
        FireNetConfig(stem_stride=0)
    # the official layout is untouched by the option
    assert [tuple(p.shape) for p in FireNet(FireNetConfig(family="FireNet")).parameters()][:1] == [(16, 5, 3, 3)]
    torch.manual_seed(0)
    net = FireNet(FireNetConfig(family="FireNet", sensor_size=(9, 7), stem_stride=2, base_channels=4)).eval()
    assert net.cfg.padding() == (1, 0, 1, 0)
    assert net.head.conv2d.weight.shape[1] == 20 and net.pred.conv2d.weight.shape[0] == 4
    # a prediction layer whose channel i outputs i shows where each channel lands in the padded image
    with torch.no_grad():
        net.pred.conv2d.weight.zero_()
        net.pred.conv2d.bias.copy_(torch.arange(4, dtype=torch.float32))
    img, state = net(torch.zeros(1, 5, 7, 9), net.initial_state())
    assert img.shape == (1, 1, 8, 10) and state[0].shape == (1, 4, 4, 5)
    # pixel shuffle: channel i*2 + j goes to (2*by + i, 2*bx + j)
    assert img[0, 0, :2, :2].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert img[0, 0, 6:8, 8:10].tolist() == [[0.0, 1.0], [2.0, 3.0]]


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_voxel_is_padded_by_reflection_for_e2vid_and_zeros_for_e2vid_plus(mode):
    net = _e2vid(pad_mode=mode)
    seen = {}
    net.unetrecurrent.head.register_forward_hook(lambda m, a, o: seen.update(v=a[0]))
    x = torch.randn(1, 5, 13, 20)
    with torch.no_grad():
        net(x, net.initial_state())
    v = seen["v"]
    assert v.shape == (1, 5, 16, 24)
    left, _, top, _ = net.cfg.padding()
    assert torch.equal(v[..., top:top + 13, left:left + 20], x)
    want = F.pad(x, net.cfg.padding(), mode="reflect") if mode == "reflect" else F.pad(x, net.cfg.padding())
    assert torch.equal(v, want)


def test_convlstm_and_convgru_cells_follow_the_reference_equations():
    torch.manual_seed(0)
    x, h, c = torch.randn(1, 3, 6, 7), torch.randn(1, 3, 6, 7), torch.randn(1, 3, 6, 7)
    lstm = ConvLSTM(3, 3)
    gates = F.conv2d(torch.cat([x, h], 1), lstm.Gates.weight, lstm.Gates.bias, padding=1)
    i, f, o, g = (gates[:, 3 * k:3 * k + 3] for k in range(4))  # input, forget (remember), output, cell
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new, c_new = lstm(x, h, c)
    assert torch.allclose(c_new, c_ref, atol=1e-6)
    assert torch.allclose(h_new, torch.sigmoid(o) * torch.tanh(c_ref), atol=1e-6)
    gru = ConvGRU(3, 3)
    conv = lambda m, t: F.conv2d(t, m.weight, m.bias, padding=1)  # noqa: E731
    z = torch.sigmoid(conv(gru.update_gate, torch.cat([x, h], 1)))
    r = torch.sigmoid(conv(gru.reset_gate, torch.cat([x, h], 1)))
    n = torch.tanh(conv(gru.out_gate, torch.cat([x, r * h], 1)))
    assert torch.allclose(gru(x, h), h * (1 - z) + n * z, atol=1e-6)


def test_explicit_state_is_carried_and_a_zero_state_reproduces_the_first_frame():
    for net in (_e2vid(), _e2vid(recurrent_block="convgru"), _randomise(FireNet(FireNetConfig(sensor_size=SIZE)), 0)):
        x = torch.randn(2, 1, 5, 13, 20)
        with torch.no_grad():
            s0 = net.initial_state()
            y0, s1 = net(x[0], s0)
            y1, s2 = net(x[1], s1)
            assert len(s2) == len(net.state_names)
            assert all(t.shape == sh for t, sh in zip(s2, net.cfg.state_shapes().values()))
            assert not torch.equal(y1, net(x[1], net.initial_state())[0])  # the state matters
            assert torch.equal(net(x[0], net.initial_state())[0], y0)  # a fresh state repeats frame 0
    out = _e2vid()(torch.randn(1, 5, 13, 20), _e2vid().initial_state())[0]
    assert out.min() >= 0 and out.max() <= 1  # E2VID ends in a sigmoid
    with pytest.raises(ShapeError, match=r"expects a voxel grid \[N, 5, 13, 20\]"):
        _e2vid()(torch.zeros(1, 5, 16, 24), _e2vid().initial_state())


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("family", ["E2VID", "E2VID+", "FireNet", "FireNet+"])
def test_official_formats_load_strictly_and_give_identical_outputs(tmp_path, family):
    build, save, cls = _formats()[family]
    src = build()
    path = save(tmp_path / f"{family}.pth", src)
    model, fam = load_e2vid_family(path, SIZE)
    assert fam == family and type(model) is cls and model.cfg.family == family
    assert torch.equal(_run(model), _run(src))
    if family == "E2VID+":
        assert model.cfg.final_activation == "none" and model.cfg.pad_mode == "zeros"
        assert model.cfg.upsample == "bilinear"
        with pytest.raises(Exception):  # torch's safe default refuses the pickled ConfigParser
            torch.load(path, map_location="cpu", weights_only=True)
    if family == "E2VID":
        assert model.cfg.final_activation == "sigmoid" and model.cfg.pad_mode == "reflect"
        assert model.cfg.upsample == "transposed" and model.cfg.num_encoders == 3


def test_firenet_weights_in_the_firenet_plus_layout_give_bit_identical_outputs():
    legacy = _randomise(FireNetLegacy(FireNetConfig(family="FireNet", sensor_size=SIZE)), 7)
    plus = FireNet(FireNetConfig(sensor_size=SIZE)).eval()
    mapped = firenet_to_plus(legacy.state_dict())
    assert list(mapped) == list(FIRENET_PLUS_KEYS)
    plus.load_state_dict(mapped, strict=True)
    assert torch.equal(_run(plus, steps=3), _run(legacy, steps=3))
    assert len(FIRENET_TO_PLUS) == 6


def test_detect_family_dispatches_between_families_and_ner_net(tmp_path):
    from livenight.model.checkpoint import read_checkpoint
    from livenight.model.nernet import NERNet, NERNetConfig

    for family, (build, save, _) in _formats().items():
        assert detect_family(read_checkpoint(save(tmp_path / f"{family}.pth", build()))) == family
    ner = NERNet(NERNetConfig(sensor_size=SIZE, base_channels=4)).state_dict()
    assert detect_family({"arch": "RepresentationRecurrent", "state_dict": ner}) is None
    assert detect_family(dict(ner)) is None
    assert detect_family({"livenight_format": 1, "model": {}, "state_dict": ner}) is None
    assert detect_family({"a": 1}) is None and detect_family({}) is None
    # bare state dicts: the key layout decides
    assert detect_family(_e2vid().state_dict()) == "E2VID"  # transposed decoders = E2VID_lightweight
    assert detect_family(_e2vid(upsample="bilinear").state_dict()) == "E2VID+"
    assert detect_family(FireNetLegacy().state_dict()) == "FireNet"
    assert detect_family({"module." + k: v for k, v in FireNet().state_dict().items()}) == "FireNet+"
    # a bare state dict loads with the family named (or detected), config read off the weights
    torch.save(_e2vid(5).state_dict(), tmp_path / "bare.pth")
    model, fam = load_e2vid_family(tmp_path / "bare.pth", SIZE)
    assert fam == "E2VID" and model.cfg.base_channels == 4 and model.cfg.num_encoders == 3
    assert torch.equal(_run(model), _run(_e2vid(5)))


def test_mismatches_are_reported_by_name(tmp_path):
    src = _e2vid()
    sd = src.state_dict()
    sd.pop("unetrecurrent.pred.conv2d.bias")
    sd["unetrecurrent.extra.weight"] = torch.zeros(1)
    kw = {"num_bins": 5, "num_encoders": 3, "base_num_channels": 4, "use_upsample_conv": False}
    torch.save({"arch": "E2VIDRecurrent", "model": kw, "state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(EngineMismatchError) as e:
        load_e2vid_family(tmp_path / "bad.pth", SIZE)
    msg = str(e.value)
    assert "missing: unetrecurrent.pred.conv2d.bias" in msg and "unexpected: unetrecurrent.extra.weight" in msg
    kw = dict(kw, base_num_channels=8)  # the file's config disagrees with its weights
    torch.save({"arch": "E2VIDRecurrent", "model": kw, "state_dict": src.state_dict()}, tmp_path / "shape.pth")
    with pytest.raises(EngineMismatchError, match=r"unetrecurrent.head.conv2d.weight \(4, 5, 5, 5\) "
                                                  r"\(model expects \(8, 5, 5, 5\)\)"):
        load_e2vid_family(tmp_path / "shape.pth", SIZE)
    torch.save({"arch": "E2VIDRecurrent", "model": dict(kw, skip_type="concat"), "state_dict": src.state_dict()},
               tmp_path / "concat.pth")
    with pytest.raises(EngineMismatchError, match="skip_type='concat' is not supported"):
        load_e2vid_family(tmp_path / "concat.pth", SIZE)
    torch.save({"arch": "E2VID", "model": kw, "state_dict": {"unet.head.conv2d.weight": torch.zeros(1)}},
               tmp_path / "e2vid_nonrec.pth")
    with pytest.raises(EngineMismatchError, match="non-recurrent E2VID"):
        load_e2vid_family(tmp_path / "e2vid_nonrec.pth", SIZE)
    torch.save({"arch": "RepresentationRecurrent", "state_dict": {"x": torch.zeros(1)}}, tmp_path / "ner.pth")
    with pytest.raises(EngineMismatchError, match="not an E2VID-family checkpoint"):
        load_e2vid_family(tmp_path / "ner.pth", SIZE)


# ------------------------------------------------------------------------------------------------ voxel grid
def _reference_voxel(events, num_bins, width, height):
    """Direct per-event transcription of the E2VID definition, in Python integers and float64."""
    v = np.zeros((num_bins, height, width), dtype=np.float64)
    if events.size == 0:
        return v
    t = [int(e) for e in events["t"]]
    den = (t[-1] - t[0]) or 1
    for k in range(events.size):
        ts = (num_bins - 1) * (t[k] - t[0]) / den
        lo = math.floor(ts)
        frac = ts - lo
        pol = 1.0 if events["p"][k] else -1.0
        x, y = int(events["x"][k]), int(events["y"][k])
        v[lo, y, x] += pol * (1.0 - frac)
        if lo + 1 < num_bins:
            v[lo + 1, y, x] += pol * frac
    return v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["random", "huge_t0", "one_timestamp", "single", "ties"])
def test_voxel_grid_matches_the_per_event_definition(make_events, backend, case):
    if case == "random":
        ev = make_events(3000, sensor=SIZE, rate_ev_per_s=2e5, seed=1)
    elif case == "huge_t0":  # float32 before the subtraction would lose every µs here
        ev = make_events(2000, sensor=SIZE, rate_ev_per_s=1e5, seed=2, t0_us=2 ** 50 + 12_345)
    elif case == "one_timestamp":
        ev = make_events(50, sensor=SIZE, seed=3)
        ev["t"] = 777
    elif case == "single":
        ev = make_events(1, sensor=SIZE, seed=4)
    else:
        ev = make_events(500, sensor=SIZE, rate_ev_per_s=2e7, seed=5)  # many equal timestamps
        ev["x"][:100], ev["y"][:100] = 3, 4  # many events on one pixel
    got = voxel_grid(ev, 5, SIZE, backend=backend)
    ref = _reference_voxel(ev, 5, *SIZE)
    assert got.dtype == np.float32 and got.shape == (5, 13, 20)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
    # conservation: each event spreads exactly its polarity over the bins of its pixel
    net = np.zeros((13, 20))
    np.add.at(net, (ev["y"].astype(int), ev["x"].astype(int)), ev["p"] * 2.0 - 1.0)
    np.testing.assert_allclose(got.sum(axis=0), net, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_voxel_grid_is_pure_reuses_out_and_validates(make_events, backend):
    ev = make_events(400, sensor=SIZE, seed=6, t0_us=10 ** 9)
    before = ev.copy()
    out = np.full((5, 13, 20), 123.0, dtype=np.float32)  # stale content must be overwritten
    got = voxel_grid(ev, 5, SIZE, out=out, backend=backend)
    assert got is out and not np.shares_memory(got, ev)
    assert ev.tobytes() == before.tobytes()  # the caller's events are untouched
    np.testing.assert_allclose(got, _reference_voxel(ev, 5, *SIZE), atol=2e-5)
    first, last = ev[0], ev[-1]
    assert got[0, first["y"], first["x"]] != 0 and got[4, last["y"], last["x"]] != 0
    assert not voxel_grid(ev[:0], 5, SIZE, out=out, backend=backend).any()  # empty window: zeros
    bad = ev.copy()
    bad["x"][7] = 20
    with pytest.raises(SourceError, match=r"event 7 at \(x=20, .*outside the 20x13 sensor"):
        voxel_grid(bad, 5, SIZE, backend=backend)
    with pytest.raises(ShapeError, match="EVENT_DTYPE"):
        voxel_grid(np.zeros(3), 5, SIZE, backend=backend)
    with pytest.raises(ShapeError, match=r"shape \(5, 13, 20\)"):
        voxel_grid(ev, 5, SIZE, out=np.zeros((5, 20, 13), np.float32), backend=backend)


def test_voxel_backends_agree_on_a_large_window(make_events):
    ev = make_events(200_000, sensor=(346, 260), rate_ev_per_s=5e6, seed=8, t0_us=2 ** 40)
    a = voxel_grid(ev, 5, (346, 260), backend="numba")
    b = voxel_grid(ev, 5, (346, 260), backend="numpy")
    np.testing.assert_allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------------------------------------ normalisation
@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_voxel_nonzero_mean_std(make_events, backend):
    v = voxel_grid(make_events(800, sensor=SIZE, seed=9), 5, SIZE)
    before = v.copy()
    n = normalize_voxel(v, backend=backend)
    assert n is not v and np.array_equal(v, before)  # pure by default
    nz = before != 0
    assert nz.sum() > 50 and (~nz).sum() > 50
    assert np.all(n[~nz] == 0)  # zeros stay zero
    np.testing.assert_allclose(n[nz].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(n[nz].std(), 1.0, atol=1e-5)  # population std (ddof = 0), as the reference
    vals = before[nz].astype(np.float64)
    np.testing.assert_allclose(n[nz], (vals - vals.mean()) / vals.std(), atol=1e-5)
    inplace = before.copy()
    assert normalize_voxel(inplace, out=inplace, backend=backend) is inplace
    np.testing.assert_array_equal(inplace, n)
    zeros = np.zeros((5, 4, 4), np.float32)
    assert not normalize_voxel(zeros, backend=backend).any()
    const = np.zeros((5, 4, 4), np.float32)
    const[0, 1, 1] = const[2, 3, 0] = 0.5
    res = normalize_voxel(const, backend=backend)
    assert np.isfinite(res).all() and not res.any()
    with pytest.raises(ShapeError, match="float32"):
        normalize_voxel(np.zeros(3), backend=backend)


def test_robust_normalize_voxel():
    v = np.arange(-10, 90, dtype=np.float32).reshape(4, 5, 5)
    r = robust_normalize_voxel(v)
    assert r.min() == 0 and r.dtype == np.float32
    # nearest-rank 95th percentile of -10..89 is the value at rank round(0.95·99) = 94, i.e. 84; the clamped grid
    # is shifted by its min and divided by its max (not by max − min: values can exceed 1, as in RobustNorm)
    np.testing.assert_allclose(r.max(), 94 / (84 + 1e-6), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ engine
def test_unsharp_kernel_matches_the_normal_cdf_construction():
    k = unsharp_kernel()
    assert k.shape == (5, 5) and abs(float(k.sum()) - 1) < 1e-6 and np.allclose(k, k.T) and np.allclose(k, k[::-1])
    st = pytest.importorskip("scipy.stats")
    x = np.linspace(-1.3, 1.3, 6)
    k1 = np.diff(st.norm.cdf(x))
    ref = np.sqrt(np.outer(k1, k1))
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-6)


@pytest.mark.parametrize("family", ["E2VID", "E2VID+", "FireNet", "FireNet+"])
def test_engine_end_to_end_from_a_checkpoint(tmp_path, make_events, family):
    build, save, _ = _formats()[family]
    path = save(tmp_path / f"{family}.pth", build())
    stream = make_events(6000, sensor=SIZE, rate_ev_per_s=2e5, seed=10)
    windows = [_window(stream[i:i + 1500], index=k) for k, i in enumerate(range(0, 6000, 1500))]
    with TorchEngine(path, SIZE) as eng:  # the family comes from the checkpoint's content
        assert eng.family.name == "e2vid" and eng.family.variant(eng.model) == family
        assert eng.info.sensor_size == SIZE and eng.info.input_kind == "events"
        assert eng.representation.normalize == (family in ("E2VID", "FireNet"))
        assert eng.post.unsharp_amount == (0.3 if family in ("E2VID", "FireNet") else 0.0)
        frames = []
        for w in windows:
            f = eng.step(w)
            assert f.shape == (13, 20) and f.dtype == np.float32 and np.isfinite(f).all()
            assert f.min() >= 0 and f.max() <= 1
            frames.append(f.copy())
        assert f is eng.step(windows[0])  # the output buffer is reused
        assert not np.array_equal(frames[0], frames[1])
        eng.reset()
        np.testing.assert_array_equal(eng.step(windows[0]), frames[0])  # reset: the first frame again
        eng.step(windows[1])
        again = eng.step(_window(windows[0].events, reset=True))  # a window asking for a reset
        np.testing.assert_array_equal(again, frames[0])
        assert eng.step(_window(stream[:0])).shape == (13, 20)  # an empty window still gives a frame


def test_strided_firenet_runs_in_the_engine_and_auto_precision_follows_the_models_json(make_events):
    from livenight.cpu import fast_cpu_dtype

    net = FireNet(FireNetConfig(family="FireNet", sensor_size=SIZE, stem_stride=4, base_channels=8))
    stream = make_events(3000, sensor=SIZE, rate_ev_per_s=2e5, seed=11)
    with TorchEngine(net, SIZE, dtype="auto") as eng:  # an E2VID-family network: float32 unless measured
        assert eng.dtype_name == "float32"
        f = eng.step(_window(stream))
        assert f.shape == (13, 20) and np.isfinite(f).all()  # the padded 20x16 output is cropped back
    with TorchEngine(net, SIZE, dtype="auto", meta={"fast_dtypes_checked": ["bfloat16"]}) as eng:
        assert eng.dtype_name == fast_cpu_dtype()
        assert eng.step(_window(stream)).shape == (13, 20)
    with TorchEngine(net, SIZE, dtype="auto", meta={"fast_dtypes_checked": ["float16"]}) as eng:
        assert eng.dtype_name == "float32"  # fp16 measured on CUDA says nothing about bf16 on this CPU


def test_engine_matches_a_manual_pipeline_for_each_postprocessing(make_events):
    stream = make_events(3000, sensor=SIZE, rate_ev_per_s=2e5, seed=11)
    windows = [_window(stream[:1500]), _window(stream[1500:])]
    net = _e2vid(3)
    left, _, top, _ = net.cfg.padding()
    blur = torch.from_numpy(unsharp_kernel())[None, None]

    def manual(post):
        s = net.initial_state()
        outs = []
        for w in windows:
            v = normalize_voxel(voxel_grid(w.events, 5, SIZE))
            with torch.no_grad():
                img, s = net(torch.from_numpy(v)[None], s)
            if post == "official":
                img = 1.3 * img - 0.3 * F.conv2d(img, blur, padding=2)
            img = img[0, 0, top:top + 13, left:left + 20]
            if post == "evreal":
                p1, p99 = np.percentile(img.numpy(), [1, 99])
                img = (img - float(p1)) / float(p99 - p1)
            outs.append(img.clamp(0, 1).numpy())
        return outs

    for post in ("official", "evreal", "clip"):
        with TorchEngine(net, SIZE, postprocess=post) as eng:
            assert eng.post.rescale == ("robust" if post == "evreal" else "fixed")
            for w, want in zip(windows, manual(post)):
                np.testing.assert_allclose(eng.step(w), want, atol=1e-5)
    with TorchEngine(net, SIZE, rescale="auto_hdr", auto_hdr_median_size=2) as eng:
        for _ in range(5):
            f = eng.step(windows[0])
            assert 0 <= f.min() and f.max() <= 1
        assert len(eng.post._bounds) == 3  # rpg_e2vid keeps up to N + 1 bounds
        eng.reset()
        assert len(eng.post._bounds) == 0
    with TorchEngine(net, SIZE, normalize=False, unsharp_amount=0.0) as eng:
        assert not eng.representation.normalize and eng.post.unsharp_amount == 0


def test_engine_refuses_mismatches():
    with pytest.raises(EngineMismatchError, match="built for 20x13 but the source is 346x260"):
        with TorchEngine(_e2vid(), (346, 260)):
            pass
    eng = TorchEngine(lambda: _e2vid(), SIZE)
    with pytest.raises(RuntimeError, match="not open"):
        eng.step(_window(np.zeros(0, EVENT_DTYPE)))
    with pytest.raises(ValueError, match="postprocess must be"):
        TorchEngine(_e2vid(), SIZE, family="e2vid", postprocess="hdr")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TorchEngine(_e2vid(), SIZE, dtype="float16")
    for bad in (42, NERNet(NERNetConfig(sensor_size=SIZE, base_channels=4))):
        with pytest.raises(TypeError, match="model must be"):
            with TorchEngine(bad, SIZE, family="e2vid"):
                pass
    update = _e2vid(num_bins=10, upsample="bilinear", final_activation="none", pad_mode="zeros")
    update = E2VIDRecurrent(E2VIDConfig(**{**update.cfg.to_dict(), "family": "E2VID+", "sensor_size": SIZE}))
    with pytest.raises(EngineMismatchError, match="'update' model"):
        with TorchEngine(update, SIZE):
            pass
    with TorchEngine(lambda: _e2vid(), SIZE) as eng:
        assert eng.info.name == "E2VID"
    assert pack_events([0], [0], [0], [1]).dtype == EVENT_DTYPE


@pytest.mark.parametrize("family", ["E2VID", "FireNet+"])
def test_cli_model_picks_the_family_from_the_checkpoint(tmp_path, family, capsys):
    from PIL import Image

    from livenight.cli import main
    from livenight.simulate import write_night

    make, save, _ = _formats()[family]
    name = "m.pth.tar" if family == "E2VID" else "m.pth"
    save(tmp_path / name, make())
    write_night(tmp_path / "s.h5", seconds=0.2, size=SIZE, seed=1)
    out = tmp_path / "out"
    assert main(["--replay", str(tmp_path / "s.h5"), "--model", str(tmp_path / name), "--no-gui", "--out", str(out),
                 "--max-frames", "3"]) == 0
    assert "torch" not in capsys.readouterr().err
    img = np.asarray(Image.open(out / "frame_00002.png"))
    assert img.shape == (SIZE[1], SIZE[0]) and img.std() > 0
