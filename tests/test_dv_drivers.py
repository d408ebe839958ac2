"""dv-processing drivers: aedat4 replay (the shared DAVIS346 file, round trips, bad input), the DV network
stream on loopback against a real ``dv.io.NetworkWriter`` in a subprocess, live DAVIS capture with mock cameras,
and the Prophesee adapter (missing dependency, mock slicer).

No camera hardware exists here: every ``*_mock_camera*`` / ``*_mock_slicer*`` test drives the real conversion,
filter and timing code with a test double that hands out real ``dv.EventStore`` batches. The "no camera" and
"missing SDK" tests are real. Every loop that waits on something has a deadline, so nothing here can hang.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from livenight._optional import has
from livenight.drivers import open_source
from livenight.drivers._dv import events_to_store
from livenight.drivers._live import LatestFrames
from livenight.drivers.aedat4 import Aedat4Source
from livenight.drivers.davis import DavisSource, hot_pixel_mask, list_devices, parse_uri
from livenight.drivers.network import NetworkSource, NetworkSourceError
from livenight.drivers.prophesee import PropheseeSource, cd_to_events
from livenight.errors import DeviceNotFoundError, MissingDependencyError, SourceError, SourceNotFoundError
from livenight.events import EVENT_DTYPE, make_events

# the driver modules import dv-processing only when a source is opened, so this module imports without it; the
# tests that need it are marked (install the 'davis' extra to run them)
dv = importlib.import_module("dv_processing") if has("dv_processing") else None
needs_dv = pytest.mark.skipif(dv is None, reason="needs dv-processing: pip install 'livenight[davis]'")

#: a syntactically valid AEDAT 4.0 header (empty IOHeader flatbuffer) and nothing else
MAGIC_HEADER_ONLY = b"#!AER-DAT4.0\r\n" + struct.pack("<i", 12) + struct.pack("<IHHi", 8, 4, 4, 4)
W, H = 346, 260


# ---------------------------------------------------------------------------- helpers
def concat(packets) -> np.ndarray:
    parts = [p.events for p in packets]
    return np.concatenate(parts) if parts else np.empty(0, dtype=EVENT_DTYPE)


def assert_tiles(packets) -> None:
    """Packets tile time, events lie inside their packet and are sorted, equal-timestamp runs are never split."""
    for a, b in zip(packets, packets[1:]):
        assert a.t_end_us == b.t_start_us
    for p in packets:
        t = p.events["t"]
        assert p.t_start_us <= p.t_end_us
        if t.size:
            assert np.all(np.diff(t) >= 0)
            assert p.t_start_us <= t[0] and t[-1] < p.t_end_us


def store_events(store) -> np.ndarray:
    raw = store.numpy()
    return make_events(raw["timestamp"], raw["x"], raw["y"], raw["polarity"])


def runs_events(n: int, seed: int, t0: int = 1_000_000, size=(W, H)) -> np.ndarray:
    """Sorted events with many equal-timestamp runs (about 4 events per timestamp)."""
    rng = np.random.default_rng(seed)
    t = t0 + np.sort(rng.integers(0, n // 4 * 10, n))
    return make_events(t, rng.integers(0, size[0], n), rng.integers(0, size[1], n), rng.integers(0, 2, n))


def write_aedat4(path: Path, events: np.ndarray, frames=(), size=(W, H), name="DAVIS346_00000042",
                 config: str = "davis") -> Path:
    """An aedat4 file written by dv-processing itself. ``frames``: (begin_us, exposure_us, image) tuples."""
    W_ = dv.io.MonoCameraWriter
    cfg = {"davis": W_.DAVISConfig, "events": W_.EventOnlyConfig, "frames": W_.FrameOnlyConfig}[config]
    writer = W_(str(path), cfg(name, size))
    for begin, exposure, img in frames:
        writer.writeFrame(dv.Frame(int(begin), int(exposure), 0, 0, img, dv.FrameSource.SENSOR))
    if config != "frames":
        writer.writeEvents(events_to_store(dv, events))
    del writer  # finalises the file (writes the packet index)
    return path


def field_offset_of_table(path: Path) -> int:
    """Byte position of the header's data-table field, found independently of the driver."""
    data = path.read_bytes()
    n = struct.unpack_from("<i", data, 14)[0]
    buf = data[18:18 + n]
    root = struct.unpack_from("<I", buf, 0)[0]
    vt = root - struct.unpack_from("<i", buf, root)[0]
    return 18 + root + struct.unpack_from("<H", buf, vt + 6)[0]


# ---------------------------------------------------------------------------- aedat4: the shared DAVIS346 file
def test_aedat4_replays_shared_davis346_recording(shared_data):
    with Aedat4Source(shared_data("davis346.aedat4")) as src:
        assert src.sensor_size == (346, 260)
        assert src.is_live is False
        assert src.name == "davis346.aedat4"
        assert src.camera_name == "DAVIS346_00000002"
        packets = list(src)
        ev = concat(packets)
        assert ev.dtype == EVENT_DTYPE
        assert ev.shape[0] == 78_830
        assert int(ev["p"].sum()) == 41_257
        assert int(ev["t"][0]) == 1589163147368868 and int(ev["t"][-1]) == 1589163149728813
        assert int(ev["x"].max()) == 345 and int(ev["y"].max()) == 259
        assert_tiles(packets)
        assert packets[0].t_start_us == 1589163147368868
        assert all(p.sensor_size == (346, 260) for p in packets)
        golden = {"t": "fbd3aef95746e843", "x": "a07bd1b2cfc89047", "y": "7f10c9ebf65f6e23", "p": "b61c63bca998d555"}
        for k, h in golden.items():
            assert hashlib.sha256(np.ascontiguousarray(ev[k]).tobytes()).hexdigest()[:16] == h, k

        fr = src.frames
        assert len(fr) == 59
        assert fr[0].shape == (260, 346) and fr[0].dtype == np.uint8
        # exposure-end convention: dv's Frame.timestamp is the exposure begin, t_us = begin + exposure
        assert int(fr.t_begin_us[0]) == 1589163147364965
        assert np.all(fr.exposure_us == 500)
        assert int(fr.t_us[0]) == 1589163147365465
        assert int(fr.t_mid_us[0]) == 1589163147365215 and int(fr.t_mid_us[-1]) == 1589163149685216
        assert np.all(np.abs(np.diff(fr.t_us) - 40_000) <= 1)  # 25 fps (one step is 40,001 µs)
        assert hashlib.sha256(np.stack([fr[i] for i in range(59)]).tobytes()).hexdigest()[:16] == "426322131f3866cb"

        idx = src.event_indices
        mid = fr.t_mid_us
        expect = np.stack([np.searchsorted(ev["t"], mid - 10_000), np.searchsorted(ev["t"], mid + 10_000)], axis=1)
        assert idx.shape == (59, 2) and idx.dtype == np.int64
        np.testing.assert_array_equal(idx, expect)


def test_aedat4_shared_file_lazy_frames_and_small_chunks_match(shared_data):
    path = shared_data("davis346.aedat4")
    with Aedat4Source(path) as a, Aedat4Source(path, chunk_events=100, preload_frames_bytes=0) as b:
        assert a.frames.preloaded and not b.frames.preloaded
        for i in (0, 17, 58, -1):
            np.testing.assert_array_equal(a.frames[i], b.frames[i])
        pa, pb = list(a), list(b)
        assert len(pb) > len(pa)
        assert_tiles(pb)
        np.testing.assert_array_equal(concat(pa), concat(pb))


def test_aedat4_opens_through_the_registry_and_is_single_use(shared_data):
    with open_source(str(shared_data("davis346.aedat4"))) as src:
        assert isinstance(src, Aedat4Source)
        n = sum(len(p) for p in src)
        assert n == 78_830
        with pytest.raises(RuntimeError, match="only once"):
            iter(src)


# ---------------------------------------------------------------------------- aedat4: round trips
@needs_dv
def test_aedat4_round_trip_events_and_frames_exactly(tmp_path):
    # GIVEN events with many equal-timestamp runs and frames with known exposures, written by dv itself
    ev = runs_events(20_000, seed=1)
    rng = np.random.default_rng(2)
    frames = [(1_000_000 + k * 10_000, 300 + 100 * k, rng.integers(0, 256, (H, W), dtype=np.uint8)) for k in range(5)]
    path = write_aedat4(tmp_path / "rt.aedat4", ev, frames)
    # WHEN it is replayed in small chunks
    with Aedat4Source(path, chunk_events=777) as src:
        packets = list(src)
        # THEN everything comes back exactly
        assert src.sensor_size == (W, H)
        assert src.camera_name == "DAVIS346_00000042"
        np.testing.assert_array_equal(concat(packets), ev)
        assert_tiles(packets)
        assert len(packets) > 10
        fr = src.frames
        assert len(fr) == 5
        for k, (begin, exposure, img) in enumerate(frames):
            assert int(fr.t_begin_us[k]) == begin and int(fr.exposure_us[k]) == exposure
            assert int(fr.t_us[k]) == begin + exposure
            np.testing.assert_array_equal(fr[k], img)
        mid = fr.t_begin_us + fr.exposure_us // 2
        expect = np.stack([np.searchsorted(ev["t"], mid - 10_000), np.searchsorted(ev["t"], mid + 10_000)], axis=1)
        np.testing.assert_array_equal(src.event_indices, expect)


@needs_dv
def test_aedat4_round_trip_other_camera_resolution_without_frames(tmp_path):
    ev = runs_events(5_000, seed=3, size=(640, 480))
    path = write_aedat4(tmp_path / "dvx.aedat4", ev, size=(640, 480), name="DVXplorer_DXA00093", config="events")
    with Aedat4Source(path) as src:
        assert src.sensor_size == (640, 480)
        assert src.frames is None and src.event_indices is None
        np.testing.assert_array_equal(concat(list(src)), ev)


# ---------------------------------------------------------------------------- aedat4: bad input
def test_aedat4_missing_file(tmp_path):
    with pytest.raises(SourceNotFoundError, match="no such file"):
        Aedat4Source(tmp_path / "nope.aedat4")
    with pytest.raises(FileNotFoundError):
        open_source(str(tmp_path / "nope.aedat4"))


@pytest.mark.parametrize("content, message", [
    (b"hello, not a recording\n", "not an aedat4 file"),
    (b"\x89HDF\r\n\x1a\n" + bytes(100), "not an aedat4 file"),
    (b"#!AER-DAT3.1\r\n# some header\r\n", "AEDAT 3.1 file"),
    (b"", "not an aedat4 file"),
    (b"#!AER-DAT4.0\r\n\x10\x00", "truncated aedat4 file"),
])
def test_aedat4_not_an_aedat4_file(tmp_path, content, message):
    path = tmp_path / "bad.aedat4"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        Aedat4Source(path)


@needs_dv
def test_aedat4_without_event_stream_names_the_streams(tmp_path):
    img = np.zeros((H, W), dtype=np.uint8)
    path = write_aedat4(tmp_path / "frames_only.aedat4", None, [(1_000, 500, img)], config="frames")
    with pytest.raises(SourceError, match=r"no event stream .*streams found: frames"):
        Aedat4Source(path)


def test_dv_missing_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "dv_processing", None)  # makes `import dv_processing` fail
    for make in (lambda: DavisSource.from_uri("davis346"), lambda: NetworkSource.from_uri("tcp://127.0.0.1:7777")):
        with pytest.raises(MissingDependencyError, match=r"pip install 'livenight\[davis\]'"):
            make()


def test_aedat_missing_gives_the_install_hint(tmp_path, monkeypatch):
    path = tmp_path / "x.aedat4"
    path.write_bytes(MAGIC_HEADER_ONLY)
    monkeypatch.setitem(sys.modules, "aedat", None)
    with pytest.raises(MissingDependencyError, match=r"pip install aedat"):
        Aedat4Source(path)


def test_aedat4_directory_is_rejected(tmp_path):
    d = tmp_path / "dir.aedat4"
    d.mkdir()
    with pytest.raises(SourceError, match="directory"):
        Aedat4Source(d)


@needs_dv
@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_aedat4_truncated_file_yields_what_decodes_then_fails(tmp_path, keep):
    # GIVEN a valid file cut short (mid-packets, or only inside the trailing packet index)
    ev = runs_events(40_000, seed=5)
    full = write_aedat4(tmp_path / "full.aedat4", ev)
    data = full.read_bytes()
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes(data[: int(len(data) * keep)])
    # WHEN it is replayed
    src = Aedat4Source(cut)
    packets = []
    with pytest.raises(SourceError, match="truncated aedat4 file") as info:
        for p in src:
            packets.append(p)
    src.close()
    # THEN a prefix of the events came out, exactly, and the message says how many
    got = concat(packets)
    assert 0 < got.shape[0] <= ev.shape[0]
    np.testing.assert_array_equal(got, ev[: got.shape[0]])
    assert f"replayed the {got.shape[0]} events" in str(info.value)
    assert_tiles(packets)
    assert full.read_bytes() == data, "the original file is never modified"


@needs_dv
def test_aedat4_header_field_offset_matches_independent_parse(tmp_path):
    from livenight.drivers._aedat4_reader import _header

    path = write_aedat4(tmp_path / "h.aedat4", runs_events(1_000, seed=6))
    pos, field = _header(path)
    assert field == field_offset_of_table(path)
    assert 0 < pos < path.stat().st_size


# ---------------------------------------------------------------------------- network: loopback, real writer
WRITER = r"""
import datetime, os, sys, time
import numpy as np
import dv_processing as dv
port, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
server = dv.io.NetworkWriter("127.0.0.1", port, dv.io.Stream.EventStream(0, "events", "DVXplorer_test", (640, 480)))
deadline = time.monotonic() + 20
while server.getClientCount() == 0:        # send nothing before the client is there
    if time.monotonic() > deadline:
        os._exit(3)
    time.sleep(0.005)
sent = []
for k in range(8):
    store = dv.data.generate.uniformEventsWithinTimeRange(1_000_000 + k * 50_000, datetime.timedelta(milliseconds=50),
                                                          (640, 480), 2000, k)
    sent.append(store.numpy())
    server.writeEvents(store)
    time.sleep(0.01)
np.save(out + ".part.npy", np.concatenate(sent))
os.replace(out + ".part.npy", out)
while server.getQueuedPacketCount() > 0 and time.monotonic() < deadline:
    time.sleep(0.005)
time.sleep(0.1)
if mode == "exit":
    os._exit(0)            # never destroy a NetworkWriter with a client attached (it hangs, formats.md 1.6)
time.sleep(60)
os._exit(0)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(uri: str, deadline: float, **options) -> NetworkSource:
    while True:
        try:
            return NetworkSource.from_uri(uri, **options)
        except NetworkSourceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@needs_dv
@pytest.mark.parametrize("mode", ["exit", "kill"])
def test_network_loopback_receives_everything_then_reports_the_disconnect(tmp_path, mode):
    port = free_port()
    sent_path = tmp_path / "sent.npy"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(port), str(sent_path), mode],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 25
    try:
        packets = []
        with connect(f"tcp://localhost:{port}", deadline, idle_timeout_s=0.02) as src:
            assert src.sensor_size == (640, 480) and src.is_live
            assert src.camera_name == "DVXplorer_test"
            with pytest.raises(SourceError, match="server disconnected") as info:
                for p in src:
                    packets.append(p)
                    assert time.monotonic() < deadline, "network test ran out of time"
                    if mode == "kill" and sent_path.exists() and sum(len(q) for q in packets) >= 16_000:
                        proc.kill()
        sent = np.load(sent_path)
        expect = make_events(sent["timestamp"], sent["x"], sent["y"], sent["polarity"])
        got = concat(packets)
        np.testing.assert_array_equal(got, expect)
        assert_tiles(packets)
        assert "16000 events" in str(info.value)
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes the pipe


@needs_dv
def test_network_events_sent_before_the_first_iteration_are_delivered(tmp_path):
    # GIVEN a server that sends everything right after the client connects, then goes away
    port = free_port()
    sent_path = tmp_path / "sent.npy"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(port), str(sent_path), "exit"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 25
    try:
        with connect(f"tcp://localhost:{port}", deadline, idle_timeout_s=0.02) as src:
            # WHEN iteration starts only after all of it was sent (a model loading for seconds)
            while not sent_path.exists() or proc.poll() is None:
                assert time.monotonic() < deadline, "the writer never finished"
                time.sleep(0.05)
            packets = []
            with pytest.raises(SourceError, match="server disconnected") as info:
                for p in src:
                    packets.append(p)
            # THEN every event arrives, in order, and the counts say so
            sent = np.load(sent_path)
            np.testing.assert_array_equal(concat(packets), make_events(sent["timestamp"], sent["x"], sent["y"],
                                                                       sent["polarity"]))
            assert src.received_events == src.delivered_events == 16_000 and src.dropped_events == 0
            assert "received 16000 events, delivered 16000" in str(info.value)
    finally:
        proc.kill()
        proc.communicate(timeout=10)


@needs_dv
def test_network_refused_port_is_a_one_line_connection_error():
    port = free_port()  # nothing listens there
    t = time.monotonic()
    with pytest.raises(NetworkSourceError) as info:
        NetworkSource.from_uri(f"tcp://127.0.0.1:{port}")
    assert time.monotonic() - t < 5
    msg = str(info.value)
    assert "\n" not in msg and "Connection refused" in msg and f"tcp://127.0.0.1:{port}" in msg
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, SourceError)


@pytest.mark.parametrize("uri", ["tcp://127.0.0.1", "tcp://:7777", "tcp://127.0.0.1:0", "tcp://h:99999",
                                 "udp://127.0.0.1:7777", "tcp://127.0.0.1:7777/x"])
def test_network_bad_uri(uri):
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        NetworkSource.from_uri(uri)


# ---------------------------------------------------------------------------- DAVIS: mock cameras
class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class MockCamera:
    """A scripted stand-in for a ``dv.io.camera`` object: ``script`` holds ``dv.EventStore`` batches, ``None``
    (nothing new) and ``"unplug"`` (``isRunning()`` turns False; later items are data still buffered)."""

    def __init__(self, script, name="DAVIS346_00000042", size=(W, H), frames=(), clock=None) -> None:
        self.script = list(script)
        self.name, self.size = name, size
        self.frames = list(frames)
        self.running = True
        self.clock = clock
        self.calls: dict[str, object] = {}

    def getCameraName(self):
        return self.name

    def getEventResolution(self):
        return self.size

    def isRunning(self):
        return self.running

    def setTimeInterval(self, td):
        self.calls["setTimeInterval"] = td

    def isFrameStreamAvailable(self):
        return bool(self.frames)

    def getFrameResolution(self):
        return self.size

    def getNextFrame(self):
        return self.frames.pop(0) if self.frames else None

    def getNextEventBatch(self):
        if self.clock is not None:
            self.clock.now += 0.001
        if not self.script:
            return None
        item = self.script.pop(0)
        if isinstance(item, str):
            self.running = False
            return None
        return item


class MockDavisHw(MockCamera):
    def setBackgroundActivityFilter(self, units):
        self.calls["ba"] = units

    def setRefractoryPeriodFilter(self, units):
        self.calls["refractory"] = units


def generated_stores(k: int, size=(W, H), n: int = 3000):
    return [dv.data.generate.uniformEventsWithinTimeRange(5_000_000 + i * 20_000, datetime.timedelta(milliseconds=20),
                                                          size, n, i) for i in range(k)]


def collect_until_error(src, limit: int = 100_000):
    packets = []
    with pytest.raises(SourceError) as info:
        for p in src:
            packets.append(p)
            assert len(packets) < limit, "the source never ended"
    return packets, info.value


@needs_dv
def test_davis_converts_real_event_stores_mock_camera():
    # GIVEN generated stores plus a push_back store whose equal-timestamp run continues in the next batch
    stores = generated_stores(4)
    last = int(stores[-1].getHighestTime())
    a, b = dv.EventStore(), dv.EventStore()
    for i in range(5):
        a.push_back(last + 10, 10 + i, 20, True)
    for i in range(3):
        b.push_back(last + 10, 30 + i, 40, False)
    b.push_back(last + 11, 345, 259, True)
    script = stores[:2] + [None] + stores[2:] + [a, b]
    clock = FakeClock()
    cam = MockCamera(script + ["unplug"], clock=clock)
    with DavisSource(camera=cam, clock=clock, sleep=clock.sleep, idle_timeout_s=10.0) as src:
        assert src.sensor_size == (W, H) and src.is_live and src.name == "DAVIS346_00000042"
        assert cam.calls["setTimeInterval"] == datetime.timedelta(microseconds=1000)
        packets, err = collect_until_error(src)
    expect = np.concatenate([store_events(s) for s in stores + [a, b]])
    np.testing.assert_array_equal(concat(packets), expect)
    assert_tiles(packets)
    assert "disconnected" in str(err) and "DAVIS346_00000042" in str(err)
    # the run at last+10 spans two batches but lands in one packet
    run_packets = {i for i, p in enumerate(packets) for t in p.events["t"] if t == last + 10}
    assert len(run_packets) == 1


@needs_dv
def test_davis_idle_yields_empty_packets_on_the_sensor_clock_mock_camera():
    clock = FakeClock()
    store = dv.EventStore()
    for i in range(4):
        store.push_back(2_000_000 + i, i, 0, True)
    store.push_back(2_000_003, 9, 9, False)  # a run of two at the last timestamp, held back until idle
    cam = MockCamera([None] * 60 + [store], clock=None)  # 60 polls of 1 ms: longer than the idle timeout
    src = DavisSource(camera=cam, clock=clock, sleep=clock.sleep, idle_timeout_s=0.05, idle_lag_us=20_000)
    it = iter(src)
    first = next(it)  # nothing yet: zero-length idle packet, the sensor clock is unknown
    assert len(first) == 0 and first.t_start_us == first.t_end_us == 0
    packets = [next(it)]
    t_arrival = clock.now
    while len(packets) < 6:
        packets.append(next(it))
    assert len(packets[0]) == 3 and packets[0].t_end_us == 2_000_003
    assert [len(p) for p in packets[1:]] == [2, 0, 0, 0, 0]  # the held-back run, then empty packets
    assert_tiles(packets)
    for p in packets[2:]:
        expected_end = 2_000_003 + int((p.host_time_s - t_arrival) * 1e6) - 20_000
        assert p.t_end_us == max(expected_end, packets[1].t_end_us)
        assert p.t_end_us > p.t_start_us or p.t_end_us == packets[1].t_end_us
    assert packets[-1].t_end_us > packets[2].t_end_us  # the clock keeps ticking
    assert src.late_events == 0
    src.close()


@needs_dv
def test_davis_disconnect_delivers_buffered_data_before_the_error_mock_camera():
    stores = generated_stores(3)
    cam = MockCamera([stores[0], "unplug", stores[1], stores[2]])
    clock = FakeClock()
    with DavisSource(camera=lambda: cam, clock=clock, sleep=clock.sleep) as src:
        packets, err = collect_until_error(src)
    np.testing.assert_array_equal(concat(packets), np.concatenate([store_events(s) for s in stores]))
    assert "camera DAVIS346_00000042 disconnected" in str(err) and "received 9000 events, delivered 9000" in str(err)


@needs_dv
@pytest.mark.parametrize("cap, delivered", [(50_000_000, 9000), (3000, 3000)])
def test_davis_events_before_the_first_iteration_are_buffered_mock_camera(cap, delivered):
    # GIVEN a camera that sends three batches right after it is opened
    stores = generated_stores(3)
    cam = MockCamera(list(stores))
    clock = FakeClock()
    with DavisSource(camera=cam, clock=clock, sleep=clock.sleep, buffer_from_connect=True,
                     buffer_events=cap) as src:
        # WHEN iteration starts only after the camera was drained (the engine took its time)
        deadline = time.monotonic() + 10
        while cam.script:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        packets = []
        for p in src:
            packets.append(p)
            if src.delivered_events >= delivered or len(packets) > 1000:
                break
        # THEN nothing is lost (or, past the buffer's cap, the oldest are dropped and counted)
        want = np.concatenate([store_events(s) for s in stores])[-delivered:]
        np.testing.assert_array_equal(concat(packets), want)
        assert src.received_events == 9000 and src.dropped_events == 9000 - delivered
        assert src.delivered_events == delivered


@needs_dv
def test_davis_hot_pixels_and_software_noise_filter_mock_camera():
    # GIVEN a hot pixel firing among sparse random events
    store = dv.EventStore()
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, W, 400), rng.integers(0, H, 400)
    for i in range(400):
        store.push_back(1_000_000 + 1000 * i, int(xs[i]), int(ys[i]), bool(i % 2))
        store.push_back(1_000_000 + 1000 * i + 1, 7, 5, True)  # the hot pixel
    clock = FakeClock()
    with DavisSource(camera=MockCamera([store, "unplug"]), hot_pixels=[(7, 5)], clock=clock, sleep=clock.sleep) as s:
        got = concat(collect_until_error(s)[0])
    assert got.shape[0] == 400 - int(np.sum((xs == 7) & (ys == 5)))
    assert not np.any((got["x"] == 7) & (got["y"] == 5))
    # isolated events have no neighbour within 2 ms: the background-activity filter removes nearly all
    store2 = dv.EventStore()
    for i in range(400):
        store2.push_back(1_000_000 + 1000 * i, int(xs[i]), int(ys[i]), True)
    with DavisSource(camera=MockCamera([store2, "unplug"]), noise_filter=True, clock=clock, sleep=clock.sleep) as s:
        kept = concat(collect_until_error(s)[0]).shape[0]
    assert kept < 40


def test_davis_hot_pixel_mask_shape_and_bounds():
    mask = hot_pixel_mask((W, H), [(0, 0), (345, 259)])
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert mask[0, 0] == 0 and mask[259, 345] == 0 and mask.sum() == W * H - 2
    with pytest.raises(ValueError, match="outside the 346x260 sensor"):
        hot_pixel_mask((W, H), [(346, 0)])


@needs_dv
def test_davis_hardware_filters_mock_camera():
    cam = MockDavisHw([])
    DavisSource(camera=cam, hw_ba_filter_us=2000, hw_refractory_us=1000).close()
    assert cam.calls["ba"] == 8 and cam.calls["refractory"] == 4  # 250 µs units
    with pytest.raises(ValueError, match="hw_ba_filter_us: camera DVXplorer_DXA00093 has no hardware filter"):
        DavisSource(camera=MockCamera([], name="DVXplorer_DXA00093", size=(640, 480)), hw_ba_filter_us=2000)


@needs_dv
def test_davis_aps_frames_keep_the_latest_mock_camera():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (H, W), dtype=np.uint8) for _ in range(5)]
    frames = [dv.Frame(1_000_000 + 40_000 * k, 500, 0, 0, imgs[k], dv.FrameSource.SENSOR) for k in range(5)]
    stores = generated_stores(1)
    clock = FakeClock()
    with DavisSource(camera=MockCamera([stores[0], "unplug"], frames=frames), keep_frames=3, clock=clock,
                     sleep=clock.sleep) as src:
        collect_until_error(src)
        fr = src.frames
        assert len(fr) == 5
        np.testing.assert_array_equal(fr.t_us, 1_000_500 + 40_000 * np.arange(5))  # exposure end
        assert fr[0] is None and fr[1] is None  # evicted
        for k in (2, 3, 4):
            np.testing.assert_array_equal(fr[k], imgs[k])
        assert src.event_indices is None


def test_latest_frames_indices_stay_stable():
    fr = LatestFrames(keep=2)
    for k in range(100):
        fr.add(np.full((2, 2), k, dtype=np.uint8), 10 * k)
    assert len(fr) == 100 and int(fr.t_us[-1]) == 990
    assert fr[98][0, 0] == 98 and fr[-1][0, 0] == 99 and fr[97] is None
    with pytest.raises(IndexError):
        fr[100]


@needs_dv
def test_davis_no_camera_lists_what_discover_found():
    # real: no camera is attached here, dv.io.camera.discover() returns []
    assert list_devices() == []
    for uri in ("davis346", "dvxplorer", "davis://", "davis://00000499"):
        with pytest.raises(DeviceNotFoundError, match=r"no DAVIS camera found.*\(found: none\)"):
            open_source(uri)
    with pytest.raises(FileNotFoundError):
        DavisSource.from_uri("davis://00000499")


@pytest.mark.parametrize("uri, parsed", [("davis346", ("davis346", None)), ("DVXplorer", ("dvxplorer", None)),
                                         ("davis://", ("davis://", None)), ("davis://00000499", ("davis://", "00000499"))])
def test_davis_uri(uri, parsed):
    assert parse_uri(uri) == parsed


# ---------------------------------------------------------------------------- Prophesee
CD = np.dtype({"names": ["x", "y", "p", "t"], "formats": ["<u2", "<u2", "<i2", "<i8"], "offsets": [0, 2, 4, 8],
               "itemsize": 16})


class MockSlice:
    def __init__(self, t_end: int, events: np.ndarray) -> None:
        self.t, self.events = t_end, events


def cd_events(ev: np.ndarray) -> np.ndarray:
    cd = np.zeros(ev.shape[0], dtype=CD)
    cd["x"], cd["y"], cd["p"], cd["t"] = ev["x"], ev["y"], ev["p"], ev["t"]
    return cd


def test_prophesee_missing_dependency_message():
    if has("metavision_sdk_stream") or has("neuromorphic_drivers"):
        pytest.skip("a Prophesee backend is installed here")
    for uri in ("evk4", "prophesee://", "prophesee://00050423"):
        with pytest.raises(MissingDependencyError) as info:
            open_source(uri)
        msg = str(info.value)
        assert "Metavision SDK" in msg and "not on PyPI" in msg and "pip install neuromorphic-drivers" in msg
        assert isinstance(info.value, ImportError)


def test_prophesee_converts_eventcd_mock_slicer():
    # GIVEN 10 ms slices of EventCD, one empty (a quiet slice)
    ev = runs_events(3_000, seed=9, t0=0, size=(1280, 720))
    ev = ev[ev["t"] < 30_000]
    bounds = [10_000, 20_000, 30_000, 40_000]
    slices, lo = [], 0
    for b in bounds:
        hi = int(np.searchsorted(ev["t"], b))
        slices.append(MockSlice(b, cd_events(ev[lo:hi])))
        lo = hi
    src = PropheseeSource(slicer=iter(slices), sensor_size=(1280, 720), serial="00050423")
    packets, err = collect_until_error(src)
    # THEN one packet per slice, [previous end, slice.t), events converted exactly
    assert [(p.t_start_us, p.t_end_us) for p in packets] == [(0, 10_000), (10_000, 20_000), (20_000, 30_000),
                                                             (30_000, 40_000)]
    assert len(packets[3]) == 0
    np.testing.assert_array_equal(concat(packets), ev)
    assert "stream ended" in str(err)
    assert src.is_live and src.sensor_size == (1280, 720)


@pytest.mark.parametrize("cap, delivered", [(50_000_000, None), (1, "last")])
def test_prophesee_slices_before_the_first_iteration_are_buffered_mock_slicer(cap, delivered):
    # GIVEN a camera whose slices are all handed out right after it is opened (the engine is still loading)
    ev = runs_events(3_000, seed=9, t0=0, size=(1280, 720))
    ev = ev[ev["t"] < 30_000]
    slices, lo = [], 0
    for b in (10_000, 20_000, 30_000):
        hi = int(np.searchsorted(ev["t"], b))
        slices.append(MockSlice(b, cd_events(ev[lo:hi])))
        lo = hi
    taken = []

    def stream():
        for sl in slices:
            taken.append(sl)
            yield sl

    src = PropheseeSource(slicer=stream(), sensor_size=(1280, 720), buffer_from_connect=True, buffer_events=cap)
    deadline = time.monotonic() + 10
    while len(taken) < len(slices):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # WHEN iteration starts afterwards THEN every slice comes out (or, past the cap, the newest), counted
    packets, err = collect_until_error(src)
    got = concat(packets)
    if delivered is None:
        np.testing.assert_array_equal(got, ev)
        assert src.received_events == src.delivered_events == ev.shape[0] and src.dropped_events == 0
    else:
        last = ev[ev["t"] >= 20_000]
        np.testing.assert_array_equal(got, last)
        assert src.dropped_events == ev.shape[0] - last.shape[0] and src.delivered_events == last.shape[0]
    assert "stream ended" in str(err) and f"received {ev.shape[0]} events" in str(err)


def test_prophesee_conversion_of_both_layouts_and_bounds():
    nd_dtype = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
    arr = np.array([(5, 1, 2, True), (6, 1279, 719, False)], dtype=nd_dtype)
    ev = cd_to_events(arr, (1280, 720), "test")
    assert ev.dtype == EVENT_DTYPE and ev["p"].tolist() == [1, 0] and ev["t"].tolist() == [5, 6]
    cd = np.zeros(1, dtype=CD)
    cd["x"] = 1280
    with pytest.raises(SourceError, match="outside the 1280x720 sensor"):
        cd_to_events(cd, (1280, 720), "test")


@needs_dv
def test_davis_idle_ticks_even_when_every_event_is_filtered_mock_camera():
    # a camera that only reports a masked hot pixel: batches keep coming, every one filters to nothing
    stores = []
    for k in range(200):
        s = dv.EventStore()
        s.push_back(3_000_000 + 1000 * k, 7, 5, True)
        if k == 0:
            s.push_back(3_000_500, 8, 5, True)  # the one real event
        stores.append(s)
    clock = FakeClock()
    cam = MockCamera(stores + ["unplug"], clock=clock)
    with DavisSource(camera=cam, hot_pixels=[(7, 5)], clock=clock, sleep=clock.sleep, idle_timeout_s=0.05) as src:
        packets, _ = collect_until_error(src)
    assert sum(len(p) for p in packets) == 1
    assert len(packets) >= 3  # idle packets kept coming while the masked batches arrived
    assert_tiles(packets)


def test_aedat4_event_indices_in_the_open_pass_match_a_second_pass(shared_data):
    with Aedat4Source(shared_data("davis346.aedat4")) as src:
        assert src._event_indices_done  # found while scanning the frames
        online = src.event_indices
        np.testing.assert_array_equal(online, src._compute_event_indices())


@pytest.mark.parametrize("lag_us, keep_us, online", [(0, 2_000_000, True), (300_000, 2_000_000, True),
                                                       (300_000, 50_000, False)])
def test_online_event_indices_against_searchsorted(lag_us, keep_us, online):
    from livenight.drivers._aedat4_reader import _OnlineEventIndices

    # GIVEN events in packets of 1000 and frames every 40 ms, each announced lag_us after its midpoint
    t = 1_000_000 + (np.arange(40_000) // 2) * 100  # 2 s, pairs of equal timestamps
    mids = np.arange(int(t[0]) + 5_000, int(t[-1]), 40_000)
    idx = _OnlineEventIndices(keep_us=keep_us)
    k = 0
    for a in range(0, t.shape[0], 1000):
        pk = t[a:a + 1000]
        while k < mids.shape[0] and mids[k] + lag_us <= int(pk[0]):
            idx.add_frame(int(mids[k]))
            k += 1
        idx.add_events(pk.astype(np.uint64))
    for m in mids[k:]:
        idx.add_frame(int(m))
    got = idx.result()
    if not online:
        assert got is None  # bounds older than the look-back: the caller makes a second pass
        return
    want = np.stack([np.searchsorted(t, mids - 10_000), np.searchsorted(t, mids + 10_000)], axis=1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("flips, seed", [(50, 100), (50, 102), (2000, 3)])
def test_aedat4_damaged_copy_warns_or_fails_in_one_line(shared_data, tmp_path, flips, seed):
    # GIVEN the shared clip with bytes overwritten after the header (damaged LZ4 packets, bogus events)
    data = bytearray(shared_data("davis346.aedat4").read_bytes())
    rng = np.random.default_rng(seed)
    for pos in rng.integers(4000, len(data), size=flips):
        data[pos] = int(rng.integers(0, 256))
    path = tmp_path / "damaged.aedat4"
    path.write_bytes(bytes(data))
    # WHEN it is replayed THEN the events kept are sorted and inside the sensor, with one warning line,
    # or the whole file is refused with one SourceError line
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Aedat4Source(path) as src:
                packets = list(src)
        except SourceError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            return
    ev = concat(packets)
    assert 0 < ev.shape[0] <= 78_830 and np.all(np.diff(ev["t"]) >= 0)
    assert int(ev["x"].max()) < 346 and int(ev["y"].max()) < 260
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1 and "kept" in lines[0] and "\n" not in lines[0]
