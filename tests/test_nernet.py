"""NER-Net: official key names and sizes, the quirks of the forward pass, explicit state, LETC fast path parity."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from livenight.events import make_events
from livenight.letc import LetcTable, exact_grid, official_times
from livenight.model.nernet import NERNet, NERNetConfig, STCell

KEYS = Path(__file__).resolve().parent / "data" / "nernet_official_keys.txt"  # copied from the reference notes


def _official_keys() -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in KEYS.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, shape = line.split(None, 1)
        out.append((name, tuple(int(v) for v in re.findall(r"\d+", shape))))
    return out


def test_state_dict_matches_the_official_key_list_exactly():
    keys = _official_keys()
    assert len(keys) == 97
    sd = NERNet().state_dict()
    assert [k for k, _ in keys] == [k for k in sd] or sorted(k for k, _ in keys) == sorted(sd)
    for name, shape in keys:
        assert tuple(sd[name].shape) == shape, name
    assert sum(v.numel() for v in sd.values()) == 19_364_754
    assert len(list(NERNet().buffers())) == 0


def test_padding_and_state_shapes_for_davis346():
    cfg = NERNetConfig(sensor_size=(346, 260))
    assert cfg.padded_size == (352, 264)
    assert cfg.padding() == (3, 3, 2, 2)  # left, right, top, bottom: top/left get the larger half
    shapes = cfg.state_shapes()
    assert list(shapes) == ["h0", "h1", "h2", "c0", "c1", "c2", "m"]
    assert shapes["h0"] == (1, 64, 132, 176) and shapes["h2"] == (1, 256, 33, 44) and shapes["m"] == (1, 32, 264, 352)
    assert NERNetConfig(sensor_size=(1280, 720)).padding() == (0, 0, 0, 0)


def _tiny(seed=0, size=(20, 13)):
    torch.manual_seed(seed)
    net = NERNet(NERNetConfig(sensor_size=size, base_channels=4)).eval()
    for p in net.parameters():  # larger weights so every path matters numerically
        p.data.uniform_(-0.5, 0.5)
    return net


def test_forward_is_deterministic_with_explicit_state_and_zero_reset():
    net = _tiny()
    x = torch.rand(3, 1, 10, 13, 20)
    with torch.no_grad():
        s = net.initial_state()
        outs = []
        for i in range(3):
            y, s = net(x[i], s)
            outs.append(y)
        assert outs[0].shape == (1, 1, 16, 24)
        assert not torch.equal(outs[1], net(x[1], net.initial_state())[0])  # the state matters
        y0_again, _ = net(x[0], net.initial_state())
        assert torch.equal(y0_again, outs[0])  # a reset state reproduces the first frame exactly
        assert len(s) == 7 and all(t.shape == sh for t, sh in zip(s, net.cfg.state_shapes().values()))


def test_padding_region_of_letc_output_is_zero_before_the_unet():
    net = _tiny()
    seen = {}
    net.unetrecurrent.head.register_forward_hook(lambda m, a, o: seen.update(v=a[0]))
    with torch.no_grad():
        net(torch.rand(1, 10, 13, 20), net.initial_state())
    v = seen["v"]
    left, right, top, bottom = net.cfg.padding()
    assert v.shape == (1, 10, 16, 24) and (left, right, top, bottom) == (2, 2, 2, 1)
    assert torch.all(v[..., :top, :] == 0) and torch.all(v[..., -bottom:, :] == 0)
    assert torch.all(v[..., :left] == 0) and torch.all(v[..., -right:] == 0)
    assert torch.any(v[..., top:-bottom, left:-right] != 0)


def test_cell_equations_including_the_double_sigmoid():
    torch.manual_seed(1)
    n = 3
    cell = STCell(n)
    x, h, c, m = (torch.randn(1, n, 5, 6) for _ in range(4))
    with torch.no_grad():
        h1, c1, m1 = cell(x, h, c, m)
        cx = F.conv2d(x, cell.conv_x[0].weight, padding=1)
        ch = F.conv2d(h, cell.conv_h[0].weight, padding=1)
        cm = F.conv2d(m, cell.conv_m[0].weight, padding=1)
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = cx.split(n, 1)
        i_h, f_h, g_h, o_h = ch.split(n, 1)
        i_m, f_m, g_m = cm.split(n, 1)
        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(torch.sigmoid(f_x + f_h + 1) - torch.exp(torch.sigmoid(F.conv2d(x, cell.LAG_conv.weight))) * i)
        c_ref = f * c + i * torch.tanh(g_x + g_h)
        m_ref = torch.sigmoid(f_xp + f_m + 1) * m + torch.sigmoid(i_xp + i_m) * torch.tanh(g_xp + g_m)
        mem = torch.cat([c_ref, m_ref], 1)
        o = torch.sigmoid(o_x + o_h + F.conv2d(mem, cell.conv_o[0].weight, padding=1))
        h_ref = o * torch.tanh(F.conv2d(mem, cell.conv_last.weight))
    torch.testing.assert_close(c1, c_ref)
    torch.testing.assert_close(m1, m_ref)
    torch.testing.assert_close(h1, h_ref)


def test_memory_upsampler_adds_the_deepest_memory_to_itself():
    net = _tiny()
    got = {}
    net.unetrecurrent.m_t_UpsampleLayer[0].register_forward_hook(lambda mod, a, o: got.update({"in": a[0]}))
    net.unetrecurrent.encoders[2].register_forward_hook(lambda mod, a, o: got.update(m2=o[2]))
    with torch.no_grad():
        net(torch.rand(1, 10, 13, 20), net.initial_state())
    torch.testing.assert_close(got["in"], 2 * got["m2"])


def _events(n, size, seed=0, t0=10_000_000, span=20_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0, t0 + span, n))
    return make_events(t, rng.integers(0, size[0], n), rng.integers(0, size[1], n), rng.integers(0, 2, n))


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
def test_letc_table_matches_the_exact_mlp(n):
    torch.manual_seed(0)
    net = NERNet(NERNetConfig(sensor_size=(346, 260)))
    ev = _events(n, (346, 260), seed=n)
    fast = LetcTable.from_model(net).grid_chw(ev, (346, 260))
    ref = exact_grid(net, ev, (346, 260))
    assert fast.shape == ref.shape == (10, 260, 346)
    assert np.abs(fast - ref).max() / np.abs(ref).max() <= 1e-5
    on_pix = np.zeros((260, 346), bool)
    on_pix[ev["y"][ev["p"] == 1], ev["x"][ev["p"] == 1]] = True
    assert not ref[:5][:, ~on_pix].any()  # channels 0-4 hold ON events only (ON bins first)
    assert ref[:5][:, on_pix].any(axis=0).mean() > 0.99


def test_letc_first_event_contributes_zero_and_single_timestamp_window_falls_back_to_exact():
    torch.manual_seed(0)
    net = NERNet(NERNetConfig(sensor_size=(8, 6)))
    table = LetcTable.from_model(net)
    one = make_events([5_000_000, 5_000_000], [1, 2], [1, 1], [1, 0])
    g = table.grid_chw(one, (8, 6))
    np.testing.assert_allclose(g, exact_grid(net, one, (8, 6)), rtol=1e-6, atol=1e-7)
    ev = make_events([1_000_000, 1_010_000], [3, 4], [2, 2], [1, 1])
    g = table.grid_chw(ev, (8, 6))
    assert np.all(g[:, 2, 3] == 0) and np.any(g[:5, 2, 4] != 0)  # t = 0 for the first event: t·MLP = 0


def test_letc_rejects_events_outside_the_sensor():
    net = NERNet(NERNetConfig(sensor_size=(8, 6)))
    with pytest.raises(ValueError, match=r"\(x=8, y=0\) lies outside the 8x6 sensor"):
        LetcTable.from_model(net).grid(make_events([1, 2000], [1, 8], [0, 0], [1, 1]), (8, 6))


def test_official_times_are_float32_seconds_for_spans_over_1000us():
    t = np.array([12_000_000, 12_000_500, 12_020_000], dtype=np.int64)
    out = official_times(t)
    assert out.dtype == np.float32 and np.array_equal(out, np.float32(t / 1e6))
    short = np.array([100, 600], dtype=np.int64)
    assert np.array_equal(official_times(short), np.float32(short))
