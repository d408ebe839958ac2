"""Prophesee RAW (EVT 2.0 / 2.1 / 3.0) and DAT decoders and replay sources.

* The real recordings in ``../shared/data`` (never copied here; a missing folder FAILS): every number of its
  README (events, ON/OFF, first/last t, coordinate ranges, word counts, header fields, geometry), golden
  hashes per field pinned after the decoder matched those numbers, .raw = .dat up to 11,194,368 µs, the EVT3
  24-bit wrap, the 9 backwards TIME_LOW words, and an independent vectorised numpy decoder
  (``scripts/bench_decode.py``) giving the same events.
* Hand-made word streams built with the tiny encoders below (formats.md §3.6 corner cases, vectors, skipped
  word types, EVT2.1 bit layout), round trips through the module's encoders, chunk-size independence, the
  source contract (packets tile time, sorted, single use) and every bad-input case.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from livenight.drivers import open_source
from livenight.drivers.prophesee_raw import (DEFAULT_LOOK_BEHIND_US, DatSource, DecodeWarning, GeometryWarning,
                                             PropheseeRawSource, StreamDecoder, count_word_types, decode_file,
                                             decode_to_array, encode_events, raw_header_bytes, read_dat_header,
                                             read_raw_header, write_dat, write_raw)
from livenight.errors import SourceError, SourceNotFoundError
from livenight.events import EVENT_DTYPE, EventPacket, make_events

from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]

# sha256 of the recordings (shared/data/README.md)
FILE_SHA256 = {
    "evt2.raw": "e84afbecdc07d2910ae846a4ae0ee246f5b9c97a53816c637d4f85c023d7c234",
    "evt2_sample.raw": "27ca511eb34f92d8a041152dd0bbe3ba9972e6fec820353937fe55a31eabbd60",
    "evt3_sample.raw": "1c57e604b7f988a834bcf90f1be26d144fb5527aa15f9c61940f5916bff5b919",
    "gen4_pointsource.raw": "8eca19cd8f0580ae939490484a023d858192a4c102b6649d8f5e19a62cb77ad3",
    "gen4_pointsource.dat": "9d77a38da198c44fc4e79695ea93715c05ee0303bb2bc30226d91243c200624f",
}

# the README's numbers; `xy` = (x min, x max, y min, y max)
EXPECTED = {
    "evt2.raw": dict(format="EVT2", size=(640, 480), geometry_source="plugin_name", payload=166, events=521_252,
                     on=185_861, off=335_391, first=913_716_224, last=913_812_095, xy=(0, 639, 0, 479)),
    "evt2_sample.raw": dict(format="EVT2", size=(640, 480), geometry_source="plugin_name", payload=164,
                            events=539_481, on=367_855, off=171_626, first=1_317_888, last=1_367_888,
                            xy=(60, 599, 18, 475)),
    "evt3_sample.raw": dict(format="EVT3", size=(1280, 720), geometry_source="plugin_name", payload=166,
                            events=219_596, on=115_532, off=104_064, first=11_718_656, last=11_727_457,
                            xy=(0, 1279, 0, 719)),
    "gen4_pointsource.raw": dict(format="EVT3", size=(1280, 720), geometry_source="geometry", payload=225,
                                 events=1_218_618, on=553_295, off=665_323, first=11_200_224, last=21_968_221,
                                 xy=(0, 1279, 0, 719)),
    "gen4_pointsource.dat": dict(format="DAT", size=(1280, 720), geometry_source="header", payload=67,
                                 events=1_218_618, on=553_295, off=665_323, first=5856, last=10_773_853,
                                 xy=(0, 1279, 0, 719)),
}

WORD_COUNTS = {
    "evt2.raw": {"CD_ON": 185_861, "CD_OFF": 335_391, "TIME_HIGH": 5992},
    "evt2_sample.raw": {"CD_ON": 367_855, "CD_OFF": 171_626, "TIME_HIGH": 3126},
    "evt3_sample.raw": {"ADDR_Y": 59_640, "ADDR_X": 197_550, "VECT_BASE_X": 10_527, "VECT_12": 21_242,
                        "VECT_8": 10_621, "TIME_LOW": 8812, "TIME_HIGH": 551},
    "gen4_pointsource.raw": {"ADDR_Y": 1_215_631, "ADDR_X": 1_217_322, "VECT_BASE_X": 648, "VECT_12": 1296,
                             "VECT_8": 648, "TIME_LOW": 1_115_492, "TIME_HIGH": 673_000, "OTHERS": 134_599,
                             "CONTINUED_4": 107_680, "CONTINUED_12": 215_360},
}

# Golden hashes: sha256 (first 24 hex digits) of the contiguous t, x, y, p columns, computed once with this
# decoder after it matched every README number above, then pinned.
GOLDEN = {
    "evt2.raw": {"t": "ecac3caf317a673739d92526", "x": "dde6627c570eeaf1c6356683",
                 "y": "4af0861c7c00428be8a3003b", "p": "04394c7572ccb8f58a1a240f"},
    "evt2_sample.raw": {"t": "64fec5ce1b270d8042a6d672", "x": "02dc735a94fdf0bdd443ab9e",
                        "y": "f6e0390bc6cb7a4050ae7255", "p": "47f9cd2ed9562c78ba81f922"},
    "evt3_sample.raw": {"t": "41a62d1aeed53a5b9c8ffeea", "x": "1014ebcc18dcc912fbf7afd7",
                        "y": "81f935a5e5fb739853a1e010", "p": "a8c5419384b9b05211ff6bd3"},
    "gen4_pointsource.raw": {"t": "d224fc1c05941ea1d166c3f9", "x": "62e484387f79fbf416692b20",
                             "y": "8623ad88863de2273bb658d7", "p": "81cd8c57a8c1ae2c5028ddf5"},
    "gen4_pointsource.dat": {"t": "08ae444adde06d4bd982cb38", "x": "62e484387f79fbf416692b20",
                             "y": "8623ad88863de2273bb658d7", "p": "81cd8c57a8c1ae2c5028ddf5"},
}
DAT_OFFSET_US = 11_194_368  # = 2733 × 4096


# ---------------------------------------------------------------------------- helpers
def data_file(name: str) -> Path:
    """A real recording ($LIVENIGHT_DATA, default ../shared/data): skipped when absent, a failure under CI=true."""
    return shared_path(name)


_decoded: dict[str, np.ndarray] = {}


def decoded(name: str) -> np.ndarray:
    """Decoder output of a recording (cached: several tests look at the same arrays)."""
    if name not in _decoded:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GeometryWarning)
            _decoded[name] = decode_to_array(data_file(name))
    return _decoded[name]


def column_hashes(ev: np.ndarray) -> dict[str, str]:
    return {k: hashlib.sha256(np.ascontiguousarray(ev[k]).tobytes()).hexdigest()[:24] for k in "txyp"}


def concat(arrays) -> np.ndarray:
    arrays = [a.view("V13") for a in arrays]
    return np.concatenate(arrays).view(EVENT_DTYPE) if arrays else np.empty(0, EVENT_DTYPE)


def assert_events_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == EVENT_DTYPE
    assert got.shape == want.shape
    for k in "txyp":
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"field {k}")


def stable_sorted(ev: np.ndarray) -> np.ndarray:
    return ev.view("V13")[np.argsort(ev["t"], kind="stable")].view(EVENT_DTYPE)


def packets_of(src) -> list[EventPacket]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        with src:
            return list(src)


def assert_packet_contract(packets: list[EventPacket], sensor_size) -> np.ndarray:
    """Packets tile time, hold sorted events inside their range, never split a timestamp run."""
    assert packets, "no packets"
    for a, b in zip(packets, packets[1:]):
        assert a.t_end_us == b.t_start_us
        if len(a) and len(b):
            assert a.events["t"][-1] < b.events["t"][0]  # a timestamp run never straddles two packets
    for pk in packets:
        assert isinstance(pk, EventPacket) and pk.sensor_size == sensor_size
        t = pk.events["t"]
        if t.size:
            assert t[0] >= pk.t_start_us and t[-1] < pk.t_end_us
            assert np.all(t[1:] >= t[:-1])
    return concat([pk.events for pk in packets])


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_decode", ROOT / "scripts" / "bench_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# tiny hand encoders: one function per word type, so the corner cases below are written word by word
def th3(hi):
    return 0x8000 | hi


def tl3(lo):
    return 0x6000 | lo


def ay3(y):
    return y


def ax3(x, p=1):
    return 0x2000 | (p << 11) | x


def vbase3(x, p=1):
    return 0x3000 | (p << 11) | x


def v12(mask):
    return 0x4000 | mask


def v8(mask):
    return 0x5000 | mask


def th2(payload):
    return (0x8 << 28) | payload


def cd2(p, low, x, y):
    return (p << 28) | (low << 22) | (x << 11) | y


def th21(payload):
    return ((0x8 << 28) | payload) << 32


def cd21(p, low, xbase, y, mask):
    return (((p << 28) | (low << 22) | (xbase << 11) | y) << 32) | mask


def swap_halves(w):
    return ((w >> 32) | (w << 32)) & 0xFFFFFFFFFFFFFFFF


def raw_file(path: Path, evt_format: str, words, sensor_size=(1280, 720), header: bytes | None = None,
             tail: bytes = b"") -> Path:
    dtype = {"EVT3": "<u2", "EVT2": "<u4", "EVT21": "<u8", "EVT21_LEGACY": "<u8"}[evt_format]
    head = raw_header_bytes(evt_format, sensor_size) if header is None else header
    path.write_bytes(head + np.asarray(words, dtype=np.uint64).astype(dtype).tobytes() + tail)
    return path


def random_sorted_events(n: int, seed: int = 0, size=(1280, 720), t0: int = 1_000_000, span: int = 200_000,
                         bursts: bool = True) -> np.ndarray:
    """Time-sorted events; with ``bursts`` many share (t, y, p) with increasing x, so vectors get exercised."""
    rng = np.random.default_rng(seed)
    w, h = size
    t = np.sort(rng.integers(t0, t0 + span, n))
    x = rng.integers(0, w, n)
    y = rng.integers(0, h, n)
    p = rng.integers(0, 2, n)
    if bursts:
        for start in range(0, n - 20, 37):  # runs of 3..14 events on one row at one time
            k = 3 + start % 12
            t[start:start + k] = t[start]
            y[start:start + k] = y[start]
            p[start:start + k] = p[start]
            x[start:start + k] = np.minimum(x[start] % (w - 40) + np.cumsum(rng.integers(1, 4, k)), w - 1)
    return make_events(t, x, y, p)


# ============================================================================ real recordings
@pytest.mark.parametrize("name", sorted(FILE_SHA256))
def test_recording_is_the_documented_file(name):
    path = data_file(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FILE_SHA256[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_matches_readme(name):
    exp = EXPECTED[name]
    path = data_file(name)
    header = read_dat_header(path) if exp["format"] == "DAT" else read_raw_header(path)
    assert header.format == exp["format"]
    assert header.payload_offset == exp["payload"]
    assert header.sensor_size == exp["size"] and header.geometry_source == exp["geometry_source"]
    ev = decoded(name)
    assert ev.dtype == EVENT_DTYPE
    assert ev.shape[0] == exp["events"]
    assert int(np.count_nonzero(ev["p"] == 1)) == exp["on"]
    assert int(np.count_nonzero(ev["p"] == 0)) == exp["off"]
    assert int(ev["t"][0]) == exp["first"] and int(ev["t"][-1]) == exp["last"]
    assert (int(ev["x"].min()), int(ev["x"].max()), int(ev["y"].min()), int(ev["y"].max())) == exp["xy"]
    # all five recordings decode to non-decreasing timestamps (evt3_sample too, README)
    assert np.all(np.diff(ev["t"]) >= 0)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_hashes(name):
    assert column_hashes(decoded(name)) == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(WORD_COUNTS))
def test_word_counts_match_readme(name):
    assert count_word_types(data_file(name)) == WORD_COUNTS[name]


def test_headers_match_readme():
    h = read_raw_header(data_file("evt2.raw"))
    assert h.fields == {"Date": "2020-09-25 07:48:31", "firmware_version": "2.0.255",
                        "integrator_name": "Prophesee", "plugin_name": "hal_plugin_gen3_fx3",
                        "serial_number": "00000157", "system_ID": "21", "evt": "2.0"}
    assert h.geometry_inferred
    h = read_raw_header(data_file("evt3_sample.raw"))
    assert h.fields["plugin_name"] == "hal_plugin_gen41_evk3" and h.fields["evt"] == "3.0"
    h = read_raw_header(data_file("gen4_pointsource.raw"))
    assert h.fields["format"] == "EVT3" and h.fields["geometry"] == "1280x720"
    assert h.fields["plugin_name"] == "hal_plugin_imx636_evk4" and not h.geometry_inferred
    d = read_dat_header(data_file("gen4_pointsource.dat"))
    assert (d.width, d.height, d.version, d.event_type, d.event_size) == (1280, 720, 2, 12, 8)
    assert d.fields["date"] == "2023-10-19 15:36:14"


def test_geometry_inferred_from_plugin_name_says_so():
    with pytest.warns(GeometryWarning, match=r"640x480 from plugin_name 'hal_plugin_gen3_fx3'"):
        dec = decode_file(data_file("evt2.raw"))
    assert dec.sensor_size == (640, 480)
    dec.close()
    with pytest.warns(GeometryWarning, match=r"1280x720 from plugin_name 'hal_plugin_gen41_evk3'"):
        src = PropheseeRawSource(data_file("evt3_sample.raw"))
    assert src.sensor_size == (1280, 720)
    src.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # geometry in the header or given explicitly: no warning
        PropheseeRawSource(data_file("gen4_pointsource.raw")).close()
        src = PropheseeRawSource(data_file("evt2.raw"), sensor_size=(1280, 720))
        assert src.sensor_size == (1280, 720)
        src.close()


def test_raw_equals_dat_up_to_constant_offset():
    raw, dat = decoded("gen4_pointsource.raw"), decoded("gen4_pointsource.dat")
    assert raw.shape == dat.shape
    for k in "xyp":
        np.testing.assert_array_equal(raw[k], dat[k])
    np.testing.assert_array_equal(raw["t"] - dat["t"], np.full(raw.shape[0], DAT_OFFSET_US))


def test_evt3_recording_crosses_the_24bit_wrap():
    dec = decode_file(data_file("gen4_pointsource.raw"))
    ev = concat(list(dec))
    assert dec.stats.time_loops == 1
    assert ev["t"][0] < 1 << 24 < ev["t"][-1]
    assert np.all(np.diff(ev["t"]) >= 0)
    assert dec.stats.late_events == 0 and dec.stats.dropped_events == 0 and dec.stats.unknown_words == 0


def test_evt3_sample_backwards_time_low():
    with pytest.warns(GeometryWarning):
        dec = decode_file(data_file("evt3_sample.raw"))
    ev = concat(list(dec))
    assert dec.stats.time_low_backwards == 9
    assert dec.stats.late_events == 0  # the backwards TIME_LOWs are not followed by older events here
    assert (int(ev["t"][0]), int(ev["t"][-1])) == (11_718_656, 11_727_457)


@pytest.mark.parametrize("name", ["evt2.raw", "evt2_sample.raw", "evt3_sample.raw", "gen4_pointsource.raw"])
def test_independent_numpy_decoder_agrees(name):
    bench = bench_module()
    header = read_raw_header(data_file(name))
    words = np.fromfile(header.path, dtype="<u2" if header.format == "EVT3" else "<u4",
                        offset=header.payload_offset)
    ref = {"EVT2": bench.numpy_decode_evt2, "EVT3": bench.numpy_decode_evt3}[header.format]
    assert_events_equal(decoded(name), ref(words, *EXPECTED[name]["size"]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_source_yields_sorted_tiled_packets(name):
    exp = EXPECTED[name]
    cls = DatSource if exp["format"] == "DAT" else PropheseeRawSource
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        src = cls(data_file(name), chunk_bytes=1 << 18)
    assert src.is_live is False and src.frames is None and src.event_indices is None
    assert src.name == name and src.sensor_size == exp["size"]
    packets = packets_of(src)
    assert len(packets) > 1
    got = assert_packet_contract(packets, exp["size"])
    assert_events_equal(got, stable_sorted(decoded(name)))
    assert packets[0].t_start_us == exp["first"] and packets[-1].t_end_us == exp["last"] + 1
    assert src.clamped_events == 0 and src.dropped_events == 0
    with pytest.raises(RuntimeError, match="only once"):
        iter(src)


@pytest.mark.parametrize("name", ["evt2.raw", "gen4_pointsource.dat"])
def test_open_source_registry(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        src = open_source(data_file(name), chunk_bytes=1 << 20)
    assert isinstance(src, DatSource if name.endswith(".dat") else PropheseeRawSource)
    got = assert_packet_contract(packets_of(src), EXPECTED[name]["size"])
    assert got.shape[0] == EXPECTED[name]["events"]


@pytest.mark.parametrize("name,chunks", [("evt2.raw", (997, 4096 + 3, 1 << 16)),
                                         ("evt3_sample.raw", (1000, 4097, 1 << 16)),
                                         ("gen4_pointsource.raw", (65_537, 1 << 20)),
                                         ("gen4_pointsource.dat", (10_001, 1 << 20))])
def test_recording_chunk_size_independence(name, chunks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        for chunk in chunks:
            assert_events_equal(decode_to_array(data_file(name), chunk_bytes=chunk), decoded(name))


@pytest.mark.parametrize("name,prefix", [("evt3_sample.raw", 24_000), ("evt2_sample.raw", 24_000),
                                         ("gen4_pointsource.dat", 24_000)])
def test_tiny_chunks_on_a_recording_prefix(tmp_path, name, prefix):
    # GIVEN the header and the first `prefix` payload bytes of a recording (cut at a word boundary)
    src = data_file(name)
    header = read_dat_header(src) if name.endswith(".dat") else read_raw_header(src)
    blob = src.read_bytes()[: header.payload_offset + prefix]
    path = tmp_path / name
    path.write_bytes(blob)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        whole = decode_to_array(path)
        assert whole.shape[0] > 1000
        # WHEN it is decoded 2, 3, 7 … bytes at a time THEN the events are identical
        for chunk in (2, 3, 7, 13):
            assert_events_equal(decode_to_array(path, chunk_bytes=chunk), whole)


# ============================================================================ hand-made streams (formats.md §3.6)
def test_evt3_wrap_and_repeated_time_high(tmp_path):
    words = [th3(4095), tl3(4000), ay3(7), ax3(1), ax3(2),  # 4095·4096 + 4000 = 16777120, twice
             th3(0), ax3(3),  # wrap: a loop, low reset → 16777216
             tl3(5), th3(0), ax3(4)]  # a repeated TIME_HIGH keeps the low part → 16777221
    ev = decode_to_array(raw_file(tmp_path / "wrap.raw", "EVT3", words))
    assert ev["t"].tolist() == [16777120, 16777120, 16777216, 16777221]
    assert ev["x"].tolist() == [1, 2, 3, 4] and ev["y"].tolist() == [7] * 4


def test_evt2_34bit_wrap(tmp_path):
    words = [th2((1 << 28) - 1), cd2(1, 63, 5, 6), th2(0), cd2(0, 1, 7, 8)]
    ev = decode_to_array(raw_file(tmp_path / "wrap2.raw", "EVT2", words))
    assert ev["t"].tolist() == [17179869183, 17179869185]
    assert ev["x"].tolist() == [5, 7] and ev["y"].tolist() == [6, 8] and ev["p"].tolist() == [1, 0]


def test_evt3_time_semantics_vectors_and_skipped_words(tmp_path):
    words = [ax3(9), tl3(100),  # before the first TIME_HIGH: skipped; TIME_LOW forgotten by it
             th3(2), ay3(10), ax3(5, 0),  # 8192
             tl3(50), 0xE014, 0xF123, 0x7012, 0xA001, 0xD000,  # OTHERS, CONTINUED_12/4, trigger, IMU: skipped
             vbase3(100, 1), v12(0b1010_0000_0001), v8(0b11),  # 100, 109, 111; base += 12 → 112, 113
             v12(0), v8(0b1),  # empty vector still advances: base 120 + 12 → 132
             tl3(40), ax3(6, 1),  # TIME_LOW backwards: kept as written → 8232
             th3(3), ax3(7, 0),  # changing TIME_HIGH resets the low part → 12288
             0x1000 | 11, ax3(8), vbase3(0), v12(0xFFF),  # ADDR_Y type 0x1 (exposure measurement): no CD events
             ay3(12), ax3(9, 1)]
    dec = decode_file(raw_file(tmp_path / "sem.raw", "EVT3", words))
    ev = concat(list(dec))
    assert ev["t"].tolist() == [8192] + [8242] * 6 + [8232, 12288, 12288]
    assert ev["x"].tolist() == [5, 100, 109, 111, 112, 113, 132, 6, 7, 9]
    assert ev["y"].tolist() == [10] * 9 + [12]
    assert ev["p"].tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0, 1]
    assert dec.stats.time_low_backwards == 1 and dec.stats.late_events == 1
    assert dec.stats.unknown_words == 0 and dec.stats.dropped_events == 0


def test_evt3_loop_needs_a_drop_of_2048(tmp_path):
    words = [th3(3000), ay3(0), ax3(1), th3(953), ax3(2),  # drop of 2047: no loop (time goes backwards)
             th3(3000), ax3(3), th3(952), ax3(4)]  # drop of 2048: a loop
    ev = decode_to_array(raw_file(tmp_path / "loop.raw", "EVT3", words))
    assert ev["t"].tolist() == [3000 * 4096, 953 * 4096, 3000 * 4096, 952 * 4096 + (1 << 24)]


def test_evt21_hand_made_words(tmp_path):
    words = [cd21(1, 1, 5, 5, 1),  # before the first TIME_HIGH: skipped
             th21(10), cd21(1, 3, 100, 7, 0b101), cd21(0, 4, 64, 8, 1 << 31), (0xA << 60) | 1, 0xE << 60,
             th21((1 << 28) - 1), cd21(1, 63, 0, 0, 1), th21(0), cd21(0, 0, 1, 1, 0b11)]
    want = ([643, 643, 644, 17179869183, 1 << 34, 1 << 34], [100, 102, 95, 0, 1, 2], [7, 7, 8, 0, 1, 1],
            [1, 1, 0, 1, 0, 0])
    for fmt, ws in (("EVT21", words), ("EVT21_LEGACY", [swap_halves(w) for w in words])):
        ev = decode_to_array(raw_file(tmp_path / f"{fmt}.raw", fmt, ws))
        assert (ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist()) == want, fmt
    assert read_raw_header(tmp_path / "EVT21_LEGACY.raw").fields["format"].endswith("endianness=legacy")


def test_dat_32bit_wrap(tmp_path):
    t = np.array([(1 << 32) - 3, (1 << 32) - 1, 1 << 32, (1 << 32) + 7], dtype=np.int64)
    ev = make_events(t, [1, 2, 3, 4], [5, 6, 7, 8], [1, 0, 1, 0])
    back = decode_to_array(write_dat(tmp_path / "wrap.dat", ev, (640, 480)))
    assert_events_equal(back, ev)


# ============================================================================ round trips and chunking
@pytest.mark.parametrize("fmt", ["EVT3", "EVT2", "EVT21", "EVT21_LEGACY", "DAT"])
def test_round_trip_and_chunk_independence(tmp_path, fmt):
    ev = random_sorted_events(3000, seed=1)
    path = tmp_path / ("x.dat" if fmt == "DAT" else "x.raw")
    if fmt == "DAT":
        write_dat(path, ev, (1280, 720))
    else:
        write_raw(path, ev, fmt, (1280, 720))
    whole = decode_to_array(path)
    assert_events_equal(whole, ev)
    for chunk in (1, 2, 3, 7, 8, 9, 1000):
        assert_events_equal(decode_to_array(path, chunk_bytes=chunk), ev)


def test_evt3_encoder_uses_vectors_and_crosses_wraps(tmp_path):
    ev = random_sorted_events(5000, seed=2, t0=16_000_000, span=40_000_000)  # two 24-bit wraps
    words = np.frombuffer(encode_events(ev, "EVT3"), dtype="<u2")
    assert np.count_nonzero(words >> 12 == 0x4) > 100  # VECT_12 words in use
    back = decode_to_array(write_raw(tmp_path / "v.raw", ev, "EVT3", (1280, 720)))
    assert_events_equal(back, ev)


def test_stream_decoder_any_split():
    ev = random_sorted_events(2000, seed=3)
    payload = encode_events(ev, "EVT21")
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(len(payload), 40, replace=False))
    dec = StreamDecoder("EVT21", (1280, 720))
    parts = [dec.feed(payload[a:b]) for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(payload)])]
    assert dec.pending_bytes == 0 and dec.stats().truncated_at is None
    assert_events_equal(concat(parts), ev)
    dec.feed(b"\x01\x02\x03")
    assert dec.pending_bytes == 3 and dec.stats().truncated_at == len(payload)


# ============================================================================ ordering in the source
def test_source_sorts_backwards_time_low_and_keeps_decoded_order(tmp_path):
    # GIVEN an EVT3 stream whose TIME_LOW goes back (HAL: kept as written) with events after it
    words = [th3(1), ay3(3)]
    for k in range(300):
        words += [tl3(1000 + (k % 50) * 20), ax3(k % 1280, 1), ax3((k + 1) % 1280, 0), tl3(900 + (k % 50) * 20),
                  ax3((k + 2) % 1280, 1)]
        if k % 50 == 49:
            words.append(th3(1 + (k + 1) // 50))
    path = raw_file(tmp_path / "back.raw", "EVT3", words)
    dec = decode_file(path, chunk_bytes=64)
    raw = concat(list(dec))
    # THEN the decoder keeps stream order (t decreases) and counts it
    assert np.any(np.diff(raw["t"]) < 0)
    assert dec.stats.late_events > 0 and dec.stats.time_low_backwards == 300
    # AND the source yields the same events stably sorted, nothing clamped, with any chunking
    for chunk in (64, 1000, 1 << 20):
        src = PropheseeRawSource(path, chunk_bytes=chunk)
        got = assert_packet_contract(packets_of(src), (1280, 720))
        assert_events_equal(got, stable_sorted(raw))
        assert src.clamped_events == 0


def test_source_clamps_events_older_than_the_look_behind(tmp_path):
    # GIVEN events up to TIME_HIGH 2003, of which those older than 4096 µs are released in the first packet,
    # THEN a TIME_HIGH that goes back 1003 periods (not a wrap: the drop is < 2048) with two events
    words = [th3(2000), ay3(1), ax3(1), th3(2001), ax3(2), th3(2003), ax3(6)]
    words += [th3(1000), ax3(3), ax3(4), th3(2010), ax3(5)]
    path = raw_file(tmp_path / "clamp.raw", "EVT3", words)
    src = PropheseeRawSource(path, chunk_bytes=14)  # the first chunk is exactly the first 7 words
    with pytest.warns(DecodeWarning, match=r"clamped 2 events"):
        packets = list(src)
    got = assert_packet_contract(packets, (1280, 720))
    boundary = packets[0].t_end_us
    assert packets[0].events["x"].tolist() == [1, 2] and boundary == 2003 * 4096 - DEFAULT_LOOK_BEHIND_US
    # the late events are clamped to the start of the packet they land in, then sorted in stably
    assert got["x"].tolist() == [1, 2, 3, 4, 6, 5] and src.clamped_events == 2
    assert got["t"][2:4].tolist() == [boundary, boundary]
    # the decoder itself keeps them as decoded
    assert decode_to_array(path)["t"].tolist()[3:5] == [1000 * 4096] * 2


# ============================================================================ bad input
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.raw"
    for call in (read_raw_header, decode_file, decode_to_array, PropheseeRawSource, DatSource, read_dat_header):
        with pytest.raises(SourceNotFoundError, match="no such file"):
            call(missing)
    with pytest.raises(FileNotFoundError):
        open_source(missing)


def test_directory_is_refused(tmp_path):
    with pytest.raises(SourceError, match="is a directory"):
        PropheseeRawSource(tmp_path)


@pytest.mark.parametrize("header,value", [(b"% evt 4.0\n", "4.0"), (b"% format HISTO3D;width=1;height=1\n",
                                                                   "HISTO3D")])
def test_unknown_evt_format(tmp_path, header, value):
    path = tmp_path / "x.raw"
    path.write_bytes(b"% plugin_name hal_plugin_imx636_evk4\n" + header + b"\x00" * 64)
    with pytest.raises(SourceError, match=rf"{value}.*supported.*EVT2.*EVT21.*EVT3"):
        read_raw_header(path)
    with pytest.raises(SourceError, match=value):
        PropheseeRawSource(path)


def test_header_without_format_and_contradicting_header(tmp_path):
    path = tmp_path / "x.raw"
    path.write_bytes(b"% camera foo\n% end\n" + b"\x00" * 8)
    with pytest.raises(SourceError, match="names no event format"):
        read_raw_header(path)
    path.write_bytes(b"% evt 2.0\n% format EVT3\n% end\n")
    with pytest.raises(SourceError, match="contradicts"):
        read_raw_header(path)


@pytest.mark.parametrize("blob", [b"", b"\x00\x01garbage" * 100, np.random.default_rng(0).bytes(4096),
                                  b"%%PDF-1.4\n"])
def test_not_a_raw_file(tmp_path, blob):
    path = tmp_path / "x.raw"
    path.write_bytes(blob)
    with pytest.raises(SourceError, match="empty file|not a Prophesee RAW file"):
        PropheseeRawSource(path)


def test_garbage_payload_after_a_valid_header(tmp_path):
    path = tmp_path / "g.raw"
    path.write_bytes(raw_header_bytes("EVT3", (1280, 720)) + np.random.default_rng(1).bytes(1 << 16))
    with pytest.raises(SourceError, match=r"does not decode as EVT3: skipped \d+ words of reserved types "
                                          r"\(first at byte \d+\)"):
        decode_to_array(path)
    # the replay source gives the same verdict before handing over a single packet
    packets = []
    with pytest.raises(SourceError, match="does not decode as EVT3"):
        for p in PropheseeRawSource(path):
            packets.append(p)
    assert packets == []


def test_truncated_header(tmp_path):
    path = tmp_path / "t.raw"
    path.write_bytes(b"% evt 3.0\n% plugin_na")
    with pytest.raises(SourceError, match="truncated.*header"):
        read_raw_header(path)


@pytest.mark.parametrize("fmt,extra", [("EVT3", 1), ("EVT2", 3), ("EVT21", 5), ("DAT", 7)])
def test_truncated_payload_decodes_everything_then_raises(tmp_path, fmt, extra):
    ev = random_sorted_events(2000, seed=4)
    path = tmp_path / ("t.dat" if fmt == "DAT" else "t.raw")
    if fmt == "DAT":
        write_dat(path, ev, (1280, 720))
    else:
        write_raw(path, ev, fmt, (1280, 720))
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\xff" * extra)
    for chunk in (3, 1 << 20):
        got = []
        with pytest.raises(SourceError, match=rf"truncated.*stopped at byte {size}\b"):
            for arr in decode_file(path, chunk_bytes=chunk):
                got.append(arr)
        assert_events_equal(concat(got), ev)
        # the source hands over every event (held-back ones included) before raising
        cls = DatSource if fmt == "DAT" else PropheseeRawSource
        packets = []
        with pytest.raises(SourceError, match=rf"byte {size}\b"):
            for pk in cls(path, chunk_bytes=chunk):
                packets.append(pk)
        assert_events_equal(assert_packet_contract(packets, (1280, 720)), ev)


def test_out_of_sensor_events_are_dropped_counted_and_warned(tmp_path):
    # GIVEN a 640x480 EVT2 file with events at y >= 480 and x >= 640
    ev = make_events([10, 20, 30, 40, 50], [1, 700, 2, 639, 3], [1, 2, 500, 479, 3], [1, 0, 1, 0, 1])
    path = write_raw(tmp_path / "oob.raw", ev, "EVT2", (640, 480))
    with pytest.warns(DecodeWarning, match=r"dropped 2 events outside the 640x480 sensor"):
        dec = decode_file(path)
        got = concat(list(dec))
    assert got["x"].tolist() == [1, 639, 3] and dec.stats.dropped_events == 2
    src = PropheseeRawSource(path)
    with pytest.warns(DecodeWarning, match="dropped 2 events"):
        packets = list(src)
    assert concat([p.events for p in packets]).shape[0] == 3 and src.dropped_events == 2
    # EVT3 vectors crossing the right edge: bits beyond the width are dropped too
    words = [th3(1), ay3(0), vbase3(1275), v12(0xFFF)]
    with pytest.warns(DecodeWarning, match="dropped 7 events"):
        ev3 = decode_to_array(raw_file(tmp_path / "edge.raw", "EVT3", words))
    assert ev3["x"].tolist() == [1275, 1276, 1277, 1278, 1279]


def test_dat_bad_headers(tmp_path):
    path = tmp_path / "b.dat"
    path.write_bytes(b"% Width 640\n% Height 480\n% Version 2\n" + bytes([14, 8]) + b"\x00" * 16)
    with pytest.raises(SourceError, match="event type 14 is not supported"):
        DatSource(path)
    path.write_bytes(b"% Width 640\n% Height 480\n" + bytes([12, 16]))
    with pytest.raises(SourceError, match="event size 16"):
        read_dat_header(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(SourceError, match="not a Prophesee DAT file"):
        DatSource(path)


def test_geometry_inferred_from_coordinates_when_plugin_unknown(tmp_path):
    ev = make_events([10, 20], [600, 3], [470, 5], [1, 0])
    path = tmp_path / "nogeo.raw"
    path.write_bytes(b"% evt 2.0\n% plugin_name some_future_camera\n" + encode_events(ev, "EVT2"))
    with pytest.warns(GeometryWarning, match=r"using 640x480, the smallest known sensor"):
        src = PropheseeRawSource(path)
    assert src.sensor_size == (640, 480)
    src.close()


def test_import_stays_cheap():
    code = ("import sys, livenight.drivers.prophesee_raw; "
            "assert 'numba' not in sys.modules, 'numba imported at module import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_script_smoke(tmp_path):
    bench = bench_module()
    args = bench.parse_args(["--no-files", "--synthetic-events", "20000", "--repeat", "1", "--check"])
    rows = bench.run(args)
    assert [r["file"] for r in rows] == ["synthetic EVT3", "synthetic EVT2", "synthetic EVT21", "synthetic DAT"]
    assert all(r["events"] == 20000 and r["decode"] > 0 for r in rows)
    assert all(r["equal"] in (True, None) for r in rows)
