"""RLED h5 recordings: writer/reader round trip, chunked replay, the three h5 traps, bad input, the source
registry and replay pacing.

Every file is built in ``tmp_path``: with :class:`RledWriter` for the round trip, with h5py directly for the
malformed and foreign-writer layouts (formats.md §4).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from livenight.drivers import known_sources, open_source
from livenight.drivers.pacing import paced
from livenight.drivers.rled import DEFAULT_CHUNK_EVENTS, RledFile, RledFrames, RledSource, RledWriter
from livenight.errors import LivenightError, SourceError, SourceNotFoundError, UnknownSourceError
from livenight.events import EVENT_DTYPE, EventPacket, make_events

W, H = 346, 260
T0 = 1_000_000  # µs


# ---------------------------------------------------------------------------- helpers
def random_events(n: int, seed: int = 0, t0: int = T0, span_us: int = 1_000_000, size=(W, H),
                  distinct_t: int | None = None) -> np.ndarray:
    """Sorted events with many equal-timestamp runs (``distinct_t`` timestamps for ``n`` events) and one long
    run of 40 equal timestamps in the middle."""
    rng = np.random.default_rng(seed)
    distinct_t = distinct_t or max(1, n // 4)
    stamps = np.sort(rng.choice(span_us, size=distinct_t, replace=False)) + t0
    t = np.sort(rng.choice(stamps, size=n))
    if n > 100:
        mid = n // 2
        t[mid:mid + 40] = t[mid]  # a long run that every small chunk size splits
    x = rng.integers(0, size[0], n)
    y = rng.integers(0, size[1], n)
    p = rng.integers(0, 2, n)
    return make_events(t, x, y, p)


def write_raw(path: Path, *, x, y, t, p, names=("xs", "ys", "ts", "ps"), attrs=None, images=None,
              dtypes=(np.int16, np.int16, np.float64, np.bool_)) -> Path:
    """An h5 file written by hand, the way foreign writers do it."""
    with h5py.File(path, "w") as h:
        g = h.create_group("events")
        for name, col, dt in zip(names, (x, y, t, p), dtypes):
            g.create_dataset(name, data=np.asarray(col).astype(dt) if dt is not None else np.asarray(col))
        for k, v in (attrs if attrs is not None else {"sensor_resolution": np.array([W, H])}).items():
            h.attrs[k] = v
        for i, (img, ts) in enumerate(images or []):
            ds = h.create_dataset(f"images/image{i:09d}", data=img)
            ds.attrs["timestamp"] = ts
    return path


def simple_columns(n: int = 100, t0: float = 1e6, step: float = 1000.0):
    i = np.arange(n)
    return dict(x=i % 300, y=i % 200, t=t0 + i * step, p=i % 2)


def concat(packets) -> np.ndarray:
    arrs = [pk.events for pk in packets]
    return np.concatenate(arrs) if arrs else np.empty(0, EVENT_DTYPE)


def assert_events_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == EVENT_DTYPE
    assert got.shape == want.shape
    for k in ("t", "x", "y", "p"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"field {k}")


def assert_tiling(packets, events: np.ndarray) -> None:
    """Packets tile time, never split a timestamp run and concatenate to ``events``."""
    assert packets, "no packets"
    assert packets[0].t_start_us == int(events["t"][0])
    assert packets[-1].t_end_us == int(events["t"][-1]) + 1
    for a, b in zip(packets, packets[1:]):
        assert a.t_end_us == b.t_start_us
        # a run of equal timestamps is never split: the next packet starts with a strictly later timestamp
        assert int(a.events["t"][-1]) < int(b.events["t"][0])
        assert int(b.events["t"][0]) == b.t_start_us
    for pk in packets:
        assert len(pk) > 0
        assert pk.t_start_us <= int(pk.events["t"][0])
        assert int(pk.events["t"][-1]) < pk.t_end_us
        assert pk.sensor_size == (W, H)
    assert_events_equal(concat(packets), events)


# ---------------------------------------------------------------------------- round trip
IMG_TS = [T0 + 50_000 + 100_000 * k for k in range(8)]
EXPOSURE = 4_000


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A writer-made file: 6000 events in three appends, 8 images, default event_indices."""
    path = tmp_path_factory.mktemp("rled") / "rec.h5"
    ev = random_events(6000, seed=1)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (H, W), dtype=np.uint8) for _ in IMG_TS]
    with RledWriter(path, (W, H), flush_every_s=0) as w:
        for part in np.array_split(ev, 3):
            w.add_events(part)
        for img, ts in zip(images, IMG_TS):
            w.add_image(img, ts, exposure_us=EXPOSURE)
        assert w.num_events == 6000
    return path, ev, images


def test_round_trip_events_and_metadata(recording):
    path, ev, _ = recording
    with RledFile(path) as f:
        assert f.num_events == 6000
        assert f.ts_unit == "us"
        assert f.sensor_size == (W, H)
        assert f.t_first_us == int(ev["t"][0])
        assert f.t_last_us == int(ev["t"][-1])
        assert_events_equal(f.read_events(0, f.num_events), ev)
        assert_events_equal(f.read_events(1234, 4321), ev[1234:4321])
        assert f.read_events(10, 10).size == 0
        for t in (0, int(ev["t"][0]), int(ev["t"][3000]), int(ev["t"][3000]) + 1, int(ev["t"][-1]), 10**12):
            assert f.index_at_time(t) == int(np.searchsorted(ev["t"], t, side="left"))


def test_round_trip_file_attributes(recording):
    path, ev, _ = recording
    num_pos = int(np.count_nonzero(ev["p"]))
    with h5py.File(path, "r") as h:
        a = h.attrs
        assert int(a["num_events"]) == 6000
        assert int(a["num_pos"]) == num_pos
        assert int(a["num_neg"]) == 6000 - num_pos
        assert int(a["num_imgs"]) == len(IMG_TS)
        assert float(a["t0"]) == float(ev["t"][0])
        assert float(a["tk"]) == float(ev["t"][-1])
        assert float(a["duration"]) == float(ev["t"][-1] - ev["t"][0])
        assert list(np.asarray(a["sensor_resolution"])) == [W, H]
        assert h["events/ts"].dtype == np.float64
        assert h["events/xs"].dtype == np.int16
        assert h["events/ps"].dtype == np.bool_
        assert int(h["images"].attrs["num_images"]) == len(IMG_TS)
        for i, ts in enumerate(IMG_TS):
            img = h[f"images/image{i:09d}"]
            assert float(img.attrs["timestamp"]) == ts
            assert list(img.attrs["size"]) == [H, W]
            # index of the last event before the frame
            assert int(img.attrs["event_idx"]) == max(0, int(np.searchsorted(ev["t"], ts, side="left")) - 1)


def test_round_trip_images_and_event_indices(recording):
    path, ev, images = recording
    mid = np.asarray(IMG_TS) - EXPOSURE // 2
    want = np.stack([np.searchsorted(ev["t"], mid - 10_000, side="left"),
                     np.searchsorted(ev["t"], mid + 10_000, side="left")], axis=1)
    assert want[:, 1].min() > want[:, 0].min()  # the windows hold events: the comparison is not vacuous
    with RledSource(path) as src:
        assert src.sensor_size == (W, H)
        assert src.name == "rec.h5"
        np.testing.assert_array_equal(src.event_indices, want)
        assert src.event_indices.dtype == np.int64
        frames = src.frames
        assert isinstance(frames, RledFrames)
        assert len(frames) == len(IMG_TS)
        np.testing.assert_array_equal(frames.t_us, IMG_TS)
        assert frames.t_us.dtype == np.int64
        for i, img in enumerate(images):
            got = frames[i]
            assert got.dtype == np.uint8 and got.shape == (H, W)
            np.testing.assert_array_equal(got, img)


def test_writer_explicit_event_indices_are_stored(tmp_path):
    ev = random_events(500, seed=3)
    idx = np.array([[0, 100], [50, 400]])
    with RledWriter(tmp_path / "e.h5", (W, H)) as w:
        w.add_events(ev)
        w.add_image(np.zeros((H, W), np.uint8), T0 + 1000)
        w.add_image(np.zeros((H, W), np.uint8), T0 + 2000)
        w.set_event_indices(idx)
    with RledFile(tmp_path / "e.h5") as f:
        np.testing.assert_array_equal(f.event_indices, idx)
        assert f.num_images == 2


def test_writer_without_images_has_no_event_indices_or_frames(tmp_path):
    ev = random_events(300, seed=4)
    with RledWriter(tmp_path / "n.h5", (W, H)) as w:
        w.add_events(ev)
    with RledSource(tmp_path / "n.h5") as src:
        assert src.event_indices is None
        assert src.frames is None
        assert src.sensor_size == (W, H)  # from the attribute: no images, no warning needed
        assert_events_equal(concat(list(src)), ev)


def test_writer_rejects_out_of_order_appends(tmp_path):
    ev = random_events(200, seed=5)
    w = RledWriter(tmp_path / "w.h5", (W, H))
    try:
        w.add_events(ev[100:])
        with pytest.raises(SourceError, match=rf"t={int(ev['t'][0])} µs precedes"):
            w.add_events(ev[:100])
    finally:
        w.close()


# ---------------------------------------------------------------------------- chunked reading
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 39, 40, 41, 64, 999, 5999, 6000, 6001, DEFAULT_CHUNK_EVENTS])
def test_chunked_packets_tile_time_and_keep_runs(recording, chunk):
    path, ev, _ = recording
    # the file really has runs of equal timestamps, and chunk sizes below split them
    assert np.count_nonzero(np.diff(ev["t"]) == 0) > 1000
    with RledSource(path, chunk_events=chunk) as src:
        packets = list(src)
    assert_tiling(packets, ev)


@pytest.mark.parametrize("chunk", [1, 5, 16, 1000])
def test_iter_chunks_concatenate_to_the_file(recording, chunk):
    path, ev, _ = recording
    with RledFile(path) as f:
        chunks = list(f.iter_chunks(chunk))
    assert [a for a, _ in chunks] == list(range(0, 6000, chunk))
    assert all(c.size == min(chunk, 6000 - a) for a, c in chunks)
    assert_events_equal(np.concatenate([c for _, c in chunks]), ev)


def test_single_timestamp_file_is_one_packet(tmp_path):
    n = 50
    path = write_raw(tmp_path / "one.h5", x=np.arange(n), y=np.arange(n), t=np.full(n, 7_000_000.0),
                     p=np.arange(n) % 2)
    with RledSource(path, chunk_events=3, ts_unit="us") as src:
        packets = list(src)
    assert len(packets) == 1
    assert (packets[0].t_start_us, packets[0].t_end_us) == (7_000_000, 7_000_001)
    assert len(packets[0]) == n


def test_source_is_single_use(recording):
    path, ev, _ = recording
    with RledSource(path) as src:
        assert len(concat(list(src))) == ev.size
        with pytest.raises(RuntimeError, match="only once"):
            iter(src)


# ---------------------------------------------------------------------------- trap 1: ts unit
@pytest.mark.parametrize("t0_us", [0, 5_000_000, 1_700_000_000_000_000])  # zeroed, offset, Unix epoch
def test_ts_in_float_seconds_is_detected_and_exact(tmp_path, t0_us):
    rng = np.random.default_rng(7)
    t_us = np.sort(rng.integers(t0_us, t0_us + 3_000_000, 2000))
    c = dict(x=rng.integers(0, W, 2000), y=rng.integers(0, H, 2000), p=rng.integers(0, 2, 2000))
    img_ts_us = int(t_us[1000])
    path = write_raw(tmp_path / "sec.h5", t=t_us / 1e6, **c,
                     images=[(np.zeros((H, W), np.uint8), img_ts_us / 1e6)])
    with RledFile(path) as f:
        assert f.ts_unit == "s"
        assert f.t_first_us == int(t_us[0])
        assert f.t_last_us == int(t_us[-1])
        got = f.read_events(0, 2000)
        np.testing.assert_array_equal(got["t"], t_us)  # exact, not just close
        assert got["t"].dtype == np.int64
        np.testing.assert_array_equal(f.image_timestamps_us(), [img_ts_us])
        assert f.index_at_time(img_ts_us) == int(np.searchsorted(t_us, img_ts_us))


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint32])
def test_ts_in_microseconds_is_detected(tmp_path, dtype):
    c = simple_columns(200, t0=2_000_000, step=500)  # span 99.5 ms
    path = write_raw(tmp_path / "us.h5", **c, dtypes=(np.int16, np.int16, dtype, np.bool_))
    with RledFile(path) as f:
        assert f.ts_unit == "us"
        np.testing.assert_array_equal(f.read_events(0, 200)["t"], c["t"].astype(np.int64))


def test_ts_unit_override(tmp_path):
    # integral µs values spanning only 5 ms are still µs (integral values never mean seconds) ...
    c = simple_columns(50, t0=3_000_000, step=100)
    path = write_raw(tmp_path / "short.h5", **c)
    with RledFile(path) as f:
        assert f.ts_unit == "us"
        assert f.t_first_us == 3_000_000
    with RledFile(path, ts_unit="s") as f:  # ... unless the user says so
        assert f.ts_unit == "s"
        assert f.t_first_us == 3_000_000 * 1_000_000
    with RledFile(path, ts_unit="us") as f:
        assert f.ts_unit == "us"
        np.testing.assert_array_equal(f.read_events(0, 50)["t"], c["t"].astype(np.int64))
    # and the other way round: seconds forced
    c2 = simple_columns(50, t0=12.0, step=0.001)
    path2 = write_raw(tmp_path / "forced.h5", **c2)
    with RledFile(path2, ts_unit="s") as f:
        np.testing.assert_array_equal(f.read_events(0, 50)["t"], 12_000_000 + 1000 * np.arange(50))
    with RledSource(path, ts_unit="us") as src:
        assert src.file.t_first_us == 3_000_000
    with pytest.raises(ValueError, match="ts_unit must be 'auto', 'us' or 's'.*'ms'"):
        RledFile(path, ts_unit="ms")


# ---------------------------------------------------------------------------- trap 2: sensor_resolution
@pytest.mark.parametrize("res", [[W, H], [H, W], (W, H), np.array([H, W], dtype=np.int32)])
def test_sensor_resolution_either_order(tmp_path, res):
    c = simple_columns(100)
    c["x"] = np.linspace(0, W - 1, 100).astype(int)  # landscape data: x reaches 345
    c["y"] = np.linspace(0, H - 1, 100).astype(int)
    path = write_raw(tmp_path / "r.h5", **c, attrs={"sensor_resolution": res})
    with RledFile(path) as f:
        assert f.sensor_size == (W, H)
        assert f.read_events(0, 100).size == 100  # coordinates accepted against that size


def test_sensor_resolution_portrait_sensor_follows_the_coordinates(tmp_path):
    c = simple_columns(100)
    c["x"] = np.linspace(0, H - 1, 100).astype(int)  # x up to 259
    c["y"] = np.linspace(0, W - 1, 100).astype(int)  # y up to 345
    path = write_raw(tmp_path / "portrait.h5", **c, attrs={"sensor_resolution": [W, H]})
    with RledFile(path) as f:
        assert f.sensor_size == (H, W)


def test_images_define_the_sensor_size(tmp_path):
    c = simple_columns(100)
    img = np.zeros((H, W), np.uint8)
    # a wrong attribute loses against the image shape (H, W)
    path = write_raw(tmp_path / "img.h5", **c, attrs={"sensor_resolution": [640, 480]}, images=[(img, 1.05e6)])
    with RledFile(path) as f:
        assert f.sensor_size == (W, H)
    path = write_raw(tmp_path / "img2.h5", **c, attrs={}, images=[(img, 1.05e6)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # images present: nothing is inferred, so no warning
        with RledFile(path) as f:
            assert f.sensor_size == (W, H)


def test_sensor_resolution_absent_is_inferred_with_a_warning(tmp_path):
    c = simple_columns(100)  # x and y up to 99
    c["x"][17] = 239
    c["y"][18] = 199
    path = write_raw(tmp_path / "noattr.h5", **c, attrs={})
    with pytest.warns(UserWarning, match=r"noattr.h5: no sensor_resolution.*inferred 240x200"):
        f = RledFile(path)
    with f:
        assert f.sensor_size == (240, 200)
        assert f.read_events(0, 100).size == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit size needs no inference
        with RledFile(path, sensor_size=(W, H)) as f:
            assert f.sensor_size == (W, H)


def test_inferred_size_warning_points_at_the_caller(tmp_path):
    """``stacklevel`` should attribute the warning to the line that opened the file, not to rled.py."""
    c = simple_columns(100)
    path = write_raw(tmp_path / "noattr.h5", **c, attrs={})
    with pytest.warns(UserWarning, match="inferred 100x100") as rec:
        RledFile(path).close()
    assert [Path(w.filename).name for w in rec] == [Path(__file__).name]


# ---------------------------------------------------------------------------- trap 3: polarity
P_ON_OFF = np.array([1, 0, 0, 1, 1, 1, 0, 1, 0, 0], dtype=np.uint8)


@pytest.mark.parametrize("stored, dtype", [
    (P_ON_OFF.astype(bool), np.bool_),
    (P_ON_OFF, np.uint8),
    (P_ON_OFF, np.int64),
    (P_ON_OFF.astype(np.int8) * 2 - 1, np.int8),  # ±1
    (P_ON_OFF.astype(np.int64) * 2 - 1, np.int64),
    (P_ON_OFF.astype(np.float32) * 2 - 1, np.float32),
], ids=["bool", "uint8-01", "int64-01", "int8-pm1", "int64-pm1", "float32-pm1"])
@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_polarity_encodings_map_to_on_is_1(tmp_path, stored, dtype, chunk):
    c = simple_columns(10)
    c["p"] = stored
    path = write_raw(tmp_path / "p.h5", **c, dtypes=(np.int16, np.int16, np.float64, dtype))
    with RledSource(path, chunk_events=chunk) as src:
        got = concat(list(src))
    np.testing.assert_array_equal(got["p"], P_ON_OFF)
    assert got["p"].dtype == np.uint8


def test_polarity_value_2_names_the_value_and_file(tmp_path):
    c = simple_columns(10)
    c["p"] = np.array([0, 1, 1, 0, 2, 1, 0, 0, 1, 1])
    path = write_raw(tmp_path / "p2.h5", **c, dtypes=(np.int16, np.int16, np.float64, np.int8))
    with pytest.raises(SourceError) as ei:
        with RledSource(path) as src:
            list(src)
    msg = str(ei.value)
    assert str(path) in msg and "events/ps" in msg and "expected bool, 0/1 or -1/+1" in msg
    assert re.search(r"got [^)]*\b2\b", msg), msg  # the offending value is named


def test_polarity_error_shows_the_value_plainly(tmp_path):
    """The value as a user reads it, "(got 2)", not a NumPy repr such as "(got np.int8(2))"."""
    c = simple_columns(10)
    c["p"] = np.array([0, 1, 1, 0, 2, 1, 0, 0, 1, 1])
    path = write_raw(tmp_path / "p2.h5", **c, dtypes=(np.int16, np.int16, np.float64, np.int8))
    with pytest.raises(SourceError) as ei:
        RledFile(path).read_events(0, 10)
    assert "(got 2)" in str(ei.value), str(ei.value)


def test_polarity_mixing_encodings_across_chunks_is_an_error(tmp_path):
    c = simple_columns(10)
    c["p"] = np.array([1, -1, 1, -1, 1, 0, 1, 0, 1, 0])  # ±1 first, 0/1 later
    path = write_raw(tmp_path / "mix.h5", **c, dtypes=(np.int16, np.int16, np.float64, np.int8))
    with pytest.raises(SourceError, match="mixes 0/1 and -1/\\+1") as ei:
        with RledSource(path, chunk_events=5) as src:
            list(src)
    assert "mix.h5" in str(ei.value)


@pytest.mark.parametrize("names", [("x", "y", "t", "p"), ("x", "y", "ts", "p")])
def test_legacy_dataset_names(tmp_path, names):
    c = simple_columns(100)
    path = write_raw(tmp_path / "legacy.h5", **c, names=names)
    with RledSource(path, chunk_events=16) as src:
        got = concat(list(src))
    want = make_events(c["t"].astype(np.int64), c["x"], c["y"], c["p"])
    assert_events_equal(got, want)


# ---------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    for opener in (RledFile, RledSource, open_source):
        with pytest.raises(SourceNotFoundError) as ei:
            opener(path)
        assert isinstance(ei.value, FileNotFoundError)
        assert isinstance(ei.value, LivenightError)
        assert str(path) in str(ei.value) and "no such file" in str(ei.value)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("t,x,y,p\n1,2,3,1\n")
    with pytest.raises(SourceError, match="not an HDF5 file") as ei:
        RledFile(path)
    assert str(path) in str(ei.value)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="not an HDF5 file"):
        open_source(empty)


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.95])
def test_truncated_hdf5_is_a_source_error(recording, tmp_path, fraction):
    path, _, _ = recording
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SourceError) as ei:  # at open or at read; never a raw OSError / KeyError
        with RledSource(cut, chunk_events=1000) as src:
            for _ in src:
                pass
    assert str(cut) in str(ei.value)
    assert "truncated" in str(ei.value)


def test_missing_events_ts(tmp_path):
    path = tmp_path / "nots.h5"
    with h5py.File(path, "w") as h:
        for name in ("xs", "ys", "ps"):
            h[f"events/{name}"] = np.zeros(4, np.int16)
    with pytest.raises(SourceError) as ei:
        RledFile(path)
    msg = str(ei.value)
    assert str(path) in msg and "'events/ts'" in msg
    assert "events/xs" in msg  # says what it found


def test_missing_events_group(tmp_path):
    path = tmp_path / "nogroup.h5"
    with h5py.File(path, "w") as h:
        h["something"] = np.zeros(3)
    with pytest.raises(SourceError, match="missing group 'events'.*something") as ei:
        RledFile(path)
    assert str(path) in str(ei.value)


def test_datasets_of_different_lengths(tmp_path):
    path = tmp_path / "len.h5"
    with h5py.File(path, "w") as h:
        h["events/xs"] = np.zeros(10, np.int16)
        h["events/ys"] = np.zeros(9, np.int16)
        h["events/ts"] = np.arange(10, dtype=np.float64)
        h["events/ps"] = np.zeros(8, bool)
    with pytest.raises(SourceError) as ei:
        RledFile(path)
    msg = str(ei.value)
    assert str(path) in msg and "different lengths" in msg
    for part in ("events/xs 10", "events/ys 9", "events/ts 10", "events/ps 8"):
        assert part in msg


@pytest.mark.parametrize("bad_index, chunk", [
    (30, 10),  # the decrease is exactly at a chunk boundary
    (35, 10),  # inside the fourth chunk
    (35, DEFAULT_CHUNK_EVENTS),  # inside the only chunk
    (1, 1),  # every event its own chunk
])
def test_unsorted_timestamps_give_the_event_index(tmp_path, bad_index, chunk):
    c = simple_columns(100)
    c["t"][bad_index] = c["t"][bad_index - 1] - 5
    path = write_raw(tmp_path / "unsorted.h5", **c)
    with pytest.raises(SourceError) as ei:
        with RledSource(path, chunk_events=chunk) as src:
            list(src)
    msg = str(ei.value)
    assert str(path) in msg
    assert "timestamps not sorted at" in msg and f"index {bad_index}:" in msg
    assert f"t={int(c['t'][bad_index])} µs" in msg


def test_last_event_before_first_is_caught_at_open(tmp_path):
    c = simple_columns(20)
    c["t"][-1] = 0.0
    path = write_raw(tmp_path / "rev.h5", **c)
    with pytest.raises(SourceError, match="timestamps not sorted") as ei:
        RledFile(path)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("chunk", [10, 1000])
def test_coordinates_outside_the_sensor(tmp_path, chunk):
    c = simple_columns(100)
    c["x"][57] = 400
    path = write_raw(tmp_path / "out.h5", **c)
    with pytest.raises(SourceError) as ei:
        with RledSource(path, chunk_events=chunk) as src:
            list(src)
    msg = str(ei.value)
    assert str(path) in msg
    assert "event 57 " in msg and "x=400" in msg and "y=57" in msg and "346x260" in msg


def test_negative_coordinate(tmp_path):
    c = simple_columns(100)
    c["y"][42] = -3
    path = write_raw(tmp_path / "neg.h5", **c)
    with pytest.raises(SourceError) as ei:
        with RledSource(path, chunk_events=8) as src:
            list(src)
    msg = str(ei.value)
    assert str(path) in msg and "event 42 " in msg and "y=-3" in msg


def test_error_index_does_not_rewrite_the_path(tmp_path):
    """The chunk-relative index is shifted to the absolute one; the file name must not be touched."""
    folder = tmp_path / "night event 7"
    folder.mkdir()
    c = simple_columns(100)
    c["x"][57] = 400
    path = write_raw(folder / "take index 3.h5", **c)
    with pytest.raises(SourceError) as ei:
        with RledSource(path, chunk_events=10) as src:
            list(src)
    msg = str(ei.value)
    assert str(path) in msg, msg
    assert "event 57 " in msg, msg


def test_zero_events(tmp_path):
    path = write_raw(tmp_path / "zero.h5", x=[], y=[], t=[], p=[])
    with pytest.raises(SourceError, match="zero events") as ei:
        RledFile(path)
    assert str(path) in str(ei.value)


def test_directory_instead_of_file(tmp_path):
    d = tmp_path / "rec.h5"
    d.mkdir()
    for opener in (RledFile, open_source):
        with pytest.raises(SourceError, match="is a directory") as ei:
            opener(d)
        assert str(d) in str(ei.value)


@pytest.mark.parametrize("layout", ["events-is-a-dataset", "ts-is-a-group", "ts-holds-strings"])
def test_wrong_object_kinds_are_source_errors(tmp_path, layout):
    """Malformed files fail with a SourceError naming the file (module docstring), not a raw Python error."""
    path = tmp_path / f"{layout}.h5"
    with h5py.File(path, "w") as h:
        if layout == "events-is-a-dataset":
            h["events"] = np.arange(10)
        else:
            g = h.create_group("events")
            g["xs"] = np.zeros(3, np.int16)
            g["ys"] = np.zeros(3, np.int16)
            g["ps"] = np.ones(3, bool)
            if layout == "ts-is-a-group":
                g.create_group("ts")
            else:
                g["ts"] = np.array([b"a", b"b", b"c"])
            h.attrs["sensor_resolution"] = [W, H]
    with pytest.raises(SourceError) as ei:
        RledFile(path)
    assert str(path) in str(ei.value)


def test_bad_event_indices_shape(tmp_path):
    c = simple_columns(20)
    path = write_raw(tmp_path / "ei.h5", **c)
    with h5py.File(path, "a") as h:
        h["event_indices"] = np.array([[0, 5], [3, 99]])
    with pytest.raises(SourceError, match=r"event_indices\[1\] = \[3, 99\]") as ei:
        RledFile(path)
    assert str(path) in str(ei.value)


def test_reversed_event_indices_rows_name_the_row(tmp_path):
    c = simple_columns(20)
    path = write_raw(tmp_path / "rev.h5", **c)
    with h5py.File(path, "a") as h:
        h["event_indices"] = np.array([[10, 15], [5, 9], [0, 4]])  # rows in reverse time order
    with pytest.raises(SourceError, match=r"event_indices\[1\] = \[5, 9\] starts or ends before "
                                          r"event_indices\[0\] = \[10, 15\]") as ei:
        RledFile(path)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("where", ["all", 0, 7, 19])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_timestamps_name_file_field_and_index(tmp_path, where, value):
    c = simple_columns(20)
    t = c["t"].astype(np.float64)
    if where == "all":
        t[:] = value
    else:
        t[where] = value
    path = write_raw(tmp_path / "nan.h5", **{**c, "t": t})
    first = 0 if where == "all" else where
    with pytest.raises(SourceError, match=rf"events/ts\[{first}\] is -?(nan|inf) \(expected a finite number\)") as ei:
        with RledSource(path, chunk_events=4) as src:
            list(src)
    assert str(path) in str(ei.value)


def test_absurd_float_timestamp_is_an_error(tmp_path):
    c = simple_columns(20)
    t = c["t"].astype(np.float64)
    t[5] = 1e300
    path = write_raw(tmp_path / "huge.h5", **{**c, "t": t})
    with pytest.raises(SourceError, match=r"events/ts\[5\] = 1e\+300 is not a timestamp"):
        with RledSource(path) as src:
            list(src)


@pytest.mark.parametrize("column", ["x", "y"])
def test_nan_coordinates_name_file_field_and_index(tmp_path, column):
    c = simple_columns(20)
    col = c[column].astype(np.float32)
    col[11] = np.nan
    dtypes = (np.float32 if column == "x" else np.int16, np.float32 if column == "y" else np.int16, np.float64,
              np.bool_)
    path = write_raw(tmp_path / "nanxy.h5", **{**c, column: col}, dtypes=dtypes)
    with pytest.raises(SourceError, match=rf"events/{column}s\[11\] is nan") as ei:
        with RledSource(path, chunk_events=8) as src:
            list(src)
    assert str(path) in str(ei.value)


# ---------------------------------------------------------------------------- open_source
@pytest.mark.parametrize("uri, key", [("foo.xyz", "'.xyz'"), ("bogus://x", "'bogus://'"), ("plainname", "'plainname'")])
def test_open_source_unknown_lists_known(uri, key):
    with pytest.raises(UnknownSourceError) as ei:
        open_source(uri)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert repr(uri) in msg and key in msg
    assert ".h5" in msg and ".hdf5" in msg
    for k in known_sources():
        assert k in msg


def test_open_source_h5_dispatch(recording, tmp_path):
    path, ev, _ = recording
    for uri in (path, str(path)):
        with open_source(uri, chunk_events=500) as src:
            assert isinstance(src, RledSource)
            assert src.chunk_events == 500
            assert_tiling(list(src), ev)
    other = tmp_path / "REC.HDF5"
    other.write_bytes(path.read_bytes())
    with open_source(other, ts_unit="us") as src:
        assert isinstance(src, RledSource)
        assert src.file.ts_unit == "us"
    assert {".h5", ".hdf5"} <= set(known_sources())


# ---------------------------------------------------------------------------- pacing
class FakeClock:
    """A monotonic clock that only moves when someone sleeps (or the consumer works)."""

    def __init__(self, start: float = 500.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.calls = 0

    def clock(self) -> float:
        self.calls += 1
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def packets_from(ev: np.ndarray, bounds: list[int]) -> list[EventPacket]:
    cuts = np.searchsorted(ev["t"], bounds, side="left")
    return [EventPacket(ev[cuts[k]:cuts[k + 1]], bounds[k], bounds[k + 1], 0.0, (W, H))
            for k in range(len(bounds) - 1)]


@pytest.mark.parametrize("speed", [1.0, 2.5, 0.5])
def test_paced_sleeps_to_the_recording_clock(speed):
    ev = random_events(3000, seed=9, span_us=1_000_000)
    bounds = [T0, T0 + 3_000, T0 + 250_000, T0 + 251_000, T0 + 1_000_000]  # small and big packets
    packets = packets_from(ev, bounds)
    fc = FakeClock()
    out = []
    for pk in paced(packets, speed=speed, slice_us=5_000, clock=fc.clock, sleep=fc.sleep):
        # released when the wall clock reaches the slice's end, scaled by speed
        due = 500.0 + (pk.t_end_us - T0) / (1e6 * speed)
        assert fc.now == pytest.approx(due, abs=1e-9)
        assert pk.host_time_s == fc.now
        out.append(pk)
    span_s = (bounds[-1] - bounds[0]) / 1e6
    assert sum(fc.sleeps) == pytest.approx(span_s / speed, rel=1e-9)
    assert all(s > 0 for s in fc.sleeps)
    # slices: at most slice_us, tile time, keep every event, timestamps untouched
    assert all(pk.t_end_us - pk.t_start_us <= 5_000 for pk in out)
    assert out[0].t_start_us == T0 and out[-1].t_end_us == T0 + 1_000_000
    assert all(a.t_end_us == b.t_start_us for a, b in zip(out, out[1:]))
    assert len(out) == 1 + 50 + 1 + 150  # 3 ms whole, 247 ms -> 50 slices, 1 ms whole, 749 ms -> 150
    for pk in out:
        if len(pk):
            assert pk.t_start_us <= int(pk.events["t"][0]) and int(pk.events["t"][-1]) < pk.t_end_us
    assert_events_equal(concat(out), ev)


def test_paced_slow_consumer_never_sleeps_backwards():
    ev = random_events(500, seed=10, span_us=100_000)
    packets = packets_from(ev, [T0, T0 + 50_000, T0 + 100_000])
    fc = FakeClock()
    n = 0
    for _ in paced(packets, speed=1.0, slice_us=10_000, clock=fc.clock, sleep=fc.sleep):
        n += 1
        if n == 3:
            fc.now += 1.0  # the consumer stalls for a second: the rest is already due
    assert n == 10
    assert len(fc.sleeps) == 3  # only the slices before the stall waited
    assert all(s > 0 for s in fc.sleeps)


def test_paced_empty_packets_are_paced_too():
    empty = np.empty(0, EVENT_DTYPE)
    packets = [EventPacket(empty, T0, T0 + 20_000, 0.0, (W, H))]
    fc = FakeClock()
    out = list(paced(packets, speed=1.0, slice_us=5_000, clock=fc.clock, sleep=fc.sleep))
    assert [(p.t_start_us, p.t_end_us) for p in out] == [(T0 + 5_000 * k, T0 + 5_000 * (k + 1)) for k in range(4)]
    assert sum(fc.sleeps) == pytest.approx(0.02)


def test_paced_speed_zero_passes_through():
    ev = random_events(300, seed=11)
    packets = packets_from(ev, [T0, T0 + 400_000, T0 + 1_000_000])
    fc = FakeClock()
    out = list(paced(packets, speed=0, slice_us=5_000, clock=fc.clock, sleep=fc.sleep))
    assert out == packets and all(a is b for a, b in zip(out, packets))
    assert fc.sleeps == [] and fc.calls == 0


def test_paced_negative_speed_raises():
    with pytest.raises(ValueError, match=r"speed must be >= 0 \(got -1.0\)"):
        list(paced([], speed=-1.0))


def test_paced_rled_source_end_to_end(recording):
    path, ev, _ = recording
    fc = FakeClock()
    with RledSource(path, chunk_events=700) as src:
        out = list(paced(src, speed=4.0, slice_us=20_000, clock=fc.clock, sleep=fc.sleep))
    assert all(p.t_end_us - p.t_start_us <= 20_000 for p in out)
    assert all(a.t_end_us == b.t_start_us for a, b in zip(out, out[1:]))
    assert_events_equal(concat(out), ev)
    span_s = (int(ev["t"][-1]) + 1 - int(ev["t"][0])) / 1e6
    assert sum(fc.sleeps) == pytest.approx(span_s / 4.0, rel=1e-9)


@pytest.mark.parametrize("where", ["inside", "between", "leading"])
def test_paced_does_not_wait_out_a_time_jump(where):
    # GIVEN events with a 2-hour hole (a corrupt high timestamp bit moved the rest of the file ahead)
    hole = 7_200_000_000
    a = random_events(400, seed=12, span_us=100_000)
    b = random_events(400, seed=13, t0=T0 + 100_000 + hole, span_us=100_000)
    ev = np.concatenate([a, b])
    end = T0 + 200_000 + hole
    bounds = {"inside": [T0, end], "between": [T0, T0 + 100_000, end],
              "leading": [T0, T0 + 100_000, T0 + 100_000 + hole - 1, end]}[where]
    packets = packets_from(ev, bounds)
    fc = FakeClock()
    out = list(paced(packets, speed=1.0, slice_us=5_000, clock=fc.clock, sleep=fc.sleep))
    # THEN the replay takes the 200 ms of events, not two hours, and still tiles time and keeps every event
    assert sum(fc.sleeps) == pytest.approx(0.2, abs=0.011)
    assert out[0].t_start_us == T0 and out[-1].t_end_us == end
    assert all(x.t_end_us == y.t_start_us for x, y in zip(out, out[1:]))
    assert_events_equal(concat(out), ev)
    assert len(out) < 100  # the hole is one packet, not 1.4 million 5 ms slices
    silent = [p for p in out if p.t_end_us - p.t_start_us > 10_000_000]
    assert len(silent) == 1 and len(silent[0]) == 0
