"""Cutting the stream into windows (style.md §4 rules 6 and 8): integer bounds, exact slices, live skipping."""

from __future__ import annotations

import numpy as np
import pytest

from livenight.events import EVENT_DTYPE
from livenight.events import make_events as pack_events
from livenight.ring import EventRing
from livenight.windowing import CountWindows, RledWindows, TimeWindows, Windower


def _packets(n_total: int, max_size: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    out, a = [], 0
    while a < n_total:
        b = min(n_total, a + int(rng.integers(1, max_size + 1)))
        out.append((a, b))
        a = b
    return out


def _feed(windower: Windower, ref: np.ndarray, packets) -> list:
    """Push packet by packet (each covering up to the next packet's first timestamp) and poll after each."""
    t = ref["t"]
    out = []
    for a, b in packets:
        t_end = int(t[b]) if b < len(ref) else int(t[-1]) + 1
        windower.ring.push(ref[a:b], t_end_us=t_end)
        out += windower.poll()
    return out


def _regular(t_us) -> np.ndarray:
    t_us = np.asarray(t_us, dtype=np.int64)
    n = t_us.shape[0]
    return pack_events(t_us, np.arange(n) % 346, np.arange(n) % 260, np.arange(n) % 2)


# ---------------------------------------------------------------------------------------------- policies
@pytest.mark.parametrize("kwargs", [dict(window_us=0), dict(stride_us=0), dict(window_us=-5), dict(stride_us=-1)])
def test_time_windows_reject_non_positive(kwargs):
    with pytest.raises(ValueError, match="positive"):
        TimeWindows(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(count=0), dict(count=-3), dict(count=10, stride=0), dict(stride=-1)])
def test_count_windows_reject_non_positive(kwargs):
    with pytest.raises(ValueError, match="positive"):
        CountWindows(**kwargs)


@pytest.mark.parametrize("shape", [(5,), (5, 3), (2, 2, 2)])
def test_rled_windows_reject_bad_index_shape(shape):
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        RledWindows(np.zeros(shape, dtype=np.int64))


@pytest.mark.parametrize("n, skip_last, length", [(10, True, 9), (10, False, 10), (1, True, 0), (0, True, 0)])
def test_rled_windows_length(n, skip_last, length):
    assert len(RledWindows(np.zeros((n, 2), dtype=np.int64), skip_last=skip_last)) == length


def test_count_windows_step():
    assert CountWindows(1000).step == 1000
    assert CountWindows(1000, 250).step == 250


# ---------------------------------------------------------------------------------------------- drift
def test_time_window_bounds_are_exact_for_a_million_windows():
    origin = 1_700_000_000_123_457  # an epoch in µs: float64 seconds cannot hold it to the µs
    p = TimeWindows(window_us=1000, stride_us=333)
    n = 10**6 + 1
    got = np.array([p.bounds(k, origin) for k in range(n)], dtype=np.int64)
    k = np.arange(n, dtype=np.int64)
    ref0 = origin + k * 333  # integer reference
    assert np.array_equal(got[:, 0], ref0)
    assert np.array_equal(got[:, 1], ref0 + 1000)
    t0, t1 = p.bounds(10**6, origin)
    assert type(t0) is int and type(t1) is int
    assert (t0, t1) == (origin + 333_000_000, origin + 333_001_000)


def test_an_accumulating_float_clock_would_drift():
    """Why bounds are computed, not accumulated: summing a float stride goes wrong within 10^6 windows."""
    n = 10**6
    k = np.arange(1, n + 1, dtype=np.int64)
    t_s = np.cumsum(np.full(n, 333e-6))  # t += stride, in float seconds
    naive_us = (t_s * 1e6).astype(np.int64)
    assert np.count_nonzero(naive_us != k * 333) > 1000
    p = TimeWindows(window_us=333, stride_us=333)
    assert p.bounds(n, 0)[0] == n * 333 == int(k[-1] * 333)


def test_live_windower_reaches_window_one_million_without_drift():
    origin = 1_700_000_000_123_457
    p = TimeWindows(window_us=1000, stride_us=333)
    ring = EventRing(16)
    w = Windower(p, ring, live=True)
    ring.push(_regular([origin]), t_end_us=origin + 1)
    assert w.poll() == []
    far = origin + 10**6 * 333
    ring.push(_regular([far + 500]), t_end_us=far + 1000)
    (win,) = w.poll()
    assert w.origin_us == origin
    assert (win.index, win.t0_us, win.t1_us) == (10**6, far, far + 1000)
    # a 333 s silence is a time jump: its empty windows are not "skipped" frames, and the state starts again
    assert win.skipped == w.skipped_windows <= 3 and w.gap_jumps == 1 and win.reset
    assert win.events["t"].tolist() == [far + 500]


# ---------------------------------------------------------------------------------------------- offline time windows
@pytest.mark.parametrize("window_us, origin_shift", [
    (10_000, None),
    (7_777, None),
    (40_000, None),
    (10_000, -3_333),  # explicit origin before the first event
    (10_000, 12_345),  # explicit origin after the first event: earlier events belong to no window
])
def test_non_overlapping_time_windows_partition_the_stream(make_events, window_us, origin_shift):
    ref = make_events(200_000, rate_ev_per_s=2e5, seed=window_us, t0_us=5_000_000)
    t = ref["t"]
    origin = None if origin_shift is None else int(t[0]) + origin_shift
    max_window = int(np.max(np.diff(np.searchsorted(t, np.arange(t[0], t[-1] + window_us, window_us)))))
    ring = EventRing(2 * max_window + 5000)  # small enough to wrap many times
    w = Windower(TimeWindows(window_us, window_us, origin), ring)
    wins = _feed(w, ref, _packets(len(ref), 4000, seed=window_us))
    o = int(t[0]) if origin is None else origin
    n = (int(t[-1]) + 1 - o - window_us) // window_us + 1
    assert len(wins) == n == w.expected_windows(int(t[-1]) + 1)
    assert [win.index for win in wins] == list(range(n))
    for k, win in enumerate(wins):
        assert (win.t0_us, win.t1_us) == (o + k * window_us, o + (k + 1) * window_us)
        assert win.skipped == 0
        assert win.reset == (k == 0)
    got = np.concatenate([win.events for win in wins])
    covered = (t >= o) & (t < o + n * window_us)
    assert got.dtype == EVENT_DTYPE
    assert np.array_equal(got, ref[covered])  # no loss, no duplicates, in order
    i0 = int(np.searchsorted(t, o))
    assert [win.i0 for win in wins] == [i0] + [win.i1 for win in wins[:-1]]
    assert ring.dropped_events == 0


@pytest.mark.parametrize("window_us, stride_us", [(40_000, 10_000), (30_000, 7_000), (10_000, 25_000)])
def test_overlapping_and_gapped_time_windows_hold_exactly_their_range(make_events, window_us, stride_us):
    ref = make_events(200_000, rate_ev_per_s=2e5, seed=stride_us, t0_us=123)
    t = ref["t"]
    ring = EventRing(20_000)
    w = Windower(TimeWindows(window_us, stride_us), ring)
    wins = _feed(w, ref, _packets(len(ref), 3000, seed=stride_us))
    o = int(t[0])
    n = (int(t[-1]) + 1 - o - window_us) // stride_us + 1
    assert len(wins) == n
    for k, win in enumerate(wins):
        t0, t1 = o + k * stride_us, o + k * stride_us + window_us
        assert (win.index, win.t0_us, win.t1_us) == (k, t0, t1)
        a, b = np.searchsorted(t, [t0, t1], side="left")
        assert (win.i0, win.i1) == (a, b)
        assert np.array_equal(win.events, ref[a:b])
        assert win.events.shape[0] == np.count_nonzero((t >= t0) & (t < t1)) > 0
    assert ring.dropped_events == 0


def test_time_windows_wait_for_the_producer_to_cover_their_end():
    ring = EventRing(1000)
    w = Windower(TimeWindows(10_000, 10_000, origin_us=0), ring)
    assert w.poll() == []  # nothing pushed
    ring.push(_regular(np.arange(0, 9_000, 100)), t_end_us=9_999)
    assert w.poll() == []  # [0, 10000) is not covered yet
    ring.push(_regular([]), t_end_us=10_000)  # an empty packet completes it
    (win,) = w.poll()
    assert (win.index, win.t0_us, win.t1_us, win.events.shape[0]) == (0, 0, 10_000, 90)
    ring.push(_regular([]), t_end_us=39_999)
    wins = w.poll()
    assert [x.index for x in wins] == [1, 2]
    assert all(x.events.shape[0] == 0 for x in wins)  # empty windows are produced, the clock ticks
    assert w.poll() == []


# ---------------------------------------------------------------------------------------------- count windows
@pytest.mark.parametrize("count, stride", [(1000, None), (1000, 250), (1, None), (777, 333), (1000, 1000)])
def test_count_windows_are_exact(make_events, count, stride):
    ref = make_events(50_000, rate_ev_per_s=1e6, seed=count)
    p = CountWindows(count, stride)
    step = p.step
    ring = EventRing(count + 3000)
    w = Windower(p, ring)
    wins = _feed(w, ref, _packets(len(ref), 3000, seed=count + 1))
    n = (len(ref) - count) // step + 1
    assert len(wins) == n == w.expected_windows(num_events=len(ref))
    for k, win in enumerate(wins):
        a = k * step
        assert (win.index, win.i0, win.i1) == (k, a, a + count)
        assert win.events.shape[0] == count
        assert np.array_equal(win.events, ref[a:a + count])
        assert (win.t0_us, win.t1_us) == (int(ref["t"][a]), int(ref["t"][a + count - 1]) + 1)
        assert win.reset == (k == 0)
    assert ring.dropped_events == 0


@pytest.mark.parametrize("policy, capacity", [(CountWindows(1000, 3000), 1500),
                                              (TimeWindows(10_000, 30_000, origin_us=0), 12_000)],
                         ids=["count", "time"])
def test_gaps_between_windows_are_not_counted_as_drops(make_events, policy, capacity):
    """Events between two windows (stride > window) are needed by nobody: overwriting them is not a drop."""
    ref = make_events(300_000, rate_ev_per_s=1e6, seed=4)
    t = ref["t"]
    ring = EventRing(capacity)  # holds any one window plus one packet
    w = Windower(policy, ring)
    wins = _feed(w, ref, _packets(len(ref), 400, seed=4))
    assert len(wins) >= 9
    for k, win in enumerate(wins):  # every window is complete and exact: nothing it needed was lost
        if isinstance(policy, CountWindows):
            a, b = 3000 * k, 3000 * k + 1000
        else:
            a, b = np.searchsorted(t, [30_000 * k, 30_000 * k + 10_000])
        assert (win.i0, win.i1) == (a, b)
        assert np.array_equal(win.events, ref[a:b])
    assert ring.dropped_events == 0


def test_overwritten_events_a_later_overlapping_window_needs_are_drops(make_events):
    ref = make_events(1600, seed=18)
    ring = EventRing(1100)
    w = Windower(CountWindows(1000, 250), ring)
    ring.push(ref[:1000])
    (win,) = w.poll()
    assert np.array_equal(win.events, ref[:1000])
    assert ring.unreleased == 750  # window 1 starts at 250: only 0..249 are released
    ring.push(ref[1000:1600])  # overwrites 0..499
    assert ring.dropped_events == 250  # 250..499 were still needed
    wins = w.poll()
    assert [x.index for x in wins] == [1, 2]
    assert (wins[0].i0, wins[0].i1) == (250, 1250)
    assert np.array_equal(wins[0].events, ref[500:1250])  # what is left of window 1
    assert np.array_equal(wins[1].events, ref[500:1500])


# ---------------------------------------------------------------------------------------------- RLED windows
def _rled_indices(n_events: int, n_images: int, half: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.sort(rng.integers(half // 2, n_events - half // 2, size=n_images))
    idx = np.stack([np.maximum(0, centres - half), np.minimum(n_events, centres + half)], axis=1)
    return idx.astype(np.int64)


@pytest.mark.parametrize("skip_last", [True, False])
def test_rled_windows_yield_their_index_ranges(make_events, skip_last):
    ref = make_events(40_000, rate_ev_per_s=1e6, seed=7)
    idx = _rled_indices(len(ref), 15, 2000, seed=7)  # overlapping windows
    ring = EventRing(10_000)
    w = Windower(RledWindows(idx, skip_last=skip_last), ring)
    t = ref["t"]
    wins = []
    for a, b in _packets(len(ref), 1500, seed=8):
        ring.push(ref[a:b], t_end_us=int(t[b]) if b < len(ref) else int(t[-1]) + 1)
        new = w.poll()
        # a window comes exactly when the ring has reached its end index
        n_done = min(int(np.count_nonzero(idx[:, 1] <= ring.head)), len(w.policy))
        assert [x.index for x in wins + new] == list(range(n_done))
        wins += new
    expected = 14 if skip_last else 15
    assert len(wins) == expected == w.expected_windows()
    for i, win in enumerate(wins):
        a, b = idx[i]
        assert (win.index, win.i0, win.i1) == (i, a, b)
        assert np.array_equal(win.events, ref[a:b])
        assert (win.t0_us, win.t1_us) == (int(t[a]), int(t[b - 1]) + 1)
    assert ring.dropped_events == 0
    ring.push(ref[-1:], t_end_us=int(t[-1]) + 10)  # nothing beyond the last image
    assert w.poll() == []


def test_rled_skip_last_never_produces_the_last_image(make_events):
    ref = make_events(3000, seed=9)
    idx = np.array([[0, 1000], [1000, 2000], [2000, 3000]])
    ring = EventRing(4000)
    w = Windower(RledWindows(idx), ring)
    ring.push(ref)
    wins = w.poll()
    assert [x.index for x in wins] == [0, 1]
    assert np.array_equal(wins[1].events, ref[1000:2000])


# ---------------------------------------------------------------------------------------------- live mode
def test_live_time_windows_take_the_newest_and_count_the_skipped(make_events):
    ref = make_events(300_000, rate_ev_per_s=1e5, seed=10)  # about 3 s
    t = ref["t"]
    ring = EventRing(400_000)
    w = Windower(TimeWindows(10_000, 10_000, origin_us=0), ring, live=True)

    def push_until(t_end):
        a, b = np.searchsorted(t, [push_until.t, t_end])
        ring.push(ref[a:b], t_end_us=t_end)
        push_until.t = t_end
    push_until.t = 0

    push_until(1_000_000)  # 100 windows' worth
    (win,) = w.poll()
    assert (win.index, win.t0_us, win.t1_us, win.skipped) == (99, 990_000, 1_000_000, 99)
    a, b = np.searchsorted(t, [990_000, 1_000_000])
    assert np.array_equal(win.events, ref[a:b]) and b - a > 0
    assert w.skipped_windows == 99
    assert w.poll() == []
    push_until(1_250_000)
    (win,) = w.poll()
    assert (win.index, win.skipped, w.skipped_windows) == (124, 24, 123)
    a, b = np.searchsorted(t, [1_240_000, 1_250_000])
    assert np.array_equal(win.events, ref[a:b])
    push_until(1_260_000)
    (win,) = w.poll()  # only window 125 became complete
    assert (win.index, win.skipped, w.skipped_windows) == (125, 0, 123)
    push_until(1_269_999)
    assert w.poll() == []
    push_until(1_270_000)
    (win,) = w.poll()
    assert (win.index, win.skipped, w.skipped_windows) == (126, 0, 123)
    assert ring.dropped_events == 0
    assert win.reset is False


def test_live_overlapping_windows(make_events):
    ref = make_events(120_000, rate_ev_per_s=1e5, seed=14)
    t = ref["t"]
    ring = EventRing(200_000)
    w = Windower(TimeWindows(40_000, 10_000, origin_us=0), ring, live=True)
    b = int(np.searchsorted(t, 1_000_000))
    ring.push(ref[:b], t_end_us=1_000_000)
    (win,) = w.poll()
    assert (win.index, win.t0_us, win.t1_us, win.skipped) == (96, 960_000, 1_000_000, 96)
    a = int(np.searchsorted(t, 960_000))
    assert np.array_equal(win.events, ref[a:b])
    assert win.reset is True  # the first window the windower produces


def test_live_skipping_releases_what_it_skipped(make_events):
    """Skipped windows are released, so later overwrites are not counted as drops; without a poll they are."""
    ref = make_events(200_000, rate_ev_per_s=1e5, seed=15)
    half = 100_000
    t_half = int(ref["t"][half])
    for poll_between in (True, False):
        ring = EventRing(150_000)
        w = Windower(TimeWindows(10_000, 10_000, origin_us=0), ring, live=True)
        ring.push(ref[:half], t_end_us=t_half)
        if poll_between:
            (win,) = w.poll()
            assert win.skipped == win.index > 90
        ring.push(ref[half:], t_end_us=int(ref["t"][-1]) + 1)
        if poll_between:
            assert ring.dropped_events == 0  # only released (skipped) events were overwritten
        else:
            assert ring.dropped_events == 50_000


@pytest.mark.parametrize("pushed, count, skipped, index", [(10_500, 1000, 9, 9), (1000, 1000, 0, 0), (999, 1000, None, None),
                                                           (5_000, 700, 6, 6)])
def test_live_count_windows(make_events, pushed, count, skipped, index):
    ref = make_events(pushed, seed=16)
    ring = EventRing(20_000)
    w = Windower(CountWindows(count), ring, live=True)
    ring.push(ref)
    wins = w.poll()
    if skipped is None:
        assert wins == []
        return
    (win,) = wins
    assert (win.index, win.skipped, win.i0, win.i1) == (index, skipped, index * count, (index + 1) * count)
    assert np.array_equal(win.events, ref[index * count:(index + 1) * count])
    assert ring.unreleased == pushed - (index + 1) * count


def test_live_rled_windows(make_events):
    ref = make_events(10_000, seed=17)
    idx = np.array([[i * 1000, i * 1000 + 1500] for i in range(8)])
    ring = EventRing(20_000)
    w = Windower(RledWindows(idx), ring, live=True, max_backlog=0)  # 7 images with skip_last; always the newest
    ring.push(ref[:5000])  # images 0..2 end by 4500; image 3 ends at 4500 too: 0..3 complete
    (win,) = w.poll()
    assert (win.index, win.skipped) == (3, 3)
    assert np.array_equal(win.events, ref[3000:4500])
    ring.push(ref[5000:])
    (win,) = w.poll()
    assert (win.index, win.skipped, w.skipped_windows) == (6, 2, 5)  # image 7 is the skipped last one
    assert np.array_equal(win.events, ref[6000:7500])


def test_live_backlog_within_the_allowance_is_worked_off_in_order(make_events):
    """One slow frame must not cost windows: up to max_backlog waiting windows come in order, unskipped; beyond
    it the windower jumps to the newest (and counts)."""
    ref = make_events(100_000, rate_ev_per_s=1e5, seed=12)  # about 1 s
    ring = EventRing(200_000)
    w = Windower(TimeWindows(10_000, 10_000, origin_us=0), ring, live=True, max_backlog=2)
    t = ref["t"]
    b = np.searchsorted(t, 30_000)
    ring.push(ref[:b], t_end_us=30_000)  # windows 0, 1, 2 complete: a backlog of 2 behind the first
    assert [(x.index, x.skipped) for x in w.poll()] == [(0, 0), (1, 0), (2, 0)]
    a, b = b, np.searchsorted(t, 70_000)
    ring.push(ref[a:b], t_end_us=70_000)  # windows 3..6: 3 waiting behind window 3, more than allowed
    assert [(x.index, x.skipped) for x in w.poll()] == [(6, 3)]
    assert w.skipped_windows == 3
    with pytest.raises(ValueError, match="max_backlog must be >= 0"):
        Windower(TimeWindows(10_000, 10_000), ring, live=True, max_backlog=-1)


# ---------------------------------------------------------------------------------------------- resets
def _gap_stream(gap_us: int) -> np.ndarray:
    first = np.arange(0, 100_000, 100)  # one event every 100 µs, last at 99 900
    second = first[-1] + gap_us + np.arange(0, 100_000, 100)
    return _regular(np.concatenate([first, second]))


@pytest.mark.parametrize("gap_us, max_gap_us, reset_after_gap", [
    (50_001, 50_000, True),
    (50_000, 50_000, False),  # equal is not longer
    (30_000, 50_000, False),
    (5_000, 1_000, True),
    (200_000, 50_000, True),
    (1_000_001, None, True),  # default max_gap_us = 1 s
    (1_000_000, None, False),
    (999_999, None, False),
])
def test_a_long_gap_resets_the_next_window_only(gap_us, max_gap_us, reset_after_gap):
    ref = _gap_stream(gap_us)
    ring = EventRing(4096)
    kw = {} if max_gap_us is None else {"max_gap_us": max_gap_us}
    w = Windower(TimeWindows(10_000, 10_000, origin_us=0), ring, **kw)
    wins = _feed(w, ref, _packets(len(ref), 300, seed=gap_us))
    k_after = (99_900 + gap_us) // 10_000  # the window holding the first event after the gap
    by_index = {win.index: win for win in wins}
    assert by_index[k_after].events["t"][0] == 99_900 + gap_us
    # an empty stretch longer than the gap limit is jumped over (one reset), not produced window by window
    jumped = k_after > 10 and (99_900 + gap_us) - 100_000 > w.max_gap_us  # empty from window 10 to the next event
    produced = sorted(by_index)
    if jumped:
        assert produced == list(range(10)) + list(range(k_after, produced[-1] + 1)) and w.gap_jumps == 1
    else:
        assert produced == list(range(produced[-1] + 1)) and w.gap_jumps == 0
    expected = {0, k_after} if reset_after_gap else {0}
    assert {win.index for win in wins if win.reset} == expected
    assert wins[0].reset is True  # the first window always starts from scratch


@pytest.mark.parametrize("policy", [CountWindows(100), TimeWindows(100_000, 100_000, origin_us=0)],
                         ids=["count", "time"])
def test_a_long_gap_inside_a_window_resets_once(policy):
    """A gap longer than max_gap_us must reset the state even when one window spans it (and only once)."""
    t = np.concatenate([np.arange(1150) * 100, 114_900 + 50_000 + np.arange(2000) * 100])  # a 50 ms gap
    ref = _regular(t)
    ring = EventRing(4096)
    w = Windower(policy, ring, max_gap_us=20_000)
    wins = _feed(w, ref, _packets(len(ref), 30, seed=3))
    g = next(k for k, win in enumerate(wins) if win.events.size and win.events["t"][-1] >= 164_900)
    assert g > 0 and wins[g].events["t"][0] <= 114_900  # the gap lies inside window g
    resets = [win.index for win in wins if win.reset]
    assert resets[0] == 0
    assert resets[1:] in ([g], [g + 1]), resets  # the window holding the gap, or the one after it


def test_sensor_size_change_sets_reset():
    ring = EventRing(10_000)
    w = Windower(TimeWindows(1000, 1000, origin_us=0), ring)
    ref = _regular(np.arange(0, 20_000, 10))
    t = ref["t"]
    pushed = [0]

    def push_until(t_end, size):
        w.notice_sensor_size(size)
        a, b = np.searchsorted(t, [pushed[0], t_end])
        ring.push(ref[a:b], t_end_us=t_end)
        pushed[0] = t_end
        return [(win.index, win.reset) for win in w.poll()]

    assert push_until(2_000, (346, 260)) == [(0, True), (1, False)]
    assert push_until(4_000, (346, 260)) == [(2, False), (3, False)]
    assert push_until(5_000, None) == [(4, False)]  # no size: nothing to compare
    assert push_until(7_000, [640, 480]) == [(5, True), (6, False)]  # a list is a size too
    assert push_until(8_000, (640, 480)) == [(7, False)]  # the same size as a tuple
    assert push_until(9_000, None) == [(8, False)]
    assert push_until(10_000, (346, 260)) == [(9, True)]
    w.request_reset()
    assert push_until(12_000, (346, 260)) == [(10, True), (11, False)]
    # a change noticed while no window completes is kept for the next one
    assert push_until(12_500, (1280, 720)) == []
    assert push_until(14_000, (1280, 720)) == [(12, True), (13, False)]


@pytest.mark.parametrize("live", [False, True])
def test_a_corrupt_time_jump_costs_one_reset_not_a_window_per_stride(live):
    """A timestamp 4,078 s ahead (a flipped bit) must not enumerate 100,000 empty windows, offline or live, and
    live mode must not count them as skipped: the windower jumps to the window holding the next event."""
    jump_us = 4_078_000_000
    t = np.concatenate([np.arange(0, 200_000, 100), jump_us + np.arange(0, 200_000, 100)])
    ref = _regular(t)
    ring = EventRing(1 << 14)
    w = Windower(TimeWindows(40_000, 40_000, origin_us=0), ring, live=live)
    wins = _feed(w, ref, _packets(len(ref), 500, seed=3))
    assert len(wins) <= 12 and w.gap_jumps == 1
    after = [win for win in wins if win.t0_us >= jump_us - 40_000 and win.events.size]
    assert after and after[0].events["t"][0] == jump_us and after[0].reset  # lands on the event, state reset
    assert sum(win.reset for win in after) == 1
    assert w.skipped_windows < 10  # live skipping counts real backlog, never the jump
