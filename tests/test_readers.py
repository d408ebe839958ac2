"""The readers of the formats users already have: rpg_e2vid / ECD text, CSV / NumPy tables, ROS 1 / ROS 2 bags.

Every file here is written by the format's own writer (``rosbags`` for bags, NumPy for .npy / .npz) or by its
documented layout (text, CSV, the ECD folder), then read back through ``open_source`` and the CLI.
"""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from livenight.checks import InputWarning
from livenight.cli import main
from livenight.drivers import open_source
from livenight.errors import SourceError
from livenight.events import EVENT_DTYPE, concat_events

SIZE = (64, 48)


@pytest.fixture
def events():
    """1,500 events over 0.4 s at 64x48, µs timestamps starting at 1 s (so seconds have 6 decimals)."""
    rng = np.random.default_rng(5)
    n = 1500
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = 1_000_000 + np.sort(rng.integers(0, 400_000, n))
    ev["x"] = rng.integers(0, SIZE[0], n)
    ev["y"] = rng.integers(0, SIZE[1], n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def read_all(path, **options) -> tuple[np.ndarray, object]:
    with open_source(path, **options) as src:
        packets = list(src)
    for a, b in zip(packets, packets[1:]):  # packets tile time
        assert a.t_end_us == b.t_start_us
    return concat_events([p.events for p in packets]), src


def write_txt(path, ev, header=True, extra_lines=()):
    with open(path, "w") as f:
        if header:
            f.write(f"{SIZE[0]} {SIZE[1]}\n")
        for t, x, y, p in ev.tolist():
            f.write(f"{t / 1e6:.6f} {x} {y} {p}\n")
        for line in extra_lines:
            f.write(line)


# ---------------------------------------------------------------------------- rpg_e2vid text, ECD
def test_txt_with_size_line_reads_every_event(tmp_path, events):
    write_txt(tmp_path / "ev.txt", events)
    got, src = read_all(tmp_path / "ev.txt", chunk_events=400)
    assert src.sensor_size == SIZE
    np.testing.assert_array_equal(got, events)


def test_zip_holds_the_same_events(tmp_path, events):
    write_txt(tmp_path / "ev.txt", events)
    with zipfile.ZipFile(tmp_path / "ev.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(tmp_path / "ev.txt", "events.txt")
    got, src = read_all(tmp_path / "ev.zip")
    assert src.sensor_size == SIZE
    np.testing.assert_array_equal(got, events)


def test_ecd_layout_gives_reference_frames(tmp_path, events):
    # GIVEN the ECD layout: events.txt without a size line, images.txt ("t path", seconds) and images/*.png
    write_txt(tmp_path / "events.txt", events, header=False)
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (SIZE[1], SIZE[0]), dtype=np.uint8) for _ in range(4)]
    with open(tmp_path / "images.txt", "w") as f:
        for i, img in enumerate(images):
            Image.fromarray(img).save(tmp_path / "images" / f"frame_{i:08d}.png")
            f.write(f"{1.0 + 0.1 * i:.6f} images/frame_{i:08d}.png\n")
    # WHEN it is opened THEN the sensor size comes from the images and they are the frames
    got, src = read_all(tmp_path / "events.txt")
    assert src.sensor_size == SIZE
    np.testing.assert_array_equal(got, events)
    assert src.frames.t_us.tolist() == [1_000_000, 1_100_000, 1_200_000, 1_300_000]
    np.testing.assert_array_equal(src.frames[2], images[2])


def test_ecd_layout_evaluates_from_the_cli(tmp_path, events, capsys):
    write_txt(tmp_path / "events.txt", events, header=False)
    (tmp_path / "images").mkdir()
    with open(tmp_path / "images.txt", "w") as f:
        for i in range(5):
            Image.fromarray(np.full((SIZE[1], SIZE[0]), 40 * i, np.uint8)).save(tmp_path / "images" / f"{i}.png")
            f.write(f"{1.0 + 0.08 * i:.6f} images/{i}.png\n")
    rc = main(["eval", str(tmp_path / "events.txt"), "--engine", "complementary", "--no-gui"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "events.txt: " in out and "SSIM on active pixels" in out


def test_txt_without_size_infers_it_with_a_warning(tmp_path, events):
    write_txt(tmp_path / "ev.txt", events, header=False)
    with pytest.warns(UserWarning, match=r"inferred \d+x\d+ from the largest event coordinates"):
        _, src = read_all(tmp_path / "ev.txt")
    assert src.sensor_size == (int(events["x"].max()) + 1, int(events["y"].max()) + 1)


def test_txt_few_malformed_lines_are_counted_and_the_rest_kept(tmp_path, events):
    write_txt(tmp_path / "ev.txt", events, extra_lines=["1.5 not a line\n", "1.6 3 4\n"])
    with pytest.warns(InputWarning, match=r"skipped 2 malformed rows \(first at line 1502\)") as w:
        got, _ = read_all(tmp_path / "ev.txt")
    assert len(w) == 1
    np.testing.assert_array_equal(got, events)


def test_txt_events_outside_the_sensor_are_dropped_and_counted(tmp_path, events):
    write_txt(tmp_path / "ev.txt", events, extra_lines=["1.5 64 3 1\n", "1.5 3 48 0\n"])
    with pytest.warns(InputWarning, match=r"dropped 2 events outside the 64x48 sensor \(first at line 1502\)"):
        got, _ = read_all(tmp_path / "ev.txt")
    assert got.shape[0] == events.shape[0]


def test_txt_garbage_is_one_error(tmp_path):
    with open(tmp_path / "g.txt", "w") as f:
        f.write("64 48\n")
        for i in range(100):
            f.write(f"line {i} is not an event at all\n")
    with pytest.raises(SourceError, match=r"g\.txt: the payload does not decode as rpg_e2vid text"):
        read_all(tmp_path / "g.txt")


def test_txt_wrong_first_line_says_what_was_expected(tmp_path):
    (tmp_path / "w.txt").write_text("hello there world\n")
    with pytest.raises(SourceError, match="expected 'width height' or an event 't x y p'"):
        open_source(tmp_path / "w.txt")


# ---------------------------------------------------------------------------- CSV, NumPy
def test_csv_named_columns_any_order_with_unit_suffix(tmp_path, events):
    with open(tmp_path / "ev.csv", "w") as f:
        f.write("x,y,polarity,timestamp_us\n")
        for t, x, y, p in events.tolist():
            f.write(f"{x},{y},{p},{t}\n")
    got, src = read_all(tmp_path / "ev.csv", sensor_size=SIZE)
    assert src.columns == "x,y,p,t"
    np.testing.assert_array_equal(got, events)


def test_csv_seconds_and_signed_polarity(tmp_path, events):
    with open(tmp_path / "ev.csv", "w") as f:
        f.write("t,x,y,p\n")
        for t, x, y, p in events.tolist():
            f.write(f"{t / 1e6:.6f},{x},{y},{2 * p - 1}\n")
    got, _ = read_all(tmp_path / "ev.csv", sensor_size=SIZE)
    np.testing.assert_array_equal(got, events)


def test_csv_positional_metavision_layout_is_recognised(tmp_path, events):
    with open(tmp_path / "ev.csv", "w") as f:  # metavision_file_to_csv: x,y,p,t without a header
        for t, x, y, p in events.tolist():
            f.write(f"{x},{y},{p},{t}\n")
    got, src = read_all(tmp_path / "ev.csv", sensor_size=SIZE)
    assert src.columns == "x,y,p,t"
    np.testing.assert_array_equal(got, events)


def test_unmappable_columns_error_lists_what_was_found(tmp_path):
    (tmp_path / "c.csv").write_text("a,b,timestamp\n1,2,3\n")
    with pytest.raises(SourceError) as e:
        open_source(tmp_path / "c.csv")
    msg = str(e.value)
    assert "\n" not in msg
    assert "no column for x, y, p (found columns 'a', 'b', 'timestamp')" in msg and "columns='t,x,y,p'" in msg


def test_explicit_columns_override_and_skip(tmp_path, events):
    with open(tmp_path / "ev.csv", "w") as f:
        f.write("a,b,c,d,e\n")
        for t, x, y, p in events.tolist():
            f.write(f"{t},7,{x},{y},{p}\n")
    got, _ = read_all(tmp_path / "ev.csv", columns="t,-,x,y,p", sensor_size=SIZE)
    np.testing.assert_array_equal(got, events)


def test_npy_structured_and_plain_arrays(tmp_path, events):
    structured = np.zeros(events.shape[0], [("timestamp", "<i8"), ("x", "<i2"), ("y", "<i2"), ("polarity", "i1")])
    structured["timestamp"], structured["x"], structured["y"] = events["t"], events["x"], events["y"]
    structured["polarity"] = 2 * events["p"].astype(np.int8) - 1
    np.save(tmp_path / "s.npy", structured)
    np.save(tmp_path / "a.npy", np.stack([events["t"], events["x"], events["y"], events["p"]], axis=1))
    for name in ("s.npy", "a.npy"):
        got, _ = read_all(tmp_path / name, sensor_size=SIZE, chunk_events=512)
        np.testing.assert_array_equal(got, events)


def test_npz_columns_and_sensor_size(tmp_path, events):
    np.savez(tmp_path / "e.npz", x=events["x"], y=events["y"], t=events["t"], p=events["p"].astype(bool),
             sensor_size=np.array(SIZE))
    got, src = read_all(tmp_path / "e.npz")
    assert src.sensor_size == SIZE
    np.testing.assert_array_equal(got, events)


def test_nan_rows_are_counted(tmp_path, events):
    table = np.stack([events["t"] / 1e6, events["x"], events["y"], events["p"]], axis=1).astype(np.float64)
    table[[10, 20], 1] = np.nan
    np.save(tmp_path / "n.npy", table)
    with pytest.warns(InputWarning, match="2 non-finite values"):
        got, _ = read_all(tmp_path / "n.npy", sensor_size=SIZE)
    np.testing.assert_array_equal(got, np.delete(events, [10, 20]))


# ---------------------------------------------------------------------------- ROS bags
def _time(store, t_us):
    return store.types["builtin_interfaces/msg/Time"](sec=int(t_us) // 1_000_000, nanosec=int(t_us) % 1_000_000 * 1000)


def _image(store, t_us, img, ros1):
    T = store.types
    hdr = dict(stamp=_time(store, t_us), frame_id="cam")
    header = T["std_msgs/msg/Header"](seq=0, **hdr) if ros1 else T["std_msgs/msg/Header"](**hdr)
    return T["sensor_msgs/msg/Image"](header=header, height=img.shape[0], width=img.shape[1], encoding="mono8",
                                      is_bigendian=0, step=img.shape[1], data=img.ravel())


def write_ros1(path, ev, images, topics=("/dvs/events",)):
    """A ROS 1 bag with dvs_msgs/EventArray topic(s) (5 messages each) and /dvs/image_raw."""
    pytest.importorskip("rosbags")
    from rosbags.rosbag1 import Writer

    from livenight.drivers.rosbag import make_typestore

    store = make_typestore(False)
    T = store.types
    Ev, Arr = T["dvs_msgs/msg/Event"], T["dvs_msgs/msg/EventArray"]
    with Writer(path) as w:
        conns = [w.add_connection(t, Arr.__msgtype__, typestore=store) for t in topics]
        ci = w.add_connection("/dvs/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for c in conns:
            for k, part in enumerate(np.array_split(ev, 5)):
                msg = Arr(header=T["std_msgs/msg/Header"](seq=k, stamp=_time(store, part["t"][0]), frame_id="dvs"),
                          height=SIZE[1], width=SIZE[0],
                          events=[Ev(x=x, y=y, ts=_time(store, t), polarity=bool(p)) for t, x, y, p in part.tolist()])
                w.write(c, int(part["t"][-1]) * 1000, store.serialize_ros1(msg, Arr.__msgtype__))
        for t, img in images:
            w.write(ci, t * 1000, store.serialize_ros1(_image(store, t, img, True), "sensor_msgs/msg/Image"))


def write_ros2(path, ev, images):
    """A ROS 2 MCAP bag with an event_camera_msgs/EventPacket topic (EVT 3.0 payloads) and an image topic."""
    pytest.importorskip("rosbags")
    from rosbags.rosbag2 import StoragePlugin, Writer

    from livenight.drivers.prophesee_raw import encode_events
    from livenight.drivers.rosbag import make_typestore

    store = make_typestore(True)
    T = store.types
    Pk = T["event_camera_msgs/msg/EventPacket"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        ce = w.add_connection("/event_camera/events", Pk.__msgtype__, typestore=store)
        ci = w.add_connection("/event_camera/image", "sensor_msgs/msg/Image", typestore=store)
        for k, part in enumerate(np.array_split(ev, 5)):
            msg = Pk(header=T["std_msgs/msg/Header"](stamp=_time(store, part["t"][0]), frame_id="cam"),
                     height=SIZE[1], width=SIZE[0], seq=k, time_base=0, encoding="evt3", is_bigendian=False,
                     events=np.frombuffer(encode_events(part, "EVT3"), np.uint8))
            w.write(ce, int(part["t"][-1]) * 1000, store.serialize_cdr(msg, Pk.__msgtype__))
        for t, img in images:
            w.write(ci, t * 1000, store.serialize_cdr(_image(store, t, img, False), "sensor_msgs/msg/Image"))


@pytest.fixture
def images():
    rng = np.random.default_rng(2)
    return [(1_000_000 + 100_000 * i, rng.integers(0, 256, (SIZE[1], SIZE[0]), dtype=np.uint8)) for i in range(4)]


def test_ros1_bag_events_and_frames(tmp_path, events, images):
    write_ros1(tmp_path / "a.bag", events, images)
    got, src = read_all(tmp_path / "a.bag")
    assert (src.topic, src.image_topic, src.sensor_size) == ("/dvs/events", "/dvs/image_raw", SIZE)
    np.testing.assert_array_equal(got, events)
    assert src.frames.t_us.tolist() == [t for t, _ in images]
    with open_source(tmp_path / "a.bag") as src:  # images are read on demand, from the open bag
        np.testing.assert_array_equal(src.frames[3], images[3][1])


@pytest.mark.parametrize("opened", ["folder", "metadata.yaml", "mcap"])
def test_ros2_mcap_event_packets_and_frames(tmp_path, events, images, opened):
    write_ros2(tmp_path / "b", events, images)
    path = {"folder": tmp_path / "b", "metadata.yaml": tmp_path / "b" / "metadata.yaml",
            "mcap": next((tmp_path / "b").glob("*.mcap"))}[opened]
    got, src = read_all(path)
    assert src.topic == "/event_camera/events" and src.sensor_size == SIZE
    np.testing.assert_array_equal(got, events)  # the first packet's stamp equals its first event: no shift
    with open_source(path) as src:
        np.testing.assert_array_equal(src.frames[1], images[1][1])


def test_several_event_topics_warn_and_topic_chooses(tmp_path, events, images, capsys):
    write_ros1(tmp_path / "two.bag", events, images, topics=("/cam0/events", "/cam1/events"))
    with pytest.warns(UserWarning, match=r"2 event topics \(/cam0/events, /cam1/events\); reading /cam0/events"):
        open_source(tmp_path / "two.bag").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_source(tmp_path / "two.bag", topic="/cam1/events") as src:
            assert src.topic == "/cam1/events"
    rc = main(["info", str(tmp_path / "two.bag"), "--topic", "/cam1/events"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "topic          /cam1/events  dvs_msgs/msg/EventArray  5 messages (read)" in out
    assert "topic          /dvs/image_raw  sensor_msgs/msg/Image  4 messages (frames)" in out
    assert f"events         {events.shape[0]} over" in out


def test_unknown_topic_lists_the_topics(tmp_path, events, images, capsys):
    write_ros1(tmp_path / "a.bag", events, images)
    rc = main(["info", str(tmp_path / "a.bag"), "--topic", "/nope"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert "no topic '/nope' (topics: /dvs/events (dvs_msgs/msg/EventArray), /dvs/image_raw" in err


def test_bag_replays_from_the_cli_and_the_api(tmp_path, events, images):
    import livenight

    write_ros1(tmp_path / "a.bag", events, images)
    out = tmp_path / "out"
    assert main(["--replay", str(tmp_path / "a.bag"), "--engine", "complementary", "--no-gui", "--out", str(out),
                 "--save-gt"]) == 0
    span = int(events["t"][-1]) + 1 - int(events["t"][0])
    assert len(list(out.glob("frame_*.png"))) == (span - 40_000) // 40_000 + 1  # contiguous 40 ms windows
    assert len(list((out / "gt").glob("*.png"))) >= 1
    frames = list(livenight.reconstruct(tmp_path / "a.bag", backend="complementary", max_frames=3))
    assert len(frames) == 3 and frames[0].image.shape == (SIZE[1], SIZE[0])
    assert frames[2].reference is not None  # the image topic is the reference
    assert main(["eval", str(tmp_path / "a.bag"), "--engine", "complementary", "--topic", "/dvs/events"]) == 0


def test_ros2_sqlite_bag_with_dvs_event_arrays(tmp_path, events):
    pytest.importorskip("rosbags")
    from rosbags.rosbag2 import Writer

    from livenight.drivers.rosbag import make_typestore

    store = make_typestore(True)
    T = store.types
    Ev, Arr = T["dvs_msgs/msg/Event"], T["dvs_msgs/msg/EventArray"]
    with Writer(tmp_path / "c", version=8) as w:  # the sqlite3 storage
        c = w.add_connection("/dvs/events", Arr.__msgtype__, typestore=store)
        for part in np.array_split(events, 3):
            msg = Arr(header=T["std_msgs/msg/Header"](stamp=_time(store, part["t"][0]), frame_id="dvs"),
                      height=SIZE[1], width=SIZE[0],
                      events=[Ev(x=x, y=y, ts=_time(store, t), polarity=bool(p)) for t, x, y, p in part.tolist()])
            w.write(c, int(part["t"][-1]) * 1000, store.serialize_cdr(msg, Arr.__msgtype__))
    got, src = read_all(next((tmp_path / "c").glob("*.db3")))
    assert src.frames is None and src.sensor_size == SIZE
    np.testing.assert_array_equal(got, events)


@pytest.mark.parametrize("ext, says", [("txt", "not a text file"), ("zip", "not a zip file"),
                                       ("csv", "not a text file"), ("npy", "not a NumPy .npy file"),
                                       ("npz", "not a NumPy .npz file"), ("bag", "not a readable ROS 1 bag"),
                                       ("mcap", "not a readable ROS 2 bag")])
def test_random_bytes_are_one_line_errors(tmp_path, capsys, ext, says):
    if ext in ("bag", "mcap"):
        pytest.importorskip("rosbags")
    path = tmp_path / f"junk.{ext}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    rc = main(["info", str(path)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"livenight: error: {path}: {says}")


def test_truncated_npy_is_one_line_error(tmp_path, events, capsys):
    np.save(tmp_path / "e.npy", np.stack([events["t"], events["x"], events["y"], events["p"]], axis=1))
    data = (tmp_path / "e.npy").read_bytes()
    (tmp_path / "e.npy").write_bytes(data[: len(data) // 2])
    rc = main(["info", str(tmp_path / "e.npy"), "--sensor-size", "64x48"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and "e.npy: not a readable NumPy .npy file" in err[0]
