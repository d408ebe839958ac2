"""The event layout and its boundary checks (style.md §4 rule 1)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from livenight.errors import ShapeError, SourceError
from livenight.events import (EVENT_DTYPE, EventPacket, check_events, empty_events, polarity_to_on)
from livenight.events import make_events as pack_events


# ---------------------------------------------------------------------------------------------- dtype layout
def test_event_dtype_layout_is_fixed():
    assert EVENT_DTYPE.names == ("t", "x", "y", "p")
    assert EVENT_DTYPE["t"] == np.dtype("<i8")
    assert EVENT_DTYPE["x"] == np.dtype("<u2")
    assert EVENT_DTYPE["y"] == np.dtype("<u2")
    assert EVENT_DTYPE["p"] == np.dtype("u1")
    # packed, in this order: 8 + 2 + 2 + 1 bytes
    assert [EVENT_DTYPE.fields[n][1] for n in EVENT_DTYPE.names] == [0, 8, 10, 12]
    assert EVENT_DTYPE.itemsize == 13


def test_timestamps_are_signed_64_bit_microseconds():
    ev = pack_events([0, 2**40, 2**62], [0, 1, 2], [0, 0, 0], [1, 0, 1])
    assert ev["t"].tolist() == [0, 2**40, 2**62]  # beyond int32 / float32 exactness
    diff = ev["t"][:1] - ev["t"][2:]
    assert diff[0] == -(2**62)  # signed: differences do not wrap


def test_empty_events():
    e = empty_events()
    assert e.shape == (0,) and e.dtype == EVENT_DTYPE
    assert empty_events(5).shape == (5,)


# ---------------------------------------------------------------------------------------------- make_events
@pytest.mark.parametrize("p_in, expected", [
    ([True, False, True, False], [1, 0, 1, 0]),
    (np.array([True, False, False, True]), [1, 0, 0, 1]),
    ([1, 0, 0, 1], [1, 0, 0, 1]),
    (np.array([0, 1, 1, 0], dtype=np.uint8), [0, 1, 1, 0]),
    (np.array([0, 0, 0, 0], dtype=np.int32), [0, 0, 0, 0]),
    (np.array([1, 1, 1, 1], dtype=np.int64), [1, 1, 1, 1]),
    ([1, -1, -1, 1], [1, 0, 0, 1]),
    (np.array([-1, -1, -1, -1], dtype=np.int8), [0, 0, 0, 0]),
    (np.array([-1.0, 1.0, 1.0, -1.0]), [0, 1, 1, 0]),
    (np.array([0.0, 1.0, 0.0, 1.0]), [0, 1, 0, 1]),
])
def test_make_events_accepts_bool_01_and_pm1_polarities(p_in, expected):
    ev = pack_events([10, 20, 20, 30], [1, 2, 3, 4], [5, 6, 7, 8], p_in)
    assert ev.dtype == EVENT_DTYPE
    assert ev["p"].dtype == np.uint8
    assert ev["p"].tolist() == expected
    assert ev["t"].tolist() == [10, 20, 20, 30]
    assert ev["x"].tolist() == [1, 2, 3, 4]
    assert ev["y"].tolist() == [5, 6, 7, 8]


@pytest.mark.parametrize("p_in, named", [
    ([0, 2, 1], "2"),
    ([1, -1, 3], "3"),
    ([-2, -1, 1], "-2"),
    (np.array([0, 255], dtype=np.uint8), "255"),
    (np.array([1, 7, 0], dtype=np.int16), "7"),
])
def test_make_events_rejects_other_polarity_values_naming_the_value(p_in, named):
    with pytest.raises(SourceError) as err:
        pack_events([1, 2, 3][: len(p_in)], [0] * len(p_in), [0] * len(p_in), p_in)
    msg = str(err.value)
    assert "polarity" in msg
    assert re.search(rf"(?<![\d-]){re.escape(named)}(?!\d)", msg), msg


def test_make_events_rejects_a_mix_of_zero_and_minus_one():
    with pytest.raises(SourceError, match="0 and -1"):
        pack_events([1, 2, 3], [0, 0, 0], [0, 0, 0], [0, -1, 1])


@pytest.mark.parametrize("p_in", [
    np.array([0.5, 1.0]),  # lies in [0, 1] but is not 0 or 1: must not be truncated to 0
    np.array([0.0, 0.25]),
    np.array([-0.5, 1.0]),  # lies in [-1, 1] without zeros but is not ±1: must not become "OFF"
    np.array([1.0, 0.9]),
])
def test_make_events_rejects_fractional_polarities(p_in):
    # "p may be bool, 0/1 or -1/+1; anything else is rejected" (events.make_events docstring)
    with pytest.raises(SourceError, match="polarity"):
        pack_events([1, 2], [0, 0], [0, 0], p_in)


def test_polarity_to_on_uses_the_given_name_in_its_message():
    with pytest.raises(SourceError, match=r"^ps: .*5"):
        polarity_to_on(np.array([0, 5]), what="ps")


def test_make_events_does_not_modify_its_inputs():
    t = np.array([5, 6, 7], dtype=np.int64)
    x = np.array([1, 2, 3], dtype=np.int64)
    y = np.array([4, 5, 6], dtype=np.int32)
    p = np.array([-1, 1, -1], dtype=np.int8)
    pb = np.array([True, False, True])
    copies = [a.copy() for a in (t, x, y, p, pb)]
    ev = pack_events(t, x, y, p)
    ev2 = pack_events(t, x, y, pb)
    for a, c in zip((t, x, y, p, pb), copies):
        assert a.dtype == c.dtype
        np.testing.assert_array_equal(a, c)
    # the result is a copy: writing to it leaves the inputs alone
    ev["t"][:] = 0
    ev["p"][:] = 7
    ev2["x"][:] = 9
    np.testing.assert_array_equal(t, [5, 6, 7])
    np.testing.assert_array_equal(p, [-1, 1, -1])
    np.testing.assert_array_equal(x, [1, 2, 3])


def test_make_events_rejects_mismatched_column_lengths():
    with pytest.raises(ShapeError, match="'y'.*\\(2,\\).*\\(3,\\)"):
        pack_events([1, 2, 3], [0, 0, 0], [0, 0], [1, 1, 1])


def test_make_events_empty():
    ev = pack_events([], [], [], [])
    assert ev.shape == (0,) and ev.dtype == EVENT_DTYPE


# ---------------------------------------------------------------------------------------------- check_events
def test_check_events_accepts_sorted_events_inside_the_sensor(make_events):
    ev = make_events(10_000, sensor=(346, 260))
    check_events(ev, (346, 260))
    check_events(ev)
    check_events(empty_events(), (1, 1))
    # equal timestamps are sorted
    check_events(pack_events([3, 3, 3], [0, 1, 2], [0, 0, 0], [1, 1, 1]), (3, 1))


@pytest.mark.parametrize("t, bad_index", [
    ([0, 1, 2, 1, 5], 3),
    ([10, 9], 1),
    ([0, 0, 0, 0, 0, 0, -1], 6),
    ([5, 6, 7, 8, 9, 10, 4, 3, 2], 6),  # the first out-of-order index is named
])
def test_check_events_unsorted_names_the_index(t, bad_index):
    n = len(t)
    ev = pack_events(t, [0] * n, [0] * n, [1] * n)
    with pytest.raises(SourceError) as err:
        check_events(ev, (346, 260))
    msg = str(err.value)
    assert f"index {bad_index}" in msg
    assert f"t={t[bad_index]}" in msg and f"t={t[bad_index - 1]}" in msg


def test_check_events_unsorted_in_a_large_stream(make_events):
    ev = make_events(50_000, rate_ev_per_s=1e5)
    ev["t"][31_337] = ev["t"][31_336] - 1
    with pytest.raises(SourceError, match=r"index 31337\b"):
        check_events(ev)


@pytest.mark.parametrize("x, y, ok", [
    (345, 259, True),
    (346, 0, False),  # x == width is outside
    (0, 260, False),  # y == height is outside
    (400, 300, False),
    (0, 0, True),
])
def test_check_events_outside_sensor(x, y, ok):
    ev = pack_events([0, 1, 2], [1, x, 2], [1, y, 2], [0, 1, 0])
    if ok:
        check_events(ev, (346, 260))
    else:
        with pytest.raises(SourceError) as err:
            check_events(ev, (346, 260))
        msg = str(err.value)
        assert "event 1" in msg and f"x={x}" in msg and f"y={y}" in msg and "346x260" in msg


@pytest.mark.parametrize("bad", [
    np.zeros(3, dtype=[("t", "<i4"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")]),
    np.zeros(3, dtype=[("t", "<f8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")]),
    np.zeros((3, 4), dtype=np.int64),
    np.zeros((2, 3), dtype=EVENT_DTYPE),
    [(0, 0, 0, 1)],
])
def test_check_events_rejects_other_layouts(bad):
    with pytest.raises(ShapeError, match="EVENT_DTYPE"):
        check_events(bad, what="frame 7")


def test_check_events_prefixes_what():
    ev = pack_events([2, 1], [0, 0], [0, 0], [1, 1])
    with pytest.raises(SourceError, match=r"^packet 12: "):
        check_events(ev, what="packet 12")


# ---------------------------------------------------------------------------------------------- EventPacket
def test_event_packet_holds_its_range(make_events):
    ev = make_events(100, t0_us=1000)
    pkt = EventPacket(ev, 1000, int(ev["t"][-1]) + 1, 12.5, (346, 260))
    assert len(pkt) == 100
    assert pkt.t_start_us == 1000 and pkt.t_end_us == int(ev["t"][-1]) + 1
    assert pkt.sensor_size == (346, 260) and pkt.host_time_s == 12.5
    with pytest.raises(AttributeError):
        pkt.t_end_us = 5  # frozen


@pytest.mark.parametrize("t0, t1", [(0, 0), (100, 100), (100, 200)])
def test_empty_event_packet_is_legal(t0, t1):
    pkt = EventPacket(empty_events(), t0, t1, 0.0)
    assert len(pkt) == 0
    assert pkt.sensor_size is None


@pytest.mark.parametrize("events", [
    np.zeros(4, dtype=[("t", "<i4"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")]),
    np.zeros(4, dtype=np.int64),
    np.zeros(4, dtype=[("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")]),  # same fields, other order
])
def test_event_packet_rejects_wrong_dtype(events):
    with pytest.raises(ShapeError, match="EVENT_DTYPE"):
        EventPacket(events, 0, 10, 0.0)


@pytest.mark.parametrize("t0, t1", [(10, 9), (0, -1), (1_000_000, 0)])
def test_event_packet_rejects_reversed_range(t0, t1):
    with pytest.raises(SourceError, match=rf"reversed.*\[{t0}, {t1}\)"):
        EventPacket(empty_events(), t0, t1, 0.0)


# ---------------------------------------------------------------------------- livenight.checks (plausibility)
def test_time_spikes_drop_excursions_that_come_back_and_keep_real_gaps():
    from livenight.checks import time_spikes

    # a corrupt time word: 3 events 9 s ahead, then back
    t = np.array([0, 10, 20, 9_000_000, 9_000_001, 9_000_002, 30, 40])
    keep, n = time_spikes(t)
    assert n == 1 and keep.tolist() == [True, True, True, False, False, False, True, True]
    # one event far behind, then back
    keep, n = time_spikes(np.array([5_000_000, 5_000_010, 7, 5_000_020]))
    assert n == 1 and keep.tolist() == [True, True, False, True]
    # a real pause of the scene: time jumps and stays -> nothing dropped
    assert time_spikes(np.array([0, 10, 3_000_000, 3_000_010, 3_000_020])) == (None, 0)
    # small back-steps (EVT3 TIME_LOW) are not spikes
    assert time_spikes(np.array([0, 4_000, 100, 5_000, 9_000])) == (None, 0)


def test_far_jumps_count_forward_steps_only():
    from livenight.checks import far_jumps

    assert far_jumps(np.array([0, 1, 20_000_001, 20_000_002, 5, 50_000_000])) == (2, 2)
    assert far_jumps(np.array([0, 1, 2])) == (0, None)


def test_input_audit_keeps_a_few_bad_items_and_refuses_garbage():
    import warnings

    from livenight.checks import InputAudit, InputWarning

    audit = InputAudit("f.raw", "words", "EVT3", (640, 480))
    audit.items, audit.events = 100_000, 80_000
    audit.add("reserved", 3, "byte 4711")
    audit.add("outside", 2, "byte 99")
    audit.add("reserved", 1, "byte 5000")  # the first place is kept
    audit.check(final=True)  # 5 of 100,000: kept
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audit.warn()
        audit.warn()  # once only
    assert len(caught) == 1 and caught[0].category is InputWarning
    assert str(caught[0].message) == ("f.raw: skipped 4 words of reserved types (first at byte 4711); dropped 2 events "
                                      "outside the 640x480 sensor (first at byte 99); kept 80000 events")
    garbage = InputAudit("g.raw", "words", "EVT3", (640, 480))
    garbage.items = 5000
    garbage.add("reserved", 251)  # just over 5 %
    with pytest.raises(SourceError, match=r"g.raw: the payload does not decode as EVT3: skipped 251 words"):
        garbage.check()
    small = InputAudit("s.raw", "words", "EVT3")
    small.items = 100
    small.add("reserved", 20)
    small.check()  # too few words to judge mid-file
    with pytest.raises(SourceError):
        small.check(final=True)  # at the end of a small file: judged
    with pytest.raises(SourceError, match="holds no events"):
        InputAudit("e.dat", "records", "DAT").require_events()


def test_input_audit_judges_damaged_packets_by_their_share():
    from livenight.checks import InputAudit

    audit = InputAudit("a.aedat4", "events and packets", "aedat4")
    audit.items, audit.packets = 1_000_000, 700
    audit.add("packets", 2)
    audit.check(final=True)  # 2 of 700 packets: kept
    audit.add("packets", 40)
    audit.check()  # 6 %: mid-stream only a majority of damaged packets is a verdict (nothing of them leaks)
    with pytest.raises(SourceError, match="skipped 42 corrupt packets"):
        audit.check(final=True)
    audit.packets, audit.counts["packets"] = 100, 30
    with pytest.raises(SourceError):
        audit.check()
