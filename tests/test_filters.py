"""Event filters (livenight.filters): hot pixels, background activity (own kernel vs dv-processing), rate limit,
and their place in the pipeline (before the ring; RLED index windows follow the filtered stream)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from livenight.cli import main
from livenight.drivers import open_source
from livenight.events import EVENT_DTYPE, EventPacket, concat_events, make_events
from livenight.filters import (BackgroundActivityFilter, FilterChain, FilterConfig, HotPixelFilter, RateLimiter,
                               build_filters, filters_for_run)
from livenight.pipeline import Pipeline
from livenight.windowing import RledWindows, TimeWindows, windows_for_sensor


def ev_of(rows) -> np.ndarray:
    """Events from ``(t, x, y, p)`` rows."""
    a = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    return make_events(a[:, 0], a[:, 1], a[:, 2], a[:, 3])


# ---------------------------------------------------------------------------- background activity
def test_background_activity_rule():
    f = BackgroundActivityFilter((10, 10), duration_us=1_000)
    ev = ev_of([(10_000, 5, 5, 1),   # nothing before it: removed
                (10_100, 5, 5, 0),   # its own pixel fired, which does not count: removed
                (10_500, 6, 6, 1),   # diagonal neighbour 400 µs before: kept
                (11_500, 7, 7, 1),   # neighbour (6, 6) exactly 1000 µs before: not "less than": removed
                (11_600, 9, 9, 1),   # corner pixel, neighbour (8, 8) never fired: removed
                (11_700, 8, 8, 1)])  # neighbour (7, 7) 200 µs before (removed events still count): kept
    kept = f(ev)
    np.testing.assert_array_equal(kept, ev[[2, 5]])
    assert f.removed == 4
    assert f.last_pos.tolist() == [2, 5]


@pytest.mark.parametrize("duration_us", [2_000, 5_000])
def test_numba_kernel_gives_dv_processings_events_on_the_davis_clip(shared_data, duration_us):
    pytest.importorskip("dv_processing")
    with open_source(shared_data("davis346.aedat4")) as src:
        parts = [p.events for p in src]
    ours = BackgroundActivityFilter((346, 260), duration_us, "numba")
    theirs = BackgroundActivityFilter((346, 260), duration_us, "dv")
    a = concat_events([ours(p) for p in parts])
    b = concat_events([theirs(p) for p in parts])
    assert a.shape[0] == b.shape[0] and 0 < a.shape[0] < sum(p.shape[0] for p in parts)
    np.testing.assert_array_equal(a, b)
    assert ours.removed == theirs.removed


def test_numba_kernel_gives_dv_processings_events_on_the_evt3_clip(shared_data):
    pytest.importorskip("dv_processing")
    with open_source(shared_data("evt3_sample.raw"), sensor_size=(1280, 720)) as src:
        parts = [p.events for p in src]
        size = src.sensor_size
    a = concat_events([BackgroundActivityFilter(size, 1_000, "numba")(p) for p in parts])
    b = concat_events([BackgroundActivityFilter(size, 1_000, "dv")(p) for p in parts])
    np.testing.assert_array_equal(a, b)


def test_packet_boundaries_do_not_change_the_result(make_events):
    ev = make_events(20_000, sensor=(40, 30), rate_ev_per_s=2e6, seed=3, t0_us=5_000_000)
    whole = BackgroundActivityFilter((40, 30), 500)(ev)
    f = BackgroundActivityFilter((40, 30), 500)
    pieces = concat_events([f(p) for p in np.array_split(ev, 17)])
    np.testing.assert_array_equal(whole, pieces)
    assert 0 < whole.shape[0] < ev.shape[0]


# ---------------------------------------------------------------------------- hot pixels
def hot_stream(seconds: float, seed: int = 0, hot=((3, 4), (10, 2)), hot_rate: float = 2_000.0):
    """Uniform 20x10 background at 20k events/s plus pixels firing at ``hot_rate`` events/s each."""
    rng = np.random.default_rng(seed)
    n_bg = int(20_000 * seconds)
    t = [rng.integers(0, int(seconds * 1e6), n_bg)]
    x, y = [rng.integers(0, 20, n_bg)], [rng.integers(0, 10, n_bg)]
    for hx, hy in hot:
        m = int(hot_rate * seconds)
        t.append(rng.integers(0, int(seconds * 1e6), m))
        x.append(np.full(m, hx))
        y.append(np.full(m, hy))
    t, x, y = np.concatenate(t), np.concatenate(x), np.concatenate(y)
    o = np.argsort(t, kind="stable")
    return make_events(t[o], x[o], y[o], np.ones(t.shape[0], np.uint8))


def test_hot_pixels_are_learned_then_masked():
    ev = hot_stream(2.0)
    f = HotPixelFilter((20, 10), learn_us=500_000, factor=10.0)
    parts = np.array_split(ev, 40)
    out = concat_events([f(p) for p in parts])
    assert f.learned
    assert sorted(map(tuple, f.hot_list()[:, :2].tolist())) == [(3, 4), (10, 2)]
    # events pass while it learns, up to the end of the packet that reaches 500 ms; hot ones are removed after it
    done = next(k for k, p in enumerate(parts) if p["t"][-1] >= 500_000)
    learn_end = sum(p.shape[0] for p in parts[:done + 1])
    is_hot = ((ev["x"] == 3) & (ev["y"] == 4)) | ((ev["x"] == 10) & (ev["y"] == 2))
    assert f.removed == int(is_hot[learn_end:].sum()) > 0
    assert not np.any(((out["x"] == 3) & (out["y"] == 4))[np.searchsorted(out["t"], 600_000):])
    assert f.removed == ev.shape[0] - out.shape[0]


def test_refresh_unmasks_a_pixel_that_calmed_down():
    first = hot_stream(1.0, hot=((3, 4),))
    second = hot_stream(1.0, seed=1, hot=((10, 2),))
    second["t"] += 1_000_000
    f = HotPixelFilter((20, 10), learn_us=300_000, factor=10.0, refresh_us=1_000_000)
    for part in np.array_split(concat_events([first, second]), 50):
        f(part)
    assert f.hot_list()[:, :2].tolist() == [[10, 2]]


def test_info_lists_hot_pixels(tmp_path, capsys):
    ev = hot_stream(1.0)
    np.save(tmp_path / "hot.npy", np.stack([ev["t"], ev["x"], ev["y"], ev["p"]], axis=1))
    rc = main(["info", str(tmp_path / "hot.npy"), "--sensor-size", "20x10", "--hot-pixels", "--hot-pixels-ms", "500"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 hot pixels over the first 500 ms" in out
    assert "x=3     y=4" in out and "x=10    y=2" in out


# ---------------------------------------------------------------------------- rate limit
def test_rate_limit_subsamples_bursts_only():
    rng = np.random.default_rng(0)
    quiet = np.sort(rng.integers(0, 10_000, 5_000))  # 0.5 M events/s for 10 ms
    burst = np.sort(rng.integers(10_000, 12_000, 40_000))  # 20 M events/s for 2 ms
    t = np.concatenate([quiet, burst])
    ev = make_events(t, rng.integers(0, 100, t.shape[0]), rng.integers(0, 100, t.shape[0]), np.ones(t.shape[0]))
    f = RateLimiter(4.0)  # 4 events per µs: 4,000 per 1 ms slice
    out = f(ev, t_end_us=12_000, t_start_us=0)
    np.testing.assert_array_equal(out[out["t"] < 10_000], ev[:5_000])  # under the rate: untouched
    kept_burst = int((out["t"] >= 10_000).sum())
    assert abs(kept_burst - 8_000) < 5 * np.sqrt(8_000)  # binomial around the 2 x 4,000 budget
    assert f.removed == ev.shape[0] - out.shape[0]
    again = RateLimiter(4.0)(ev, t_end_us=12_000, t_start_us=0)
    np.testing.assert_array_equal(out, again)  # seeded: reproducible


# ---------------------------------------------------------------------------- pipeline
class Recorder:
    """An engine that keeps each window's events (the engine protocol: ``step(window) -> float image``)."""

    def __init__(self, size):
        self.windows, self.size = [], size

    def step(self, w):
        self.windows.append(w.events.copy())
        return np.zeros((self.size[1], self.size[0]), np.float32)


def test_rled_windows_keep_their_events_minus_the_filtered(shared_data):
    path = shared_data("davis346.aedat4")

    def windows(filters):
        with open_source(path) as src:
            rec = Recorder(src.sensor_size)
            stats = Pipeline(src, src.sensor_size, rec, RledWindows(src.event_indices), filters=filters).run()
        return rec.windows, stats

    plain, _ = windows(None)
    chain = build_filters(FilterConfig(background_ms=2.0), (346, 260))
    filtered, stats = windows(chain)
    # the reference: which events the filter keeps, by position in the whole stream
    with open_source(path) as src:
        whole = concat_events([p.events for p in src])
        idx = src.event_indices
    f = BackgroundActivityFilter((346, 260), 2_000)
    f(whole)
    keep = np.zeros(whole.shape[0], bool)
    keep[f.last_pos] = True
    assert len(filtered) == len(plain) == idx.shape[0] - 1
    for k, w in enumerate(filtered):
        i0, i1 = idx[k]
        np.testing.assert_array_equal(w, whole[i0:i1][keep[i0:i1]])
    assert stats.filtered_events == int((~keep).sum()) == chain.removed
    assert f"filtered events {chain.removed} (background activity {chain.removed})" in stats.summary()


def test_time_windows_see_the_filtered_stream(make_events):
    ev = make_events(30_000, sensor=(32, 24), rate_ev_per_s=1e6, seed=2, t0_us=1_000_000)
    pkts = [EventPacket(p, int(p["t"][0]), int(p["t"][-1]) + 1, 0.0, (32, 24)) for p in np.array_split(ev, 10)]
    for a, b in zip(pkts, pkts[1:]):
        object.__setattr__(a, "t_end_us", b.t_start_us)
    rec = Recorder((32, 24))
    chain = build_filters(FilterConfig(background_ms=0.2), (32, 24))
    stats = Pipeline(pkts, (32, 24), rec, TimeWindows(5_000, 5_000), filters=chain).run()
    kept = BackgroundActivityFilter((32, 24), 200)(ev)
    got = concat_events(rec.windows)
    np.testing.assert_array_equal(got, kept[kept["t"] < int(got["t"][-1]) + 1])
    assert stats.events_in == ev.shape[0] and stats.filtered_events == chain.removed > 0


def test_cli_filters_are_printed_and_counted(tmp_path, make_events, capsys):
    ev = make_events(20_000, sensor=(32, 24), rate_ev_per_s=2e5, seed=4)
    np.save(tmp_path / "e.npy", np.stack([ev["t"], ev["x"], ev["y"], ev["p"]], axis=1))
    rc = main(["--replay", str(tmp_path / "e.npy"), "--sensor-size", "32x24", "--engine", "complementary",
               "--no-gui", "--background-ms", "1", "--max-rate", "50", "--hot-pixels"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "livenight: filters: hot pixels" in out and "background activity (a neighbour within 1 ms" in out
    assert "rate limit 50 M events/s" in out
    assert "filtered events " in out and "(hot pixels 0, background activity " in out and "rate limit 0)" in out


def test_model_metadata_turns_filters_on_and_no_filters_off():
    engine = types.SimpleNamespace(meta={"filters": {"background_ms": 3.0}})
    said = []
    args = types.SimpleNamespace(hot_pixels=False, background_ms=None, max_rate=None, no_filters=False)
    chain = filters_for_run(args, (10, 10), engine, say=said.append)
    assert isinstance(chain, FilterChain) and chain.filters[0].duration_us == 3_000
    assert said == ["livenight: filters: background activity (a neighbour within 3 ms, numba) (the model's "
                    "training used them)"]
    args.no_filters = True
    assert filters_for_run(args, (10, 10), engine) is None
    assert filters_for_run(types.SimpleNamespace(), (10, 10), types.SimpleNamespace(meta=None)) is None
    with pytest.raises(ValueError, match="unknown filter settings bogus"):
        FilterConfig.from_json({"bogus": 1})


# ---------------------------------------------------------------------------- per-sensor windows
@pytest.mark.parametrize("size, expected", [((346, 260), TimeWindows(40_000, 40_000)),
                                            ((240, 180), TimeWindows(40_000, 40_000)),
                                            ((640, 480), TimeWindows(22_000, 22_000)),
                                            ((1280, 720), TimeWindows(12_000, 12_000))])
def test_windows_for_sensor_contiguous(size, expected):
    assert windows_for_sensor(TimeWindows(40_000, 40_000), size)[0] == expected


def test_windows_for_sensor_keeps_stride_and_rled():
    policy, why = windows_for_sensor(TimeWindows(20_000, 40_000), (1280, 720))
    assert policy == TimeWindows(10_000, 40_000)  # 6.25 ms would be shorter than the 10 ms floor
    assert "1280x720 sensor: windows shortened 3.2x from 20 ms at 346x260" in why
    rled = RledWindows(np.zeros((3, 2), np.int64))
    assert windows_for_sensor(rled, (1280, 720))[0] is rled


def test_empty_packets_pass_every_filter():
    chain = build_filters(FilterConfig(hot_pixels=True, background_ms=1.0, max_rate_mev_s=1.0), (8, 8))
    pkt = EventPacket(np.empty(0, EVENT_DTYPE), 0, 1_000, 0.0, (8, 8))
    assert chain(pkt) is pkt and chain.removed == 0


def test_status_line_counts_filtered_events():
    from livenight.viewer.health import Health

    base = dict(events_per_s=1e6, frames_per_s=25.0, shown_per_s=None, latency_p50_ms=5.0, latency_p99_ms=9.0,
                dropped_events=0, skipped_windows=2)
    assert "dropped 0 ev, filtered 1234 ev, skipped 2 win" in Health(**base, filtered_events=1234).text()
    assert "filtered" not in Health(**base).text()


def test_a_bright_blob_is_not_hot_but_a_lone_pixel_is():
    blob = tuple((x, y) for x in (14, 15, 16) for y in (5, 6, 7))
    ev = hot_stream(1.0, hot=blob + ((3, 4),))
    f = HotPixelFilter((20, 10), learn_us=500_000, factor=10.0)
    for part in np.array_split(ev, 20):
        f(part)
    assert f.hot_list()[:, :2].tolist() == [[3, 4]]


def test_hot_pixels_of_the_evt2_clip(shared_data, capsys):
    rc = main(["info", str(shared_data("evt2.raw")), "--sensor-size", "640x480", "--hot-pixels", "--max-list", "2"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].split(": ", 1)[1].startswith("4 hot pixels over the first 95.872 ms (521252 events; median active "
                                                "pixel 8 events")
    assert out[1].split() == ["x=339", "y=451", "371", "events", "(3870", "events/s)"]
    assert out[3] == "  … 2 more (--max-list N shows more)"


def test_two_adjacent_hot_pixels_are_both_found():
    ev = hot_stream(1.0, hot=((3, 4), (4, 4)))
    f = HotPixelFilter((20, 10), learn_us=500_000, factor=10.0)
    for part in np.array_split(ev, 20):
        f(part)
    assert sorted(f.hot_list()[:, :2].tolist()) == [[3, 4], [4, 4]]


def ba_reference(ev: np.ndarray, duration_us: int) -> np.ndarray:
    """The background-activity rule written plainly: last time per pixel in a dict."""
    last, keep = {}, []
    for t, x, y, _ in ev.tolist():
        near = [last.get((x + dx, y + dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]
        keep.append(any(s is not None and t - s < duration_us for s in near))
        last[(x, y)] = t
    return ev[np.asarray(keep, bool)]


def test_support_survives_the_surface_rebase_and_time_jumps():
    from livenight.filters import REBASE_AT_US

    t_a = 5_000_000 + REBASE_AT_US - 100
    ev = ev_of([(5_000_000, 1, 1, 1), (5_000_100, 2, 1, 1),  # base = 5 s
                (t_a, 5, 5, 1),                            # just before the rebase point
                (t_a + 500, 6, 5, 0),                      # next packet: rebased, still supported by (5, 5)
                (t_a + 3 * REBASE_AT_US, 6, 6, 1),         # a jump of ~54 min inside one packet
                (t_a + 3 * REBASE_AT_US + 10, 7, 7, 1)])
    f = BackgroundActivityFilter((10, 10), 1_000)
    got = concat_events([f(ev[:3]), f(ev[3:])])
    np.testing.assert_array_equal(got, ba_reference(ev, 1_000))
    assert got.shape[0] == 3 and f.removed == 3


def test_background_activity_matches_the_plain_rule(make_events):
    ev = make_events(5_000, sensor=(16, 12), rate_ev_per_s=1e5, seed=9, t0_us=123)
    f = BackgroundActivityFilter((16, 12), 300)
    got = concat_events([f(p) for p in np.array_split(ev, 7)])
    np.testing.assert_array_equal(got, ba_reference(ev, 300))


def test_bench_script_runs_and_checks_parity(capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_filters", Path(__file__).parents[1] / "scripts" / "bench_filters.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--events", "20000", "--repeats", "1", "--dv-events", "5000"]) == 0
    out = capsys.readouterr().out
    assert out.count("same events: True") == (2 if "dv-processing (" in out else 1)
    assert "hot pixels" in out and "rate limit" in out


def test_python_api_takes_filters(tmp_path, make_events):
    import livenight

    ev = make_events(30_000, sensor=(32, 24), rate_ev_per_s=1e5, seed=6)
    np.savez(tmp_path / "e.npz", t=ev["t"], x=ev["x"], y=ev["y"], p=ev["p"], sensor_size=np.array([32, 24]))
    plain = list(livenight.reconstruct(tmp_path / "e.npz", backend="complementary", max_frames=3))
    filtered = list(livenight.reconstruct(tmp_path / "e.npz", backend="complementary", max_frames=3,
                                          filters={"background_ms": 0.5}))
    assert len(plain) == len(filtered) == 3
    assert all(f.events.shape[0] < p.events.shape[0] for p, f in zip(plain, filtered))
    kept = BackgroundActivityFilter((32, 24), 500)(ev)
    np.testing.assert_array_equal(filtered[0].events, kept[kept["t"] < filtered[0].t1_us])
