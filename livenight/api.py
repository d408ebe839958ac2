"""The Python API: reconstruct frames from a source in one call, or assemble the pieces yourself.

One call::

    import livenight
    for frame in livenight.reconstruct("night.aedat4"):            # the bundled model, its default windows
        frame.image          # (H, W) uint8 reconstruction
        frame.t0_us, frame.t1_us   # the window's time span (µs, the recording's clock)
        frame.reference      # the recording's reference image for that window (APS / RLED image), or None

Options: ``model`` (a checkpoint of any registered family, ``.onnx``, ``.engine``; None = bundled), ``backend``
(``auto``, ``torch``, ``onnxruntime``, ``tensorrt``, ``complementary``), ``windows`` (a policy from
:mod:`livenight.windowing` or its dict form, e.g. ``{"kind": "time", "window_us": 20000, "stride_us": 20000}``),
``device``, ``dtype``, ``crop``, ``speed`` (1.0 paces a replay to real time; cameras are always live),
``max_frames``, ``filters`` (a :class:`~livenight.filters.FilterConfig` or its dict form, e.g.
``{"background_ms": 2}``; default: what the model's metadata asks for, usually none) and the source's own
options (e.g. ``ts_unit`` for RLED files, ``topic`` for ROS bags).

Pieces, for your own loop (a ROS node, a notebook)::

    from livenight.drivers import open_source
    from livenight.engines import open_engine
    from livenight.pipeline import Pipeline

    with open_source("tcp://127.0.0.1:7777") as src, open_engine(None, src.sensor_size) as engine:
        pipe = Pipeline(src, src.sensor_size, engine, engine.default_windows(), live=True)
        for frame in pipe.frames():
            ...

or lower still: ``engine.step(window)`` on :class:`~livenight.windowing.Window` objects you cut yourself.
"""

from __future__ import annotations

import os
from typing import Iterator


def _policy(windows, engine, source):
    from .windowing import policy_from_json

    if windows is None:  # the model's windows, adjusted to a sensor larger than the one they were chosen for
        return engine.windows_for_source(source)[0]
    if isinstance(windows, dict):
        return policy_from_json(windows)
    return windows


def _filters(filters, engine, sensor_size):
    from .filters import FilterConfig, build_filters, model_filters

    if filters is None:
        filters = model_filters(engine)
    if filters is None:
        return None
    config = filters if isinstance(filters, FilterConfig) else FilterConfig.from_json(dict(filters))
    return build_filters(config, sensor_size)


def reconstruct(source: str | os.PathLike, model: str | os.PathLike | None = None, backend: str = "auto",
                windows=None, device: str = "cpu", dtype: str = "float32", crop: bool = True,
                speed: float = 0.0, max_frames: int | None = None, sinks=(), filters=None,
                **source_options) -> Iterator:
    """Yield reconstructed :class:`~livenight.sinks.Frame` objects from a source (a file path, a camera name
    such as ``davis346`` / ``evk4``, or a URI such as ``tcp://host:port``). Leaving the loop stops the source.
    """
    from .drivers import open_source
    from .drivers.pacing import paced
    from .engines import open_engine
    from .pipeline import Pipeline

    if not (speed >= 0 and speed != float("inf")):
        raise ValueError(f"speed must be finite and >= 0 (got {speed})")
    with open_source(source, **source_options) as src, \
            open_engine(model, src.sensor_size, backend=backend, device=device, dtype=dtype, crop=crop) as engine:
        live = bool(getattr(src, "is_live", False))
        stream = src if live or speed == 0 else paced(src, speed)
        pipe = Pipeline(stream, src.sensor_size, engine, _policy(windows, engine, src), list(sinks),
                        live=live or speed > 0, reference=getattr(src, "frames", None), max_frames=max_frames,
                        filters=_filters(filters, engine, src.sensor_size))
        yield from pipe.frames()
