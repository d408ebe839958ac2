"""The classical high-pass engine: exact per-pixel arithmetic against a plain-Python reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from livenight.engines.complementary import ComplementaryFilterEngine
from livenight.events import make_events
from livenight.windowing import Window


def _window(events, t0, t1, reset=False, index=0):
    return Window(index, t0, t1, events, reset, 0)


def _reference(events, t_end, size, fc, c, log_range):
    """Direct transcription of L(t_i) = exp(-2π fc (t_i - t_prev)) L(t_prev) + σ c, decayed to t_end."""
    w, h = size
    L = np.zeros((h, w))
    t_last = np.full((h, w), int(events["t"][0]))
    for e in events:
        y, x = int(e["y"]), int(e["x"])
        L[y, x] = L[y, x] * math.exp(-2 * math.pi * fc * (int(e["t"]) - t_last[y, x]) * 1e-6) + (c if e["p"] else -c)
        t_last[y, x] = int(e["t"])
    L = L * np.exp(-2 * math.pi * fc * (t_end - t_last) * 1e-6)
    return np.clip(0.5 + 0.5 * L / log_range, 0, 1)


def test_single_on_event_brightens_one_pixel_and_decays():
    ev = make_events([1000], [3], [2], [1])
    with ComplementaryFilterEngine((8, 4), cutoff_hz=0.0, contrast_on=0.3, log_range=1.5) as eng:
        out = eng.step(_window(ev, 0, 1001))
        assert out.shape == (4, 8) and out.dtype == np.float32
        assert out[2, 3] == pytest.approx(0.5 + 0.5 * 0.3 / 1.5)
        assert np.count_nonzero(out != 0.5) == 1
    with ComplementaryFilterEngine((8, 4), cutoff_hz=2.0, contrast_on=0.3, log_range=1.5) as eng:
        eng.step(_window(ev, 0, 1001))
        later = eng.step(_window(make_events([], [], [], []), 1001, 1001 + 100_000)).copy()
        expected = 0.3 * math.exp(-2 * math.pi * 2.0 * 0.1)  # decayed for 100 ms
        assert later[2, 3] == pytest.approx(0.5 + 0.5 * expected / 1.5, rel=1e-5)


def test_matches_reference_over_several_windows():
    rng = np.random.default_rng(3)
    n = 4000
    t = np.sort(rng.integers(1_000_000, 1_200_000, n))
    ev = make_events(t, rng.integers(0, 16, n), rng.integers(0, 12, n), rng.integers(0, 2, n))
    with ComplementaryFilterEngine((16, 12), cutoff_hz=5.0, contrast_on=0.2, contrast_off=0.2, log_range=1.0) as eng:
        edges = [1_000_000, 1_050_000, 1_100_000, 1_200_000]
        for a, b in zip(edges[:-1], edges[1:]):
            sel = ev[(ev["t"] >= a) & (ev["t"] < b)]
            out = eng.step(_window(sel, a, b))
    ref = _reference(ev, edges[-1] - 1, (16, 12), 5.0, 0.2, 1.0)
    np.testing.assert_allclose(out, ref, atol=2e-6)


def test_reset_zeroes_state_and_output_buffer_is_reused():
    ev = make_events([10, 20], [0, 1], [0, 0], [1, 0])
    with ComplementaryFilterEngine((4, 2)) as eng:
        a = eng.step(_window(ev, 0, 30))
        assert a[0, 0] > 0.5 and a[0, 1] < 0.5
        b = eng.step(_window(make_events([40], [3], [1], [1]), 30, 50, reset=True))
        assert b is a  # documented: the output buffer is reused by the next call
        assert b[0, 0] == 0.5 and b[0, 1] == 0.5 and b[1, 3] > 0.5


def test_step_outside_context_and_events_outside_sensor_raise():
    eng = ComplementaryFilterEngine((4, 2))
    with pytest.raises(RuntimeError, match="with"):
        eng.step(_window(make_events([1], [0], [0], [1]), 0, 2))
    with eng:
        with pytest.raises(ValueError, match="outside the 4x2 sensor"):
            eng.step(_window(make_events([1], [4], [0], [1]), 0, 2))


@pytest.mark.parametrize("kwargs", [dict(sensor_size=(0, 5)), dict(sensor_size=(5, 5), log_range=0),
                                    dict(sensor_size=(5, 5), cutoff_hz=-1)])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        ComplementaryFilterEngine(**kwargs)
