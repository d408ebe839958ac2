"""livenight: real-time night vision from event cameras.

``import livenight`` stays cheap: no torch, Qt, numba or camera SDK is imported here.

    >>> import livenight
    >>> for frame in livenight.reconstruct("night.aedat4"):    # doctest: +SKIP
    ...     frame.image, frame.t0_us, frame.t1_us, frame.reference
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import LivenightError as LivenightError
from .events import EVENT_DTYPE as EVENT_DTYPE
from .events import EventPacket as EventPacket


def reconstruct(source, model=None, backend="auto", windows=None, **options):
    """Yield reconstructed frames from a source in one call (see :mod:`livenight.api`)."""
    from .api import reconstruct as _reconstruct

    return _reconstruct(source, model=model, backend=backend, windows=windows, **options)
