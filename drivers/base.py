"""The Source protocol every driver implements, and the single-use iteration guard.

A source is a context manager that yields :class:`~livenight.events.EventPacket` objects. Iteration is single
use: a camera cannot be rewound, and a file source says so instead of silently yielding nothing the second time.
Optional capabilities (reference frames, RLED event indices) are plain attributes that are ``None`` when absent.
"""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from livenight.events import EventPacket


@runtime_checkable
class Source(Protocol):
    """What the pipeline needs from a driver. Implement the members; no need to inherit."""

    sensor_size: tuple[int, int]  # (width, height)
    is_live: bool  # False for recordings: pacing and seeking make sense

    def __iter__(self) -> Iterator[EventPacket]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Source": ...

    def __exit__(self, *exc: object) -> None: ...


class ReferenceFrames(Protocol):
    """Grey reference frames (APS or ground truth) that come with a recording."""

    #: exposure-end timestamp of each frame, int64 µs (the RLED image ``timestamp``)
    t_us: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...  # (H, W) uint8


class SingleUse:
    """Mixin: ``__iter__`` may be called once (a second call raises instead of yielding nothing) and returns the
    generator of the subclass's ``_packets()``, which ``_stop_iteration()`` closes."""

    _iterated = False
    _gen = None
    _closed = False

    def _claim_iteration(self) -> None:
        if self._iterated:
            raise RuntimeError(f"{type(self).__name__} can be iterated only once; open the source again")
        self._iterated = True

    def __iter__(self):
        self._claim_iteration()
        self._gen = self._packets()
        return self._gen

    def _packets(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def _stop_iteration(self) -> None:
        """Mark the source closed and close its packet generator (for ``close()``)."""
        self._closed = True
        if self._gen is not None:
            try:
                self._gen.close()
            except ValueError:  # still running in another thread: it stops at its next poll
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass
