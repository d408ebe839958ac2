"""Replay pacing as a wrapper: a file source only reads; ``paced`` makes it behave like a camera.

Packets are cut into slices of at most ``slice_us`` so windows become available smoothly (an RLED chunk can
hold a second of events), and each slice is released when the wall clock reaches its end time scaled by
``speed``. ``speed=0`` means unpaced. Timestamps are never rewritten; ``host_time_s`` is the release time.

A silence longer than ``max_jump_us`` (default 10 s) is not waited out: it is released at once as one empty
packet and the clock re-anchored after it. A corrupt timestamp (a flipped high bit in a DAT record or an EVT2
TIME_HIGH word moves the rest of a file hours ahead) would otherwise stall a real-time replay for hours; the
windows reset over such a jump anyway.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

from livenight.events import EventPacket


def paced(packets: Iterable[EventPacket], speed: float = 1.0, slice_us: int = 5_000,
          clock=time.monotonic, sleep=time.sleep, max_jump_us: int = 10_000_000) -> Iterator[EventPacket]:
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
        for piece, silent in _pieces(pkt, max_jump_us):
            if silent:  # released at once; the clock starts again after it
                yield EventPacket(piece.events, piece.t_start_us, piece.t_end_us, clock(), piece.sensor_size)
                wall0, t_origin = clock(), piece.t_end_us
                continue
            for part in _slices(piece, slice_us):
                due = wall0 + (part.t_end_us - t_origin) / (1e6 * speed)
                delay = due - clock()
                if delay > 0:
                    sleep(delay)
                yield EventPacket(part.events, part.t_start_us, part.t_end_us, clock(), part.sensor_size)


def _pieces(pkt: EventPacket, max_jump_us: int) -> Iterator[tuple[EventPacket, bool]]:
    """Cut a packet around silences longer than ``max_jump_us``: ``(piece, silent)`` pieces that tile its range."""
    t = pkt.events["t"]
    marks = np.concatenate([[pkt.t_start_us], t, [pkt.t_end_us]]).astype(np.int64)
    gaps = np.flatnonzero(np.diff(marks) > max_jump_us)
    if gaps.shape[0] == 0:
        yield pkt, False
        return
    cur, i0 = pkt.t_start_us, 0
    for g in gaps.tolist():
        start = int(marks[g]) + 1 if g > 0 else pkt.t_start_us  # just after the event before the silence
        end = int(marks[g + 1])
        i1 = g  # events before index g (in t) are before the silence
        if start > cur:
            yield EventPacket(pkt.events[i0:i1], cur, start, pkt.host_time_s, pkt.sensor_size), False
        yield EventPacket(pkt.events[i1:i1], start, end, pkt.host_time_s, pkt.sensor_size), True
        cur, i0 = end, i1
    if pkt.t_end_us > cur:
        yield EventPacket(pkt.events[i0:], cur, pkt.t_end_us, pkt.host_time_s, pkt.sensor_size), False


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
