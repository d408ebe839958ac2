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


def bench_letc(n_events: int = 1_000_000, size: tuple[int, int] = (1280, 720), repeats: int = 5,
               seed: int = 0) -> dict[str, float]:
    """LETC lookup-table scatter against the exact per-event MLP (the official path), same events, same run."""
    import torch

    from .letc import LetcTable, exact_grid
    from .model.nernet import NERNet, NERNetConfig

    torch.manual_seed(seed)
    model = NERNet(NERNetConfig(sensor_size=size)).eval()
    rng = np.random.default_rng(seed)
    ev = np.empty(n_events, dtype=EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(10_000_000, 10_020_000, n_events))  # a 20 ms window, RLED-like times
    ev["x"] = rng.integers(0, size[0], n_events)
    ev["y"] = rng.integers(0, size[1], n_events)
    ev["p"] = rng.integers(0, 2, n_events)
    table = LetcTable.from_model(model)
    out = np.empty((size[1], size[0], 2 * model.cfg.num_bins), dtype=np.float32)
    table.grid(ev, size, out)  # compile / warm up
    fast = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        table.grid(ev, size, out)
        fast.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = exact_grid(model, ev, size)
    exact_s = time.perf_counter() - t0
    fast_s = float(np.median(fast))
    err = float(np.abs(out.transpose(2, 0, 1) - ref).max() / np.abs(ref).max())
    print(f"LETC, {n_events} events at {size[0]}x{size[1]} (uniform random positions: the cache-hostile case)")
    print(f"  lookup table   {n_events / fast_s / 1e6:8.2f} M events/s  ({fast_s * 1e3:.1f} ms, median of {repeats})")
    print(f"  exact MLP      {n_events / exact_s / 1e6:8.2f} M events/s  ({exact_s * 1e3:.1f} ms)")
    print(f"  ratio {exact_s / fast_s:.0f}x (target >= 100x); max relative error {err:.2e} (limit 1e-5)")
    return {"fast_s": fast_s, "exact_s": exact_s, "ratio": exact_s / fast_s, "rel_err": err}
