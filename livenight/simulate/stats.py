"""Event statistics that compare a simulator with real sensors (printed by ``scripts/event_stats.py``).

* ``ev_per_px_s``: events per pixel per second (all pixels, the whole span).
* ``on_fraction``: share of ON events.
* ``isolated_per_px_s``: events with no event at any of the 8 neighbouring pixels within ±``iso_us`` (10 ms): the
  background-activity filter's notion of noise, usable on every recording.
* ``static_per_px_s``: events per pixel per second in static areas, where reference frames exist: pixels whose
  reference never changed by more than 8 grey levels between consecutive frames (dilated 15×15, as the
  active-pixel metric of :mod:`livenight.eval`).
* ``iei_median_ms`` / ``iei_p10_ms``: intervals between consecutive events of the same pixel (trails and bursts
  give short ones).
"""

from __future__ import annotations

import numpy as np

_isolated_kernel = None


def _isolated_flags(x: np.ndarray, y: np.ndarray, t: np.ndarray, width: int, height: int, iso_us: int) -> np.ndarray:
    """True for events without a neighbour event (8-neighbourhood, other pixels) within ±iso_us."""
    global _isolated_kernel
    if _isolated_kernel is None:
        import numba

        @numba.njit(cache=True)
        def kernel(x, y, t, width, height, iso_us, out):
            last = np.full((height + 2, width + 2), -(1 << 60), np.int64)
            n = x.shape[0]
            for order in range(2):  # forward: a neighbour before; backward: a neighbour after
                last[:] = -(1 << 60)
                for k in range(n):
                    i = k if order == 0 else n - 1 - k
                    xi, yi = x[i] + 1, y[i] + 1
                    ti = t[i] if order == 0 else -t[i]
                    seen = False
                    for dy in range(-1, 2):
                        for dx in range(-1, 2):
                            if (dx != 0 or dy != 0) and ti - last[yi + dy, xi + dx] <= iso_us:
                                seen = True
                    if seen:
                        out[i] = False
                    last[yi, xi] = ti
            return out

        _isolated_kernel = kernel
    out = np.ones(len(t), np.bool_)
    return _isolated_kernel(x.astype(np.int64), y.astype(np.int64), t.astype(np.int64), int(width), int(height),
                            int(iso_us), out)


def static_mask(frames: np.ndarray, threshold: float = 8.0, box: int = 15) -> np.ndarray:
    """Pixels whose reference never changed by more than ``threshold`` grey levels between consecutive frames,
    after dilating the changed pixels by a ``box``×``box`` square."""
    from scipy.ndimage import maximum_filter

    f = frames.astype(np.int16)
    changed = (np.abs(np.diff(f, axis=0)) > threshold).any(axis=0)
    return ~maximum_filter(changed, size=box).astype(bool)


def event_stats(events: np.ndarray, sensor_size: tuple[int, int], frames: np.ndarray | None = None,
                iso_us: int = 10_000) -> dict[str, float]:
    """The statistics above for time-sorted :data:`~livenight.events.EVENT_DTYPE` events."""
    w, h = sensor_size
    n = len(events)
    span_s = max(float(events["t"][-1] - events["t"][0]) * 1e-6, 1e-6) if n else 1e-6
    out = {"events": n, "seconds": span_s, "ev_per_px_s": n / (w * h * span_s),
           "on_fraction": float(events["p"].mean()) if n else float("nan")}
    iso = _isolated_flags(events["x"], events["y"], events["t"], w, h, iso_us) if n else np.zeros(0, bool)
    out["isolated_per_px_s"] = float(iso.sum()) / (w * h * span_s)
    out["static_per_px_s"] = float("nan")
    if frames is not None and len(frames) > 1:
        m = static_mask(frames)
        if m.any():
            out["static_per_px_s"] = float(m[events["y"], events["x"]].sum()) / (m.sum() * span_s)
    pix = events["y"].astype(np.int64) * w + events["x"]
    order = np.argsort(pix, kind="stable")  # events are time-sorted: stable sort keeps time order per pixel
    ps, ts = pix[order], events["t"][order]
    same = ps[1:] == ps[:-1]
    iei = (ts[1:] - ts[:-1])[same] * 1e-3
    out["iei_median_ms"] = float(np.median(iei)) if iei.size else float("nan")
    out["iei_p10_ms"] = float(np.percentile(iei, 10)) if iei.size else float("nan")
    return out
