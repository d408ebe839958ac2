"""Where frames (and, for recordings, events) go: one folder, one module per sink, one table row each.

| sink | module | what it writes |
|---|---|---|
| ``mp4`` | :mod:`livenight.sinks.video` | H.264 / MPEG-4 via PyAV (``--video``), optional status bar |
| ``null`` | :mod:`livenight.sinks.png` | nothing (benchmarks) |
| ``png`` | :mod:`livenight.sinks.png` | ``DIR/frame_*.png`` (+ ``gt/``, ``events/``) (``--out``) |
| ``rled`` | :mod:`livenight.sinks.rled` | the event stream and reference images as an RLED ``.h5`` (``record``) |

Sinks are imported lazily (:func:`sink_class`), so PyAV or h5py load only when their sink is used.
"""

from __future__ import annotations

import importlib

from .base import Frame, FrameSink, PacketSink

#: sink name → "module:Class". Keep sorted.
_SINKS: dict[str, str] = {
    "mp4": "livenight.sinks.video:VideoSink",
    "null": "livenight.sinks.png:NullSink",
    "png": "livenight.sinks.png:PngSink",
    "rled": "livenight.sinks.rled:RledSink",
}
assert list(_SINKS) == sorted(_SINKS), "keep the sink table sorted"


def sink_class(name: str):
    """The class of a sink by name."""
    from livenight.errors import UnknownEngineError

    if name not in _SINKS:
        raise UnknownEngineError(f"unknown sink {name!r} (known: {', '.join(_SINKS)})")
    module, cls = _SINKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def __getattr__(name: str):  # PngSink, NullSink, VideoSink, RledSink: lazily, by class name
    for key, spec in _SINKS.items():
        if spec.endswith(":" + name):
            return sink_class(key)
    raise AttributeError(f"module 'livenight.sinks' has no attribute {name!r}")


__all__ = ["Frame", "FrameSink", "PacketSink", "sink_class"]
