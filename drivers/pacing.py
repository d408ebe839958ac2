"""Replay pacing as a wrapper: a file source only reads; ``paced`` makes it behave like a camera.

Packets are cut into slices of at most ``slice_us`` so windows become available smoothly (an RLED chunk can
hold a second of events), and each slice is released when the wall clock reaches its end time scaled by
``speed``. ``speed=0`` means unpaced. Timestamps are never rewritten; ``host_time_s`` is the release time.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

from livenight.events import EventPacket


def paced(packets: Iterable[EventPacket], speed: float = 1.0, slice_us: int = 5_000,
          clock=time.monotonic, sleep=time.sleep) -> Iterator[EventPacket]:
    """Yield ``packets`` at ``speed`` × real time (``speed=0``: as fast as they come)."""
    if speed < 0:
        raise ValueError(f"speed must be >= 0 (got {speed})")
    if speed == 0:
        yield from packets
        return
    wall0 = None
    t_origin = 0
    for pkt in packets:
        if wall0 is None:
            wall0, t_origin = clock(), pkt.t_start_us
        for part in _slices(pkt, slice_us):
            due = wall0 + (part.t_end_us - t_origin) / (1e6 * speed)
            delay = due - clock()
            if delay > 0:
                sleep(delay)
            yield EventPacket(part.events, part.t_start_us, part.t_end_us, clock(), part.sensor_size)


def _slices(pkt: EventPacket, slice_us: int) -> Iterator[EventPacket]:
    """Cut a packet into sub-packets of at most ``slice_us`` that tile its time range."""
    if pkt.t_end_us - pkt.t_start_us <= slice_us:
        yield pkt
        return
    bounds = list(range(pkt.t_start_us, pkt.t_end_us, slice_us)) + [pkt.t_end_us]
    cuts = np.searchsorted(pkt.events["t"], bounds, side="left")
    for k in range(len(bounds) - 1):
        yield EventPacket(pkt.events[cuts[k]:cuts[k + 1]], bounds[k], bounds[k + 1], pkt.host_time_s,
                          pkt.sensor_size)
