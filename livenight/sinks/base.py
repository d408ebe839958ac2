"""The record every sink receives, and the sink protocol.

A sink receives :class:`Frame` objects in order (``write``); sinks that keep the raw stream also receive every
:class:`~livenight.events.EventPacket` (``write_packet``). ``close()`` is always called (also after an error), so
what was written before a failure stays valid on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One reconstruction and what it came from."""

    number: int  # output counter: 0, 1, 2, … (file names use it)
    image: np.ndarray  # (H, W) uint8
    window_index: int
    t0_us: int
    t1_us: int
    events: np.ndarray  # the window's events (for event frames)
    sensor_size: tuple[int, int]
    reference: np.ndarray | None = None  # (H, W) uint8 ground-truth / APS frame, when the source has one
    host_time_s: float = 0.0  # monotonic arrival of the window's last event (live runs); 0.0 unpaced


class FrameSink(Protocol):
    def write(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


class PacketSink(Protocol):
    """A sink that keeps the event stream itself (RLED recording): every packet, as it is ingested."""

    def write_packet(self, packet) -> None: ...

    def close(self) -> None: ...
