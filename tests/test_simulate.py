"""Tests of the night event simulator (livenight.simulate): determinism, stream validity, the low-light trail
model, noise statistics, RLED frame alignment and the RLED writer round trip."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from livenight.simulate import night as sim_mod
from livenight.events import EVENT_DTYPE, check_events
from livenight.simulate import DvsParams, NightScene, SimResult, simulate_night, write_night

SMALL = (96, 72)
QUIET = dict(ba_rate_hz=0.0, n_hot_pixels=0)  # DvsParams overrides: signal events only


def _same(a: SimResult, b: SimResult) -> bool:
    return (a.events.tobytes() == b.events.tobytes() and a.frames.tobytes() == b.frames.tobytes()
            and np.array_equal(a.event_indices, b.event_indices) and np.array_equal(a.frame_end_us, b.frame_end_us))


@pytest.fixture(scope="module")
def default_run() -> SimResult:
    """Half a second of the default scene at the default 346×260 (shared: it is the slowest call)."""
    return simulate_night(seconds=0.5, seed=0)


@pytest.fixture(scope="module")
def two_seconds() -> SimResult:
    return simulate_night(seconds=2.0, size=(64, 48), seed=5, t0_us=1_000_000)


# ---------------------------------------------------------------------------------------------------- determinism

def test_same_seed_is_bit_identical_and_other_seed_differs():
    a = simulate_night(seconds=0.3, size=SMALL, seed=7)
    b = simulate_night(seconds=0.3, size=SMALL, seed=7)
    c = simulate_night(seconds=0.3, size=SMALL, seed=8)
    assert len(a.events) > 1000
    assert _same(a, b)
    assert not np.array_equal(a.frames, c.frames)
    assert a.events.tobytes() != c.events.tobytes()


def test_output_does_not_depend_on_thread_count(monkeypatch):
    monkeypatch.setattr(sim_mod, "_n_workers", lambda: 1)
    one = simulate_night(seconds=0.2, size=SMALL, seed=3)
    monkeypatch.setattr(sim_mod, "_n_workers", lambda: 3)
    three = simulate_night(seconds=0.2, size=SMALL, seed=3)
    assert _same(one, three)


def test_event_buffer_refills_give_the_same_stream(monkeypatch):
    # GIVEN a tiny per-worker event buffer, so the kernel returns early and is resumed many times per chunk
    ref = simulate_night(seconds=0.2, size=SMALL, seed=4)
    monkeypatch.setattr(sim_mod, "_MIN_BUFFER_EVENTS", 0)
    small = simulate_night(seconds=0.2, size=SMALL, seed=4)
    assert _same(ref, small)


# ---------------------------------------------------------------------------------------------------- the stream

def test_default_stream_is_valid_and_rate_in_documented_range(default_run):
    ev = default_run.events
    assert ev.dtype == EVENT_DTYPE
    check_events(ev, (346, 260))  # sorted and inside the sensor, or raises
    assert default_run.sensor_size == (346, 260)
    assert ev["t"][0] >= 0 and ev["t"][-1] <= 500_000
    assert 0.3e6 <= default_run.event_rate_hz <= 3e6
    on = float(ev["p"].mean())
    assert 0.3 < on < 0.7, f"ON fraction {on}"
    # events cover the sensor, not a corner: every quarter of the image fires
    xs, ys = ev["x"].astype(int), ev["y"].astype(int)
    for qx in (0, 1):
        for qy in (0, 1):
            n = np.count_nonzero((xs // 173 == qx) & (ys // 130 == qy))
            assert n > 0.05 * len(ev)


def test_t0_offset_and_frame_alignment(two_seconds):
    s = two_seconds
    t = s.events["t"]
    assert t[0] >= 1_000_000 and t[-1] <= 3_000_000 and np.all(np.diff(t) >= 0)
    # RLED protocol: n = floor((seconds - 0.02) * fps) + 1 = 50 frames for 2 s at 25 fps
    assert s.frames.shape == (50, 48, 64) and s.frames.dtype == np.uint8
    assert s.frame_mid_us.dtype == np.int64 and s.frame_end_us.dtype == np.int64
    assert s.frame_mid_us[0] == 1_010_000  # first window [t0, t0 + 20 ms) is complete
    assert np.array_equal(np.diff(s.frame_mid_us), np.full(49, 40_000))
    assert np.array_equal(s.frame_end_us, s.frame_mid_us + 5_000)
    assert s.frame_mid_us[-1] + 10_000 <= 3_000_000
    idx = s.event_indices
    assert idx.shape == (50, 2) and idx.dtype == np.int64
    assert np.array_equal(idx[:, 0], np.searchsorted(t, s.frame_mid_us - 10_000, "left"))
    assert np.array_equal(idx[:, 1], np.searchsorted(t, s.frame_mid_us + 10_000, "left"))
    assert np.all(np.diff(idx, axis=0) >= 0) and np.all(idx[:, 1] > idx[:, 0])
    # every event of a window lies within ±10 ms of the midpoint
    a, b = idx[20]
    assert np.all(np.abs(t[a:b] - s.frame_mid_us[20]) <= 10_000)


def test_frames_show_moving_structure(two_seconds):
    f = two_seconds.frames.astype(np.int16)
    diffs = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2))
    assert np.all(diffs > 0.5), "consecutive ground-truth frames must differ (the camera pans)"
    assert f.std() > 20 and f.min() < 30 and f.max() > 220  # textured, with dark areas and white lamps


@pytest.mark.parametrize("seconds, fps, n", [(1.0, 25.0, 25), (1.0, 30.0, 30), (0.5, 100.0, 49), (0.02, 25.0, 1),
                                             (0.015, 25.0, 0)])
def test_frame_count_formula(seconds, fps, n):
    mid, end = sim_mod._frame_times(0, int(round(seconds * 1e6)), fps, 10_000)
    assert len(mid) == n == (math.floor((seconds - 0.02) * fps + 1e-9) + 1 if seconds >= 0.02 else 0)
    assert np.all(mid - 10_000 >= 0) and np.all(mid + 10_000 <= seconds * 1e6)


def test_other_sizes_scale():
    s = simulate_night(seconds=0.1, size=(160, 90), seed=2)
    check_events(s.events, (160, 90))
    assert s.frames.shape == (3, 90, 160)
    assert s.events["x"].max() > 150 and s.events["y"].max() > 80


def test_bad_arguments_name_argument_and_value():
    with pytest.raises(ValueError, match=r"seconds.*-1"):
        simulate_night(seconds=-1)
    with pytest.raises(ValueError, match=r"seconds.*nan"):
        simulate_night(seconds=float("nan"))
    with pytest.raises(ValueError, match=r"size.*\(0, 10\)"):
        simulate_night(size=(0, 10))
    with pytest.raises(ValueError, match=r"size.*346"):
        simulate_night(size=(346,))
    with pytest.raises(ValueError, match=r"fps.*0"):
        simulate_night(fps=0)
    with pytest.raises(ValueError, match=r"seed.*-3"):
        simulate_night(seed=-3)
    with pytest.raises(ValueError, match=r"DvsParams.threshold_on.*-0.1"):
        DvsParams(threshold_on=-0.1)
    with pytest.raises(ValueError, match=r"NightScene.object_speed_px_per_s"):
        NightScene(object_speed_px_per_s=(100.0, 50.0))


def test_import_is_cheap():
    code = ("import sys, livenight.simulate; "
            "print(sorted(m for m in ('numba', 'torch', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------------- trails

def _step_trail(illuminance: float) -> np.ndarray:
    """ON burst of one pixel that sees a dark (0.05) → bright (0.8) edge pass at 400 px/s, through the full kernel."""
    tex = np.full((4, 64), 0.05)
    tex[:, 32:] = 0.8
    scene = sim_mod._texture_scene(tex, 1, 1, cam_vel_px_per_s=(400.0, 0.0), cam_start=(20.0, 0.0))
    dvs = DvsParams(illuminance=illuminance, threshold_sigma=0.0, **QUIET)
    ev = sim_mod._simulate_events(scene, dvs, 100_000, 0, np.random.default_rng(0), np.random.default_rng(1))
    assert np.all(ev["x"] == 0) and np.all(ev["y"] == 0)
    return ev


def test_low_light_step_gives_trail_with_growing_gaps():
    ev = _step_trail(0.05)
    assert np.all(ev["p"] == 1), "a dark-to-bright edge gives ON events only"
    assert len(ev) >= 6
    t = ev["t"]
    assert t[0] >= 27_500  # the edge reaches the pixel at 27.5 ms (bilinear ramp until 30 ms)
    gaps = np.diff(t)
    assert np.all(np.diff(gaps) > 0), f"gaps must grow along the trail: {gaps.tolist()}"
    assert gaps[-1] > 3 * gaps[0]
    assert t[-1] - 30_000 > 5_000, "the trail outlasts the edge by several ms in low light"


def test_brighter_light_gives_shorter_trail():
    dark, bright = _step_trail(0.05), _step_trail(0.5)
    span = lambda ev: int(ev["t"][-1] - ev["t"][0])  # noqa: E731
    assert np.all(bright["p"] == 1) and len(bright) >= 6
    assert span(bright) < span(dark) / 3, (span(bright), span(dark))


def test_single_pixel_trace_trail_and_refractory():
    t = np.arange(0, 400_001, 1000.0)
    dvs = DvsParams()
    for up in (True, False):
        refl = np.where(t < 10_000, 0.05, 0.8) if up else np.where(t < 10_000, 0.8, 0.05)
        et, ep = sim_mod._simulate_pixel(dvs.illuminance * refl + dvs.dark_current, t, dvs)
        assert len(et) >= 6 and np.all(ep == (1 if up else 0))
        gaps = np.diff(et)
        assert np.all(np.diff(gaps) > 0)
        assert np.all(gaps >= dvs.refractory_us)
    # the OFF trail (into the dark, where the photoreceptor is slowest) lasts far longer than the ON trail
    on_t, _ = sim_mod._simulate_pixel(dvs.illuminance * np.where(t < 10_000, 0.05, 0.8) + dvs.dark_current, t, dvs)
    off_t, _ = sim_mod._simulate_pixel(dvs.illuminance * np.where(t < 10_000, 0.8, 0.05) + dvs.dark_current, t, dvs)
    assert off_t[-1] - off_t[0] > 5 * (on_t[-1] - on_t[0])
    # a fast, large step in bright light is limited by the refractory period
    fast = DvsParams(illuminance=50.0, refractory_us=500.0)
    et, _ = sim_mod._simulate_pixel(fast.illuminance * np.where(t < 10_000, 0.05, 0.8) + fast.dark_current, t, fast)
    assert len(et) >= 2 and np.all(np.diff(et) >= 500)


def test_static_scene_is_silent_without_noise():
    s = simulate_night(seconds=0.2, size=SMALL, seed=1, scene=NightScene(pan_px_per_s=0.0, n_objects=0),
                       dvs=DvsParams(**QUIET))
    assert len(s.events) == 0


# ---------------------------------------------------------------------------------------------------- noise

FLAT = NightScene(contrast=0.0, n_objects=0, pan_px_per_s=0.0)  # reflectance 0.3 everywhere, nothing moves


def test_background_activity_count_within_poisson_bounds():
    dvs = DvsParams(n_hot_pixels=0)
    s = simulate_night(seconds=2.0, size=(64, 48), seed=11, scene=FLAT, dvs=dvs)
    current = dvs.illuminance * 0.3 + dvs.dark_current
    rate = dvs.ba_rate_hz * min((dvs.ba_ref_current / current) ** dvs.ba_dark_exponent, dvs.ba_max_factor)
    expected = rate * 64 * 48 * 2.0
    n = len(s.events)
    assert abs(n - expected) < 5 * math.sqrt(expected), (n, expected)
    on = int(s.events["p"].sum())
    assert abs(on - n / 2) < 5 * math.sqrt(n / 4)
    # spread over the sensor: no pixel fires much more than Poisson allows
    counts = np.bincount(s.events["y"].astype(int) * 64 + s.events["x"], minlength=64 * 48)
    assert counts.max() <= 10


def test_darker_night_is_noisier():
    base = DvsParams(n_hot_pixels=0)
    dark = DvsParams(n_hot_pixels=0, illuminance=0.005)
    n_base = len(simulate_night(seconds=1.0, size=(64, 48), seed=2, scene=FLAT, dvs=base).events)
    n_dark = len(simulate_night(seconds=1.0, size=(64, 48), seed=2, scene=FLAT, dvs=dark).events)
    assert n_dark > 2 * n_base


def test_hot_pixels_fire_at_their_rate():
    dvs = DvsParams(n_hot_pixels=4, hot_rate_hz=100.0, ba_rate_hz=0.0)
    s = simulate_night(seconds=2.0, size=(64, 48), seed=12, scene=FLAT, dvs=dvs)
    pix = s.events["y"].astype(int) * 64 + s.events["x"]
    ids, counts = np.unique(pix, return_counts=True)
    assert len(ids) == 4
    expected = 100.0 * 2.0
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected)), counts
    assert np.all(s.events["p"] == 1)


# ---------------------------------------------------------------------------------------------------- RLED file

def test_write_night_writes_a_readable_rled_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "night.h5"
    s = write_night(path, seconds=0.3, size=(80, 60), seed=9)
    assert len(s.events) > 0 and len(s.frames) == 8  # floor((0.3 - 0.02) * 25) + 1
    with h5py.File(path, "r") as f:
        n = len(s.events)
        for key in ("xs", "ys", "ts", "ps"):
            assert f["events"][key].shape == (n,)
        assert np.array_equal(f["events/ts"][()], s.events["t"].astype(np.float64))
        assert np.array_equal(f["events/xs"][()], s.events["x"].astype(np.int16))
        assert np.array_equal(f["events/ps"][()].astype(np.uint8), s.events["p"])
        names = sorted(f["images"].keys())
        assert names == [f"image{i:09d}" for i in range(8)]
        assert np.array_equal(f["images/image000000003"][()], s.frames[3])
        assert float(f["images/image000000003"].attrs["timestamp"]) == float(s.frame_end_us[3])
        assert np.array_equal(f["event_indices"][()], s.event_indices)


# ---------------------------------------------------------------------------------------------------- natural scenes

from livenight.simulate import NaturalScene, simulate_natural  # noqa: E402
from livenight.simulate.natural import dead_leaves, pink_noise  # noqa: E402
from livenight.simulate.stats import event_stats  # noqa: E402

STATIC_EMPTY = NaturalScene(background="deadleaves", static_camera=True, velocity_px_per_s=(0.0, 0.0), n_objects=0)
PAN = NaturalScene(background="noise", velocity_px_per_s=(120.0, 30.0), rotation_deg_per_s=5.0, n_objects=2)


def test_natural_windows_are_contiguous_and_cover_every_event():
    s = simulate_natural(0.5, (64, 48), seed=3, scene=PAN, window_us=50_000)
    assert len(s.frames) == 10 and s.frames.shape[1:] == (48, 64)
    assert np.array_equal(s.frame_end_us, (np.arange(10) + 1) * 50_000)
    idx = s.event_indices
    assert idx[0, 0] == 0 and np.array_equal(idx[1:, 0], idx[:-1, 1])  # each event in exactly one window
    assert idx[-1, 1] == np.searchsorted(s.events["t"], 500_000)
    t = s.events["t"]
    for i in (0, 4, 9):
        w = t[idx[i, 0]:idx[i, 1]]
        assert w.size and w.min() >= s.frame_end_us[i] - 50_000 and w.max() < s.frame_end_us[i]
    check_events(s.events, (64, 48))


def test_natural_same_seed_is_identical():
    a = simulate_natural(0.2, (48, 40), seed=8, scene=PAN)
    b = simulate_natural(0.2, (48, 40), seed=8, scene=PAN)
    assert len(a.events) > 100 and np.array_equal(a.events, b.events) and np.array_equal(a.frames, b.frames)


def test_static_camera_background_fires_nothing_without_noise_and_objects():
    quiet = DvsParams(threshold_on=0.3, threshold_off=0.3, max_step_us=2000, max_step_px=2.0, **QUIET)
    s = simulate_natural(0.3, (64, 48), seed=4, scene=STATIC_EMPTY, dvs=quiet, shot_noise=0.0)
    assert len(s.events) == 0
    assert np.array_equal(s.frames[0], s.frames[-1])  # the well-lit reference does not change either
    noisy = DvsParams(threshold_on=0.3, threshold_off=0.3, ba_rate_hz=0.5, n_hot_pixels=0)
    n = simulate_natural(0.3, (64, 48), seed=4, scene=STATIC_EMPTY, dvs=noisy, shot_noise=0.0)
    assert len(n.events) > 0 and event_stats(n.events, (64, 48))["isolated_per_px_s"] > 0.1


def test_moving_objects_fire_where_they_are():
    scene = NaturalScene(background="photo", static_camera=True, velocity_px_per_s=(0.0, 0.0), n_objects=1,
                         object_speed_px_per_s=(80.0, 80.0), cars=1.0)
    s = simulate_natural(0.5, (96, 64), seed=2, scene=scene, dvs=DvsParams(threshold_sigma=0.0, **QUIET),
                         shot_noise=0.0)
    assert len(s.events) > 200
    changed = (np.abs(np.diff(s.frames.astype(int), axis=0)) > 0).any(axis=0)
    on_changed = changed[s.events["y"], s.events["x"]]
    assert on_changed.mean() > 0.95  # events fire where the reference changes: on the object, not the background


def test_dead_leaves_and_pink_noise_are_in_range():
    rng = np.random.default_rng(0)
    dl = dead_leaves(rng, 64, 80)
    assert dl.shape == (64, 80) and dl.dtype == np.float32 and 0 <= dl.min() and dl.max() <= 1
    assert len(np.unique(np.round(dl, 3))) > 20  # many leaves, not a flat canvas
    pn = pink_noise(rng, 128, 128, beta=1.0)
    spec = np.abs(np.fft.rfft2(pn - pn.mean()))
    low, high = spec[1:4, 1:4].mean(), spec[40:60, 40:60].mean()
    assert low > 5 * high  # 1/f: low frequencies carry far more amplitude


def test_event_stats_counts_isolated_events_and_rates():
    ev = np.zeros(4, EVENT_DTYPE)
    ev["t"] = [0, 1_000, 500_000, 1_000_000]
    ev["x"] = [5, 6, 30, 5]
    ev["y"] = [5, 5, 20, 5]
    ev["p"] = [1, 1, 0, 1]
    s = event_stats(ev, (40, 25))
    assert s["ev_per_px_s"] == pytest.approx(4 / (40 * 25 * 1.0))
    assert s["on_fraction"] == 0.75
    # the first two are neighbours 1 ms apart (not isolated); the other two are alone
    assert s["isolated_per_px_s"] == pytest.approx(2 / (40 * 25 * 1.0))
    assert s["iei_median_ms"] == pytest.approx(1000.0)  # pixel (5, 5): 0 -> 1 s
