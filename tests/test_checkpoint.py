"""Checkpoint loading: the official trainer's format (pickled config, WindowsPath, cuda:0 tensors) loads on a CPU
without executing pickled code; mismatches are reported by name; livenight's own format round-trips."""

from __future__ import annotations

import io
import pathlib
import pickle
import sys
import types
import zipfile
from collections import OrderedDict

import pytest
import torch

from livenight.errors import EngineMismatchError, SourceError
from livenight.model.checkpoint import load_letc, load_model, read_checkpoint, save_model
from livenight.model.nernet import NERNet, NERNetConfig

SIZE = (20, 13)
ARCH = {"type": "RepresentationRecurrent", "args": {"unet_kwargs": {
    "num_bins": 5, "skip_type": "sum", "recurrent_network": "NIAM_STcell_GCB", "recurrent_block_type": "",
    "num_encoders": 3, "base_num_channels": 4, "num_residual_blocks": 2, "use_upsample_conv": True,
    "final_activation": "", "norm": "", "crop_size": 160, "mlp_layers": [1, 50, 50, 50, 1],
    "use_cnn_representation": True, "normalize": False, "combine_voxel": False, "RepCNN_kernel_size": 3,
    "RepCNN_padding": 1, "RepCNN_channel": 64, "RepCNN_num_layers": 1}}}


class _WindowsPathPickle:
    """Pickles as ``pathlib.WindowsPath('D:/0/RLED')``, as a checkpoint saved on Windows does."""

    def __reduce__(self):
        return pathlib.WindowsPath, ("D:\\0\\RLED\\saved",)


def _official_checkpoint(tmp_path, model: NERNet, on_cuda: bool = True) -> pathlib.Path:
    """Write a file shaped exactly like the official trainer's ``ner.pth`` (see ner-net.md §1.7)."""
    mod = types.ModuleType("parse_config")

    class ConfigParser:
        pass

    ConfigParser.__module__ = "parse_config"
    ConfigParser.__qualname__ = "ConfigParser"
    mod.ConfigParser = ConfigParser
    sys.modules["parse_config"] = mod
    try:
        cfg = ConfigParser()
        cfg.__dict__.update({"_config": OrderedDict(name="NER", n_gpu=1, arch=ARCH), "resume": None,
                             "log_levels": {0: 30, 1: 20, 2: 10}, "_save_dir": _WindowsPathPickle(),
                             "_log_dir": _WindowsPathPickle()})
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
        ck = {"arch": "RepresentationRecurrent", "epoch": 200, "state_dict": model.state_dict(),
              "optimizer": opt.state_dict(), "monitor_best": 0.123, "config": cfg}
        path = tmp_path / "ner.pth"
        torch.save(ck, path)
    finally:
        del sys.modules["parse_config"]
    if on_cuda:  # rewrite the storage locations to 'cuda:0' as a GPU-trained file has them
        raw = io.BytesIO(path.read_bytes())
        out = io.BytesIO()
        with zipfile.ZipFile(raw) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                if item.filename.endswith("data.pkl"):
                    assert b"X\x03\x00\x00\x00cpu" in data
                    data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
                zout.writestr(item, data)
        path.write_bytes(out.getvalue())
    return path


def _model(seed=0):
    torch.manual_seed(seed)
    return NERNet(NERNetConfig(sensor_size=SIZE, base_channels=4)).eval()


def _run(model, steps=3):
    torch.manual_seed(42)
    xs = [torch.rand(1, 10, SIZE[1], SIZE[0]) for _ in range(steps)]
    s = model.initial_state()
    out = []
    with torch.no_grad():
        for x in xs:
            y, s = model(x, s)
            out.append(y)
    return torch.cat(out)


def test_official_format_loads_on_cpu_and_gives_identical_outputs(tmp_path):
    src = _model()
    path = _official_checkpoint(tmp_path, src)
    with pytest.raises(Exception):  # torch's safe default refuses it: the reason for our own loader
        torch.load(path, map_location="cpu", weights_only=True)
    loaded = load_model(path, SIZE)
    assert loaded.cfg.base_channels == 4 and loaded.cfg.sensor_size == SIZE
    assert torch.equal(_run(loaded), _run(src))
    ck = read_checkpoint(path)
    assert ck["config"].config["arch"]["type"] == "RepresentationRecurrent"
    assert isinstance(ck["config"].__dict__["_save_dir"], pathlib.PureWindowsPath)


def test_module_prefix_and_plain_state_dict_and_livenight_format(tmp_path):
    src = _model(1)
    sd = OrderedDict(("module." + k, v) for k, v in src.state_dict().items())
    torch.save({"state_dict": sd}, tmp_path / "dp.pth")
    cfg = NERNetConfig(sensor_size=SIZE, base_channels=4)
    assert torch.equal(_run(load_model(tmp_path / "dp.pth", SIZE, config=cfg)), _run(src))
    torch.save(src.state_dict(), tmp_path / "plain.pth")
    assert torch.equal(_run(load_model(tmp_path / "plain.pth", SIZE, config=cfg)), _run(src))
    save_model(src, tmp_path / "own.pth")
    own = torch.load(tmp_path / "own.pth", weights_only=True)  # our format needs no unpickling of code
    assert own["livenight_format"] == 1 and own["model"]["base_channels"] == 4
    again = load_model(tmp_path / "own.pth", SIZE)
    assert torch.equal(_run(again), _run(src))


def test_letc_pth_without_prefix_loads_and_freezes(tmp_path):
    src = _model(2)
    sd = {k[len("representation."):]: v for k, v in src.state_dict().items() if k.startswith("representation.")}
    assert len(sd) == 10
    torch.save({"state_dict": sd}, tmp_path / "letc.pth")
    dst = _model(3)
    load_letc(dst, tmp_path / "letc.pth", freeze=True)
    for k, v in src.representation.state_dict().items():
        assert torch.equal(dst.representation.state_dict()[k], v)
    assert not any(p.requires_grad for p in dst.representation.parameters())
    assert all(p.requires_grad for p in dst.unetrecurrent.parameters())


def test_mismatched_checkpoint_names_missing_unexpected_and_shapes(tmp_path):
    sd = _model().state_dict()
    sd.pop("unetrecurrent.pred.conv2d.bias")
    sd["unetrecurrent.extra.weight"] = torch.zeros(1)
    sd["unetrecurrent.head.conv2d.weight"] = torch.zeros(4, 10, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(EngineMismatchError) as e:
        load_model(tmp_path / "bad.pth", SIZE, config=NERNetConfig(sensor_size=SIZE, base_channels=4))
    msg = str(e.value)
    assert "missing: unetrecurrent.pred.conv2d.bias" in msg
    assert "unexpected: unetrecurrent.extra.weight" in msg
    assert "unetrecurrent.head.conv2d.weight (4, 10, 3, 3) (model expects (4, 10, 5, 5))" in msg


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    buf = io.BytesIO()
    torch.save({"state_dict": {}, "payload": Evil()}, buf)
    (tmp_path / "evil.pth").write_bytes(buf.getvalue())
    with pytest.raises(SourceError, match=r"refusing to load global '(posix|os)\.system'"):
        load_model(tmp_path / "evil.pth", SIZE)
    assert not marker.exists()


def test_unsupported_official_option_and_non_checkpoints(tmp_path):
    src = _model()
    path = _official_checkpoint(tmp_path, src, on_cuda=False)
    ck = read_checkpoint(path)
    assert ck["epoch"] == 200
    ARCH["args"]["unet_kwargs"]["skip_type"] = "concat"
    try:
        path2 = _official_checkpoint(tmp_path, src, on_cuda=False)
        with pytest.raises(EngineMismatchError, match="skip_type='concat' is not supported"):
            load_model(path2, SIZE)
    finally:
        ARCH["args"]["unet_kwargs"]["skip_type"] = "sum"
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SourceError, match="junk.pth"):
        load_model(tmp_path / "junk.pth", SIZE)
    with pytest.raises(SourceError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pth", SIZE)
    pickle.dumps(0)  # keep the import used
