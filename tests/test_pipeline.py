"""The pipeline end to end on in-memory packets: offline is lossless and ordered, live skips instead of queueing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from livenight.drivers.pacing import paced
from livenight.engines.base import EngineBase, EngineInfo
from livenight.events import EventPacket, make_events
from livenight.pipeline import Pipeline
from livenight.sinks import NullSink
from livenight.windowing import CountWindows, TimeWindows


class CountingEngine(EngineBase):
    """Records what it was given; optionally slow, to force the live path to skip windows."""

    def __init__(self, size=(32, 24), delay_s=0.0):
        self.info = EngineInfo("counting", "numpy", "cpu", "float32", size, "events")
        self.delay_s = delay_s
        self.windows = []
        self.resets = 0
        self._out = np.zeros(size[::-1], np.float32)

    def _reset_impl(self):
        self.resets += 1

    def _step_impl(self, window):
        self.windows.append(window)
        if self.delay_s:
            time.sleep(self.delay_s)
        self._out.fill(min(1.0, window.events.size / 1000))
        return self._out


def _packets(n_events=60_000, span_us=600_000, packet=1_000, seed=0, size=(32, 24)):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, span_us, n_events))
    ev = make_events(t, rng.integers(0, size[0], n_events), rng.integers(0, size[1], n_events),
                     rng.integers(0, 2, n_events))
    # cut near every `packet` events, moved forward so equal timestamps stay in one packet (packets tile time)
    cuts = np.unique(np.searchsorted(t, t[np.arange(packet, n_events, packet)], side="left"))
    bounds = [0, *[int(c) for c in cuts if c > 0], n_events]
    out, start = [], int(t[0])
    for a, b in zip(bounds[:-1], bounds[1:]):
        end = int(t[b]) if b < n_events else int(t[-1]) + 1
        out.append(EventPacket(ev[a:b], start, end, time.monotonic(), size))
        start = end
    return ev, out


def test_offline_time_windows_see_every_event_once_in_order():
    ev, packets = _packets()
    eng = CountingEngine()
    with eng:
        stats = Pipeline(packets, (32, 24), eng, TimeWindows(40_000, 40_000), [NullSink()]).run()
    got = np.concatenate([w.events for w in eng.windows])
    complete = ev[ev["t"] < int(ev["t"][0]) + len(eng.windows) * 40_000]
    assert len(eng.windows) == (int(ev["t"][-1]) + 1 - int(ev["t"][0]) - 40_000) // 40_000 + 1
    np.testing.assert_array_equal(got, complete)
    assert stats.frames == len(eng.windows) and stats.skipped_windows == 0 and stats.dropped_events == 0
    assert [w.index for w in eng.windows] == list(range(len(eng.windows)))


def test_offline_ring_grows_instead_of_dropping_for_windows_larger_than_capacity():
    ev, packets = _packets(n_events=20_000, packet=500)
    eng = CountingEngine()
    with eng:
        stats = Pipeline(packets, (32, 24), eng, CountWindows(5_000), ring_capacity=1_000).run()
    assert stats.dropped_events == 0 and len(eng.windows) == 4
    np.testing.assert_array_equal(np.concatenate([w.events for w in eng.windows]), ev)


def test_max_frames_stops_early():
    _, packets = _packets()
    with CountingEngine() as eng:
        stats = Pipeline(packets, (32, 24), eng, TimeWindows(10_000, 10_000), max_frames=7).run()
    assert stats.frames == 7


def test_live_mode_skips_to_newest_window_when_engine_is_slow():
    _, packets = _packets(span_us=600_000)
    eng = CountingEngine(delay_s=0.05)  # 50 ms per 10 ms window: 5x slower than real time
    with eng:
        stats = Pipeline(paced(packets, speed=1.0, slice_us=2_000), (32, 24), eng, TimeWindows(10_000, 10_000),
                         live=True).run()
    produced = len(eng.windows)
    total = 60  # 600 ms / 10 ms
    assert stats.skipped_windows > 0
    assert produced + stats.skipped_windows <= total
    assert produced < total / 2
    idx = [w.index for w in eng.windows]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert sum(w.skipped for w in eng.windows) == stats.skipped_windows
    assert stats.dropped_events == 0


class HiccupEngine(CountingEngine):
    """Fast, except one slow frame (the kind a page fault or a busy neighbour causes)."""

    def _step_impl(self, window):
        self.delay_s = 0.03 if len(self.windows) == 5 else 0.0
        return super()._step_impl(window)


def test_live_mode_works_off_a_hiccup_but_a_slow_engine_stays_on_the_newest_window():
    # one 30 ms frame among fast ones, 20 ms windows: the 2 windows that arrived meanwhile are reconstructed late,
    # not skipped
    _, packets = _packets(span_us=600_000)
    eng = HiccupEngine()
    with eng:
        pipe = Pipeline(paced(packets, speed=1.0, slice_us=2_000), (32, 24), eng, TimeWindows(20_000, 20_000),
                        live=True)
        stats = pipe.run()
    assert stats.skipped_windows == 0 and len(eng.windows) >= 28
    assert pipe.windower.max_backlog == 2
    # an engine slower than real time on average: no backlog allowance, so latency stays one window
    _, packets = _packets(span_us=600_000)
    slow = CountingEngine(delay_s=0.03)
    with slow:
        pipe = Pipeline(paced(packets, speed=1.0, slice_us=2_000), (32, 24), slow, TimeWindows(20_000, 20_000),
                        live=True)
        stats = pipe.run()
    assert stats.skipped_windows > 0 and pipe.windower.max_backlog == 0


def test_live_mode_producer_error_is_raised_after_shutdown():
    _, packets = _packets()

    def broken():
        yield from packets[:5]
        raise OSError("camera unplugged")

    with CountingEngine() as eng:
        pipe = Pipeline(broken(), (32, 24), eng, TimeWindows(10_000, 10_000), live=True)
        with pytest.raises(OSError, match="unplugged"):
            pipe.run()
    assert pipe.stop_event.is_set()


def test_a_recording_shorter_than_one_window_still_gives_one_partial_frame():
    ev, packets = _packets(n_events=5_000, span_us=8_000, packet=1_000)
    with CountingEngine() as eng:
        stats = Pipeline(packets, (32, 24), eng, TimeWindows(40_000, 40_000)).run()
    assert stats.frames == 1
    np.testing.assert_array_equal(eng.windows[0].events, ev)
    assert eng.windows[0].t0_us == int(ev["t"][0]) and eng.windows[0].t1_us == int(ev["t"][0]) + 40_000


def _with_host_times(packets, base_s):
    """The same packets, each stamped with its own host arrival time base_s + k ms."""
    return [EventPacket(p.events, p.t_start_us, p.t_end_us, base_s + 1e-3 * k, p.sensor_size)
            for k, p in enumerate(packets)]


@pytest.mark.parametrize("policy", [TimeWindows(10_000, 10_000), CountWindows(2_500)])
def test_live_frames_carry_the_arrival_of_the_last_event_of_their_window(policy):
    # GIVEN packets whose host arrival times are known (1 ms apart) and a live pipeline
    _, packets = _packets(span_us=300_000)
    packets = _with_host_times(packets, time.monotonic() - 5.0)
    ends = np.cumsum([len(p) for p in packets])  # global index one past each packet's last event
    frames = []
    with CountingEngine() as eng:
        stats = Pipeline(packets, (32, 24), eng, policy, live=True, on_frame=frames.append).run()
    # THEN each frame's host time is that of the packet holding its window's last event (not the newest packet)
    assert frames and len(frames) == len(eng.windows)
    for w, f in zip(eng.windows, frames):
        owner = int(np.searchsorted(ends, w.i1 - 1, side="right"))
        assert f.host_time_s == packets[owner].host_time_s
    # and the summary reports one latency per frame, from that arrival
    assert len(stats.latency_s) == stats.frames == len(frames)
    assert min(stats.latency_s) >= 5.0 - 1e-3 * len(packets) - 1e-6
    assert "latency p50" in stats.summary()


def test_unpaced_replays_report_throughput_not_latency():
    _, packets = _packets(span_us=200_000)
    frames = []
    with CountingEngine() as eng:
        stats = Pipeline(_with_host_times(packets, time.monotonic() - 8.0), (32, 24), eng,
                         TimeWindows(10_000, 10_000), on_frame=frames.append).run()
    assert stats.frames == len(frames) == 20
    assert all(f.host_time_s == 0.0 for f in frames) and len(stats.latency_s) == 0
    assert "latency" not in stats.summary() and "frames/s" in stats.summary()


def _gap_packets(gap_us: int, size=(32, 24)):
    """Two bursts of events 300 ms long, separated by ``gap_us`` of silence; packets tile time."""
    rng = np.random.default_rng(4)
    t = np.concatenate([np.sort(rng.integers(0, 300_000, 3000)), 300_000 + gap_us + np.sort(rng.integers(0, 300_000, 3000))])
    ev = make_events(t, rng.integers(0, size[0], t.size), rng.integers(0, size[1], t.size), rng.integers(0, 2, t.size))
    out = []
    for a in range(0, t.size, 500):
        b = min(a + 500, t.size)
        end = int(t[b]) if b < t.size else int(t[-1]) + 1
        out.append(EventPacket(ev[a:b], int(t[a]) if a == 0 else out[-1].t_end_us, end, time.monotonic(), size))
    return ev, out


class StateEngine(CountingEngine):
    """Keeps a recurrent 'state' (events seen since the last reset) to show that a reset reaches the engine."""

    def __init__(self):
        super().__init__()
        self.state = 0
        self.state_before = []

    def _reset_impl(self):
        super()._reset_impl()
        self.state = 0

    def _step_impl(self, window):
        self.state_before.append(self.state)
        self.state += window.events.size
        return super()._step_impl(window)


@pytest.mark.parametrize("live", [False, True])
def test_a_time_gap_resets_the_engine_state(live):
    # GIVEN a 5 s silence between two bursts, and a 1 s gap limit
    ev, packets = _gap_packets(5_000_000)
    eng = StateEngine()
    with eng:
        resets_at_open = eng.resets
        source = paced(packets, speed=50.0) if live else packets
        stats = Pipeline(source, (32, 24), eng, TimeWindows(40_000, 40_000), live=live, max_gap_us=1_000_000).run()
    # THEN the windows after the gap carry reset=True, the engine was reset for each of them (state zero when the
    # first window with events after the gap arrived), and nothing before the gap was reset
    flagged = [k for k, w in enumerate(eng.windows) if w.reset]
    first_after = next(k for k, w in enumerate(eng.windows) if w.t0_us >= 5_000_000 and w.events.size)
    assert flagged[0] == 0 and all(eng.windows[k].t0_us >= 300_000 for k in flagged[1:])
    assert first_after in flagged
    assert eng.resets - resets_at_open == len(flagged) == stats.resets
    assert eng.state_before[first_after] == 0 and eng.state_before[flagged[1] - 1] > 0
    # and offline, no window was made for the silent 5 s (125 windows of nothing); live, the paced clock runs on
    # through the silence, so its windows are made (a dark scene still shows its decay)
    if not live:
        assert len(eng.windows) + stats.skipped_windows < 20


def test_a_sensor_size_change_resets_the_engine_state():
    ev, packets = _gap_packets(0)
    half = len(packets) // 2
    changed = packets[:half] + [EventPacket(p.events, p.t_start_us, p.t_end_us, p.host_time_s, (32, 25))
                                for p in packets[half:]]
    eng = StateEngine()
    with eng:
        Pipeline(changed, (32, 24), eng, TimeWindows(40_000, 40_000)).run()
    flagged = [k for k, w in enumerate(eng.windows) if w.reset]
    assert len(flagged) == 2 and flagged[0] == 0
    assert eng.state_before[flagged[1]] == 0
    assert eng.windows[flagged[1]].t1_us > changed[half].t_start_us >= eng.windows[flagged[1] - 1].t0_us
