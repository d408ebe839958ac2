"""Benchmarks behind ``livenight bench``. Each prints its figure next to a baseline measured in the same run."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from .events import EVENT_DTYPE
from .ring import EventRing


def _packets(packet_events: int, n_packets: int, rate_ev_per_s: float = 10e6, seed: int = 0) -> list[np.ndarray]:
    """Pre-made sorted packets (so the benchmark measures ingest, not event generation)."""
    rng = np.random.default_rng(seed)
    out, t = [], 0
    for _ in range(n_packets):
        ev = np.empty(packet_events, dtype=EVENT_DTYPE)
        dt = rng.exponential(1e6 / rate_ev_per_s, packet_events)
        ev["t"] = t + np.cumsum(dt).astype(np.int64)
        t = int(ev["t"][-1]) + 1
        ev["x"] = rng.integers(0, 1280, packet_events)
        ev["y"] = rng.integers(0, 720, packet_events)
        ev["p"] = rng.integers(0, 2, packet_events)
        out.append(ev)
    return out


def _drive(push, packets: list[np.ndarray], seconds: float, consume=None) -> tuple[int, float]:
    """Push packets for ``seconds`` (cycling, with shifted timestamps) while ``consume`` runs in a thread."""
    stop = threading.Event()
    consumer = threading.Thread(target=consume, args=(stop,), daemon=True) if consume else None
    if consumer:
        consumer.start()
    span = int(packets[-1]["t"][-1]) + 1
    n_ev, lap = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for ev in packets:
            if lap:
                ev["t"] += span  # in place: the queue under test holds its own copy
            push(ev)
            n_ev += ev.shape[0]
        lap += 1
    wall = time.perf_counter() - t0
    stop.set()
    if consumer:
        consumer.join()
    return n_ev, wall


def bench_ring(seconds: float = 3.0, packet_events: int = 10_000, capacity: int = 1 << 22) -> dict[str, float]:
    """Sustained ingest of ``packet_events``-event packets into :class:`EventRing` with a live consumer reading
    40 ms windows, against a baseline ``deque`` of packet copies (the naive bounded queue)."""
    packets = _packets(packet_events, 64)
    # baseline: a bounded deque of copied packets, same bytes moved, no time index and no drop accounting
    dq: deque = deque(maxlen=max(1, capacity // packet_events))
    n_base, wall_base = _drive(lambda ev: dq.append(ev.copy()), packets, seconds)
    base_rate = n_base / wall_base

    ring = EventRing(capacity)
    windows = [0]

    def consume(stop: threading.Event) -> None:
        while not stop.is_set():
            t_end = ring.t_end_us
            if t_end is None:
                time.sleep(0.001)
                continue
            ev, i0, i1 = ring.read_time(t_end - 40_000, t_end)  # the newest 40 ms window
            ring.release(i1)
            windows[0] += 1
            time.sleep(0.001)

    n_ring, wall_ring = _drive(lambda ev: ring.push(ev), packets, seconds, consume)
    rate = n_ring / wall_ring
    print(f"ring ingest: {packet_events}-event packets, capacity {capacity}, consumer reading the newest 40 ms "
          f"window ({windows[0]} reads)")
    print(f"  EventRing      {rate / 1e6:8.1f} M events/s   dropped {ring.dropped_events} "
          f"({100 * ring.dropped_events / max(1, n_ring):.2f} %)")
    print(f"  deque baseline {base_rate / 1e6:8.1f} M events/s   (copy-only, no time index, no drop count)")
    print(f"  ratio EventRing / baseline: {rate / base_rate:.2f}x   target >= 50 M events/s: "
          f"{'met' if rate >= 50e6 else 'NOT met'}")
    return {"events_per_s": rate, "baseline_events_per_s": base_rate, "dropped": ring.dropped_events}
