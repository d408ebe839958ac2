"""The RLED recording sink (``livenight record``): every event of the stream and the source's reference images.

It is a packet sink: the pipeline hands it each :class:`~livenight.events.EventPacket` as it is ingested (also
with no engine at all, which is what ``record`` runs). The writer flushes every second, so a killed process
leaves a readable file. Reference images (DAVIS APS frames, an RLED file's images) are copied at close, those
exposed within the recorded time span.
"""

from __future__ import annotations

import os

from .base import Frame


class RledSink:
    """Write the stream to ``path`` (RLED layout) with the source's reference images (``references``: an object
    with ``t_us`` and indexing, as drivers' ``frames``)."""

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int], references=None,
                 flush_every_s: float = 1.0) -> None:
        from livenight.drivers.rled import RledWriter

        self.path = os.fspath(path)
        self.references = references
        self.writer = RledWriter(path, sensor_size, flush_every_s=flush_every_s)
        self.events_written = 0
        self.images_written = 0
        self._t_first: int | None = None
        self._t_last: int | None = None
        self._closed = False

    def write_packet(self, packet) -> None:
        ev = packet.events
        if ev.size:
            if self._t_first is None:
                self._t_first = int(ev["t"][0])
            self._t_last = int(ev["t"][-1])
        self.writer.add_events(ev)
        self.events_written += int(ev.size)

    def write(self, frame: Frame) -> None:
        pass  # reconstructions are not part of an RLED file

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            refs = self.references
            if refs is not None and self._t_first is not None:
                for i in range(len(refs)):
                    t = int(refs.t_us[i])
                    if t <= self._t_last:
                        self.writer.add_image(refs[i], t)
                        self.images_written += 1
        finally:
            self.writer.close()
