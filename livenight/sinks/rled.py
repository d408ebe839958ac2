"""The RLED recording sink (``livenight record``): every event of the stream and the source's reference images.

It is a packet sink: the pipeline hands it each :class:`~livenight.events.EventPacket` as it is ingested (also
with no engine at all, which is what ``record`` runs). The writer flushes every second, so a killed process
leaves a readable file. Reference images (DAVIS APS frames, an RLED file's images) are copied at close, those
exposed before the end of the recorded time span.
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
        self._t_end: int | None = None  # the end of the time the stream covered (images before it are kept)
        self._closed = False

    def write_packet(self, packet) -> None:
        ev = packet.events
        if packet.t_end_us is not None:
            self._t_end = int(packet.t_end_us)
        elif ev.size:
            self._t_end = int(ev["t"][-1]) + 1
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
            if refs is not None and self._t_end is not None:
                exposure = getattr(refs, "exposure_us", None)  # DAVIS APS frames know theirs
                for i in range(len(refs)):
                    t = int(refs.t_us[i])
                    if t < self._t_end:
                        self.writer.add_image(refs[i], t, 0 if exposure is None else int(exposure[i]))
                        self.images_written += 1
        finally:
            self.writer.close()
