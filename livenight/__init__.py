"""livenight: real-time night vision from event cameras.

``import livenight`` stays cheap: no torch, Qt, numba or camera SDK is imported here.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import LivenightError as LivenightError
from .events import EVENT_DTYPE as EVENT_DTYPE
from .events import EventPacket as EventPacket
