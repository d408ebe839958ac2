"""The bounded SPSC event ring (style.md §4 rule 6): drop the oldest, count the drops, never block."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from livenight.errors import SourceError
from livenight.events import EVENT_DTYPE
from livenight.ring import EventRing

THREAD_DEADLINE_S = 15.0


def _packets(n_total: int, max_size: int, seed: int, min_size: int = 1) -> list[tuple[int, int]]:
    """Random split of range(n_total) into [a, b) packets."""
    rng = np.random.default_rng(seed)
    out, a = [], 0
    while a < n_total:
        b = min(n_total, a + int(rng.integers(min_size, max_size + 1)))
        out.append((a, b))
        a = b
    return out


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == EVENT_DTYPE
    assert got.shape == want.shape
    assert np.array_equal(got, want)


# ---------------------------------------------------------------------------------------------- basics
@pytest.mark.parametrize("cap", [0, -1])
def test_capacity_must_be_positive(cap):
    with pytest.raises(ValueError, match=str(cap)):
        EventRing(cap)


def test_empty_ring():
    ring = EventRing(16)
    assert ring.head == 0 and ring.oldest == 0 and ring.unreleased == 0
    assert ring.dropped_events == 0 and ring.backlog_us == 0
    assert ring.first_t_us is None and ring.t_end_us is None
    assert ring.read_index(0, 10).shape == (0,)
    ev, i0, i1 = ring.read_time(0, 10**9)
    assert ev.shape == (0,) and (i0, i1) == (0, 0)


def test_t_end_follows_the_producer(make_events):
    ring = EventRing(100)
    ev = make_events(10, rate_ev_per_s=1e4, t0_us=500)
    ring.push(ev)
    assert ring.t_end_us == int(ev["t"][-1]) + 1  # default: just past the newest event
    ring.push(ev[:0], t_end_us=10**7)  # an empty packet still moves the clock
    assert ring.t_end_us == 10**7 and ring.head == 10
    ring.push(ev[:0])  # an empty packet without a range changes nothing
    assert ring.t_end_us == 10**7
    later = make_events(5, rate_ev_per_s=1e4, t0_us=2 * 10**7)
    ring.push(later, t_end_us=3 * 10**7)
    assert ring.t_end_us == 3 * 10**7 and ring.head == 15


def test_unreleased_backlog_and_first_t(make_events):
    ring = EventRing(100)
    ev = make_events(80, rate_ev_per_s=1e4, t0_us=1000)
    ring.push(ev)
    assert ring.unreleased == 80
    assert ring.first_t_us == int(ev["t"][0]) == 1000
    assert ring.backlog_us == int(ev["t"][79] - ev["t"][0])
    ring.release(30)
    assert ring.unreleased == 50
    assert ring.backlog_us == int(ev["t"][79] - ev["t"][30])
    assert ring.first_t_us == 1000  # released events stay readable until overwritten
    ring.release(10)  # release never moves backwards
    assert ring.unreleased == 50
    ring.release(80)
    assert ring.unreleased == 0 and ring.backlog_us == 0
    more = make_events(60, rate_ev_per_s=1e4, seed=1, t0_us=int(ev["t"][-1]) + 5)
    ring.push(more)
    assert ring.unreleased == 60
    assert ring.backlog_us == int(more["t"][-1] - more["t"][0])
    assert ring.oldest == 40 and ring.first_t_us == int(ev["t"][40])
    assert ring.dropped_events == 0  # only released events were overwritten


# ---------------------------------------------------------------------------------------------- order
def test_pushing_an_older_packet_raises_and_changes_nothing(make_events):
    ring = EventRing(64)
    ev = make_events(20, rate_ev_per_s=1e4, t0_us=1000)
    ring.push(ev, t_end_us=int(ev["t"][-1]) + 10)
    last = int(ev["t"][-1])
    older = make_events(5, rate_ev_per_s=1e4, t0_us=last - 1)
    with pytest.raises(SourceError) as err:
        ring.push(older, t_end_us=10**9)
    msg = str(err.value)
    assert f"t={last - 1}" in msg and f"t={last}" in msg and "before" in msg
    assert ring.head == 20 and ring.t_end_us == last + 10 and ring.dropped_events == 0
    _assert_same(ring.read_index(0, 20), ev)
    # a packet starting exactly at the previous last timestamp is in order
    same = make_events(5, rate_ev_per_s=1e4, t0_us=last)
    ring.push(same)
    assert ring.head == 25
    _assert_same(ring.read_index(20, 25), same)


# ---------------------------------------------------------------------------------------------- drops
@pytest.mark.parametrize("capacity, sizes", [
    (100, [100]),
    (100, [60, 40]),
    (100, [60, 41]),
    (100, [30, 30, 30, 30, 30]),
    (100, [99, 1, 1, 1]),
    (7, [3] * 40),
    (1000, [333] * 10),
    (1024, [1000, 24, 1000, 1, 2047]),
    (1, [1, 1, 1, 5]),
])
def test_exact_drop_count_without_a_consumer(make_events, capacity, sizes):
    total = sum(sizes)
    ref = make_events(total, rate_ev_per_s=1e5)
    ring = EventRing(capacity)
    pushed = 0
    for s in sizes:
        ring.push(ref[pushed:pushed + s])
        pushed += s
        assert ring.dropped_events == max(0, pushed - capacity)
        assert ring.head == pushed
    kept = min(total, capacity)
    assert ring.oldest == total - kept
    assert ring.unreleased == kept
    # the oldest were dropped: what remains is exactly the newest `capacity` events, in order
    _assert_same(ring.read_index(0, total), ref[total - kept:])
    _assert_same(ring.read_index(total - kept, total), ref[total - kept:])
    assert ring.first_t_us == int(ref["t"][total - kept])
    assert ring.backlog_us == int(ref["t"][-1] - ref["t"][total - kept])


@pytest.mark.parametrize("capacity, before, released, n, dropped", [
    (1000, 0, 0, 2500, 1500),  # oversized into an empty ring: oldest 1500 never stored
    (1000, 300, 0, 2500, 1800),  # ... and the 300 unreleased stored events are lost too
    (1000, 300, 300, 2500, 1500),  # released ones are not counted
    (1000, 300, 100, 1001, 201),
    (1000, 0, 0, 1000, 0),  # exactly capacity is not oversized
    (1, 0, 0, 10, 9),
])
def test_oversized_packet_keeps_the_newest(make_events, capacity, before, released, n, dropped):
    ref = make_events(before + n, rate_ev_per_s=1e5, seed=3)
    ring = EventRing(capacity)
    ring.push(ref[:before])
    ring.release(released)
    ring.push(ref[before:])
    assert ring.dropped_events == dropped
    assert ring.head == before + n
    assert ring.oldest == before + n - capacity
    _assert_same(ring.read_index(0, before + n), ref[-capacity:])
    assert ring.first_t_us == int(ref["t"][-capacity])
    assert ring.t_end_us == int(ref["t"][-1]) + 1


@pytest.mark.parametrize("capacity, first, release_at, second, dropped", [
    (100, 100, 60, 80, 20),
    (100, 100, 100, 100, 0),
    (100, 100, 0, 50, 50),
    (100, 40, 10, 70, 0),
    (100, 40, 5, 70, 5),
    (100, 50, 50, 120, 20),  # oversized: 20 never stored; the 50 released ones are free
    (100, 100, 100, 250, 150),
    (100, 100, 99, 1, 0),
    (100, 100, 1, 2, 1),
])
def test_overwriting_released_events_is_not_a_drop(make_events, capacity, first, release_at, second, dropped):
    ref = make_events(first + second, rate_ev_per_s=1e5, seed=5)
    ring = EventRing(capacity)
    ring.push(ref[:first])
    ring.release(release_at)
    ring.push(ref[first:])
    assert ring.dropped_events == dropped
    keep = min(capacity, first + second)
    _assert_same(ring.read_index(0, first + second), ref[first + second - keep:])


def _regular(n: int, t0: int = 0, dt: int = 10) -> np.ndarray:
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["t"] = t0 + dt * np.arange(n)
    ev["x"] = np.arange(n) % 346
    ev["p"] = np.arange(n) % 2
    return ev


def test_release_may_lie_ahead_of_head():
    ref = _regular(270)
    ring = EventRing(100)
    ring.push(ref[:50])
    ring.release(120)  # the consumer will not need events 0..119, pushed or not
    assert ring.unreleased == 0 and ring.backlog_us == 0
    ring.push(ref[50:110])  # overwrites 0..9
    ring.push(ref[110:170])  # overwrites 10..69
    assert ring.dropped_events == 0
    assert ring.unreleased == 50  # 120..169
    assert ring.backlog_us == int(ref["t"][169] - ref["t"][120])
    ring.push(ref[170:270])  # overwrites 70..169: 120..169 were still needed
    assert ring.dropped_events == 50
    _assert_same(ring.read_index(0, 270), ref[170:270])


def test_release_time_covers_events_not_pushed_yet():
    ref = _regular(350)  # t = 0, 10, 20, ...
    ring = EventRing(100)
    ring.release_time(int(ref["t"][150]))  # events with t < 1500 are not needed
    for a in range(0, 250, 50):
        ring.push(ref[a:a + 50])  # overwrites 0..149
    assert ring.dropped_events == 0
    assert ring.unreleased == 100  # 150..249
    ring.push(ref[250:350])  # overwrites 150..249, all still needed
    assert ring.dropped_events == 100
    _assert_same(ring.read_index(0, 350), ref[250:350])
    ring.release_time(int(ref["t"][300]) + 1)
    assert ring.unreleased == 49


def test_backlog_counts_only_what_is_not_released_by_time():
    """backlog_us is the time span of the unreleased events, whichever way they were released."""
    ref = _regular(100)  # t = 0 .. 990
    ring = EventRing(1000)
    ring.push(ref)
    assert ring.backlog_us == 990
    ring.release_time(500)
    assert ring.unreleased == 50  # 50..99
    assert ring.backlog_us == 990 - 500
    ring.release_time(995)
    assert ring.unreleased == 0
    assert ring.backlog_us == 0


@pytest.mark.parametrize("how", ["index", "time"])
def test_oversized_packet_of_released_events_is_not_a_drop(how):
    """ "Events overwritten (or never stored) before the consumer released them" are drops: released ones are not."""
    ref = _regular(2600)
    ring = EventRing(1000)
    ring.push(ref[:100])
    if how == "index":
        ring.release(2000)
    else:
        ring.release_time(int(ref["t"][2000]))
    ring.push(ref[100:2600])  # oversized: 100..1599 are never stored, and all of them were released
    _assert_same(ring.read_index(0, 2600), ref[1600:])
    assert ring.unreleased == 600
    assert ring.dropped_events == 0


# ---------------------------------------------------------------------------------------------- time slicing
@pytest.mark.parametrize("capacity", [5, 64, 997, 4096])
def test_read_time_and_index_at_time_across_wraps(make_events, capacity):
    # 1 Mev/s with 1 µs resolution: many equal timestamps, also across packet and ring boundaries
    ref = make_events(20_000, rate_ev_per_s=1e6, seed=capacity)
    t = ref["t"]
    rng = np.random.default_rng(capacity + 1)
    ring = EventRing(capacity)
    checked_wrapped = 0
    for a, b in _packets(len(ref), max_size=max(2, capacity // 3) if capacity > 5 else 9, seed=capacity):
        ring.push(ref[a:b])
        head, oldest = ring.head, ring.oldest
        assert oldest == max(0, head - capacity)
        if oldest % capacity and head % capacity:
            checked_wrapped += 1
        lo_t, hi_t = int(t[oldest]), int(t[head - 1])
        queries = rng.integers(lo_t - 3, hi_t + 4, size=6)
        queries = np.concatenate([queries, [lo_t, hi_t, hi_t + 1, t[(oldest + head) // 2]]])
        for q in queries:
            want = min(max(int(np.searchsorted(t[:head], q, side="left")), oldest), head)
            assert ring.index_at_time(int(q)) == want, (int(q), oldest, head)
        for _ in range(3):
            t0, t1 = sorted(int(v) for v in rng.integers(lo_t - 2, hi_t + 3, size=2))
            ev, i0, i1 = ring.read_time(t0, t1)
            w0 = min(max(int(np.searchsorted(t[:head], t0, side="left")), oldest), head)
            w1 = min(max(int(np.searchsorted(t[:head], t1, side="left")), oldest), head)
            assert (i0, i1) == (w0, w1)
            _assert_same(ev, ref[w0:w1])
            assert np.all((ev["t"] >= t0) & (ev["t"] < t1))
    assert ring.dropped_events == len(ref) - capacity
    assert checked_wrapped > 10  # the queries really ran on wrapped storage


def test_read_time_on_a_full_ring_whose_start_is_not_slot_zero(make_events):
    ref = make_events(130, rate_ev_per_s=1e5, seed=11)
    ring = EventRing(100)
    ring.push(ref)  # head=130, oldest=30: a full ring starting at slot 30
    t = ref["t"]
    for i in range(30, 130):
        assert ring.index_at_time(int(t[i])) == max(30, int(np.searchsorted(t, t[i], side="left")))
    assert ring.index_at_time(int(t[0])) == 30  # clamped to the stored range
    assert ring.index_at_time(int(t[-1]) + 1) == 130
    ev, i0, i1 = ring.read_time(int(t[40]), int(t[120]))
    w0, w1 = np.searchsorted(t, [t[40], t[120]], side="left")
    assert (i0, i1) == (w0, w1)
    _assert_same(ev, ref[w0:w1])
    ev, i0, i1 = ring.read_time(-(2**62), 2**62)
    assert (i0, i1) == (30, 130)
    _assert_same(ev, ref[30:])


# ---------------------------------------------------------------------------------------------- grow
def test_grow_keeps_indices_and_content(make_events):
    ref = make_events(1500, rate_ev_per_s=1e5, seed=12)
    t = ref["t"]
    ring = EventRing(100)
    ring.push(ref[:250])  # wrapped, 150 dropped
    ring.release(170)
    assert ring.dropped_events == 150
    ring.grow(50)  # shrinking is a no-op
    assert ring.capacity == 100
    ring.grow(1000)
    assert ring.capacity == 1000
    assert ring.head == 250 and ring.oldest == 150 and ring.dropped_events == 150
    assert ring.unreleased == 80
    assert ring.first_t_us == int(t[150])
    _assert_same(ring.read_index(0, 250), ref[150:250])
    assert ring.index_at_time(int(t[200])) == int(np.searchsorted(t, t[200]))
    ring.push(ref[250:1000])  # 850 stored: nothing overwritten
    assert ring.dropped_events == 150 and ring.oldest == 150
    _assert_same(ring.read_index(150, 1000), ref[150:1000])
    ev, i0, i1 = ring.read_time(int(t[160]), int(t[900]))
    w0, w1 = np.searchsorted(t, [t[160], t[900]])
    assert (i0, i1) == (w0, w1)
    _assert_same(ev, ref[w0:w1])
    ring.push(ref[1000:1250])  # overwrites 150..249: 150..169 were released, 170..249 were not
    assert ring.oldest == 250
    assert ring.dropped_events == 150 + 80
    _assert_same(ring.read_index(0, 1250), ref[250:1250])


def test_grow_an_unwrapped_ring(make_events):
    ref = make_events(60, rate_ev_per_s=1e5, seed=13)
    ring = EventRing(64)
    ring.push(ref[:40])
    ring.grow(128)
    assert ring.head == 40 and ring.oldest == 0
    _assert_same(ring.read_index(0, 40), ref[:40])
    ring.push(ref[40:])
    _assert_same(ring.read_index(0, 60), ref)
    assert ring.dropped_events == 0


# ---------------------------------------------------------------------------------------------- threads
def _run_threads(producer, consumer):
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
                errors.append(e)
        return run

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, also in the middle of push / read_index
    try:
        th = threading.Thread(target=wrap(producer), daemon=True)
        th.start()
        wrap(consumer)()
        th.join(THREAD_DEADLINE_S)
    finally:
        sys.setswitchinterval(old_interval)
    assert not th.is_alive(), "producer thread did not finish"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("capacity, max_packet", [(1024, 500), (4099, 1500), (777, 777)])
def test_no_loss_below_capacity_with_a_producer_thread(make_events, capacity, max_packet):
    ref = make_events(150_000, seed=capacity)
    packets = _packets(len(ref), max_packet, seed=capacity)
    done = threading.Event()
    deadline = time.monotonic() + THREAD_DEADLINE_S
    ring = EventRing(capacity)
    waits = [0]

    def producer():
        for a, b in packets:
            # stay below capacity: wait (off the ring) until the consumer has released enough
            while ring.unreleased + (b - a) > capacity:
                waits[0] += 1
                if time.monotonic() > deadline:
                    raise TimeoutError("consumer stalled")
                time.sleep(0)
            ring.push(ref[a:b])
        done.set()

    got: list[np.ndarray] = []
    chunk_rng = np.random.default_rng(1)

    def consumer():
        nxt = 0
        while nxt < len(ref):
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer got {nxt} of {len(ref)} events")
            head = ring.head
            if head == nxt:
                time.sleep(0)
                continue
            end = min(head, nxt + int(chunk_rng.integers(1, capacity + 1)))
            ev = ring.read_index(nxt, end)
            assert ev.shape[0] == end - nxt, "events lost below capacity"
            got.append(ev)
            nxt = end
            ring.release(nxt)

    _run_threads(producer, consumer)
    assert done.is_set()
    assert ring.dropped_events == 0
    assert ring.head == len(ref)
    _assert_same(np.concatenate(got), ref)


def test_overflow_with_a_producer_thread_returns_only_true_events(make_events):
    """The producer never waits; the slow consumer gets exact slices, and everything it missed was counted."""
    capacity = 2000
    ref = make_events(200_000, seed=21)
    packets = _packets(len(ref), 900, seed=21)
    done = threading.Event()
    deadline = time.monotonic() + THREAD_DEADLINE_S
    ring = EventRing(capacity)

    def producer():
        for a, b in packets:
            ring.push(ref[a:b])
            time.sleep(0)
        done.set()

    received = [0]
    chunks = [0]

    def consumer():
        nxt = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("consumer did not finish")
            finished = done.is_set()
            head = ring.head
            ev = ring.read_index(nxt, head)
            # whatever was cut off is the oldest part: the copy is exactly the newest len(ev) before head
            assert np.array_equal(ev, ref[head - ev.shape[0]:head])
            received[0] += ev.shape[0]
            chunks[0] += ev.shape[0] > 0
            ring.release(head)
            nxt = head
            if finished and nxt == len(ref):
                return
            time.sleep(0.0005)  # slower than the producer

    _run_threads(producer, consumer)
    assert chunks[0] > 1
    missed = len(ref) - received[0]
    assert missed > 0, "the test did not overflow the ring"
    # every event the consumer did not get was counted; an event can only be counted once
    assert missed <= ring.dropped_events <= len(ref) - capacity


def test_reads_racing_the_producer_never_return_overwritten_events():
    """The consumer reads the oldest stored events, exactly the ones the producer overwrites next."""
    n, capacity = 2_000_000, 2000
    ref = _regular(n, dt=1)  # t is the global index
    ring = EventRing(capacity)
    done = threading.Event()
    stats = {"reads": 0, "bad": 0}

    def producer():
        for a in range(0, n, 500):
            ring.push(ref[a:a + 500])
        done.set()

    def consumer():
        deadline = time.monotonic() + THREAD_DEADLINE_S
        while not done.is_set() and time.monotonic() < deadline:
            head = ring.head
            ev = ring.read_index(0, head)
            stats["reads"] += 1
            if not np.array_equal(ev["t"], np.arange(head - ev.shape[0], head)):
                stats["bad"] += 1

    _run_threads(producer, consumer)
    assert stats["reads"] > 50
    assert stats["bad"] == 0, f"{stats['bad']} of {stats['reads']} reads returned overwritten events"
    assert ring.dropped_events == n - capacity  # nothing was ever released


# ---------------------------------------------------------------------------------------------- host arrival times
def _arrival_packets(n_packets: int, seed: int = 3) -> list[tuple[np.ndarray, float]]:
    """Packets of 1..50 events with distinct host times 100.0, 100.5, 101.0, ..."""
    rng = np.random.default_rng(seed)
    out, t = [], 0
    for k in range(n_packets):
        n = int(rng.integers(1, 51))
        ev = np.zeros(n, dtype=EVENT_DTYPE)
        ev["t"] = t + np.arange(n)
        t += n
        out.append((ev, 100.0 + 0.5 * k))
    return out


@pytest.mark.parametrize("arrivals", [1000, 7])
def test_host_time_of_names_the_packet_that_carried_each_event(arrivals):
    ring = EventRing(1 << 16, arrivals=arrivals)
    packets = _arrival_packets(40)
    owner = np.concatenate([np.full(len(ev), host) for ev, host in packets])  # host time of every event
    for ev, host in packets:
        ring.push(ev, host_time_s=host)
    n = owner.size
    got = np.array([ring.host_time_of(i) for i in range(n)])
    # the last `arrivals` packets are known exactly; older ones (and the packet straddling the edge) are NaN
    kept = sum(len(ev) for ev, _ in packets[-(arrivals - 1):]) if arrivals < 40 else n
    np.testing.assert_array_equal(got[n - kept:], owner[n - kept:])
    assert np.isnan(got[: n - sum(len(ev) for ev, _ in packets[-arrivals:])]).all()
    assert np.isnan(ring.host_time_of(n)) and np.isnan(ring.host_time_of(n + 100))  # not pushed yet


def test_host_time_is_kept_across_table_wraps_at_every_offset():
    ring = EventRing(1 << 12, arrivals=5)
    for k, (ev, host) in enumerate(_arrival_packets(23)):
        ring.push(ev, host_time_s=host)
        assert ring.host_time_of(ring.head - 1) == host  # the newest event always resolves, whatever the wrap
        assert ring.host_time_of(ring.head - len(ev)) == host


def test_pushes_without_a_host_time_record_nothing():
    ring = EventRing(1 << 10)
    ev = np.zeros(10, dtype=EVENT_DTYPE)
    ring.push(ev)
    assert np.isnan(ring.host_time_of(0))
    ring.push(np.zeros(0, dtype=EVENT_DTYPE), t_end_us=5, host_time_s=1.0)  # an empty packet carries no event
    assert np.isnan(ring.host_time_of(9))
    with pytest.raises(ValueError, match="arrivals must be positive"):
        EventRing(16, arrivals=0)
