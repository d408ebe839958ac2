"""A reconstruction engine that needs no weights: a per-pixel high-pass filter on log intensity.

After Scheerlinck, Barnes and Mahony, "Continuous-time Intensity Estimation Using Event Cameras" (ACCV 2018),
without APS frames (the pure high-pass case of their complementary filter). Each pixel keeps a log-intensity
estimate ``L``. Between events it decays toward 0 with cut-off ``cutoff_hz`` (which forgets noise and the
unknown offset); each event adds ``+contrast_on`` (ON) or ``−contrast_off`` (OFF):

    L(t_i) = exp(−2π·f_c·(t_i − t_prev)) · L(t_prev) + σ_i·c

At the end of each window every pixel is decayed to the window's end time and the frame is
``clip(0.5 + 0.5·L / log_range, 0, 1)``: 0 log units is mid-grey, ±``log_range`` are black / white. The filter
must see every event (it integrates), so it is used with contiguous time windows, never RLED's gapped windows.
"""

from __future__ import annotations

import math

import numpy as np

from livenight._optional import require
from livenight.events import check_sensor_size
from livenight.windowing import Window

from .base import EngineBase, EngineInfo

_kernels = None


def _compile():
    """JIT the two kernels once (cached on disk by numba)."""
    global _kernels
    if _kernels is None:
        numba = require("numba", "the complementary-filter engine")

        @numba.njit(cache=True, nogil=True)
        def integrate(log_i, t_last, t, x, y, p, c_on, c_off, alpha_per_us):
            for i in range(t.shape[0]):
                xi = x[i]
                yi = y[i]
                dt = t[i] - t_last[yi, xi]
                v = log_i[yi, xi] * math.exp(-alpha_per_us * dt)
                log_i[yi, xi] = v + c_on if p[i] else v - c_off
                t_last[yi, xi] = t[i]

        @numba.njit(cache=True, nogil=True)
        def render(log_i, t_last, t_now, alpha_per_us, gain, out):
            h, w = log_i.shape
            for r in range(h):
                for c in range(w):
                    v = log_i[r, c] * math.exp(-alpha_per_us * (t_now - t_last[r, c]))
                    log_i[r, c] = v
                    t_last[r, c] = t_now
                    g = 0.5 + gain * v
                    out[r, c] = 0.0 if g < 0.0 else (1.0 if g > 1.0 else g)

        _kernels = (integrate, render)
    return _kernels


class ComplementaryFilterEngine(EngineBase):
    """Classical high-pass reconstruction; no weights, runs anywhere.

    Args:
        sensor_size: ``(width, height)``.
        cutoff_hz: high-pass cut-off; lower keeps static structure longer, higher forgets noise faster.
        contrast_on, contrast_off: log-intensity step per ON / OFF event.
        log_range: log units mapped to full white (and −log_range to black).
    """

    def __init__(self, sensor_size: tuple[int, int], cutoff_hz: float = 1.0, contrast_on: float = 0.2,
                 contrast_off: float = 0.2, log_range: float = 1.5) -> None:
        width, height = check_sensor_size(sensor_size)
        if cutoff_hz < 0 or log_range <= 0:
            raise ValueError(f"cutoff_hz must be >= 0 and log_range > 0 (got {cutoff_hz}, {log_range})")
        self.sensor_size = (width, height)
        self.alpha_per_us = 2.0 * math.pi * cutoff_hz * 1e-6
        self.contrast_on = float(contrast_on)
        self.contrast_off = float(contrast_off)
        self.gain = 0.5 / float(log_range)
        self.info = EngineInfo(name=f"complementary-filter(fc={cutoff_hz:g} Hz)", backend="numba", device="cpu",
                               dtype="float32", sensor_size=self.sensor_size, input_kind="events")
        self._log = np.zeros((height, width), dtype=np.float32)
        self._t_last = np.zeros((height, width), dtype=np.int64)
        self._out = np.zeros((height, width), dtype=np.float32)
        self._started = False

    def _open_impl(self) -> None:
        _compile()

    def _reset_impl(self) -> None:
        self._log.fill(0.0)
        self._started = False

    def _step_impl(self, window: Window) -> np.ndarray:
        integrate, render = _compile()
        ev = window.events
        if not self._started:
            # the first time seen is the state's time origin: no decay from t=0 µs to a Unix-epoch timestamp
            self._t_last.fill(ev["t"][0] if ev.size else window.t0_us)
            self._started = True
        if ev.size:
            width, height = self.sensor_size
            if int(ev["x"].max()) >= width or int(ev["y"].max()) >= height:
                raise ValueError(f"events outside the {width}x{height} sensor reached the engine")
            integrate(self._log, self._t_last, np.ascontiguousarray(ev["t"]), np.ascontiguousarray(ev["x"]),
                      np.ascontiguousarray(ev["y"]), np.ascontiguousarray(ev["p"]), self.contrast_on,
                      self.contrast_off, self.alpha_per_us)
        render(self._log, self._t_last, max(window.t1_us - 1, int(ev["t"][-1]) if ev.size else 0),
               self.alpha_per_us, self.gain, self._out)
        return self._out
