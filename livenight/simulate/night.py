"""Night event-camera simulator: a moving textured street scene seen by a DVS in very low light.

Why it exists
-------------
Demos and tests need a recording that is small, deterministic, always available and *looks like a night
recording*: events with the artefacts NER-Net was built for, and well-lit ground-truth frames aligned the way
RLED aligns them. This module renders such a recording in a few seconds and can write it as an RLED h5 file.

What is modelled (and why)
--------------------------
* **Scene.** A random but seed-deterministic, periodic texture (smooth gradients, Gaussian blobs, discs,
  rectangles with window grids, stripe patches; varied contrast) pans slowly (camera motion), and a few "cars"
  (textured bodies, dark wheels and windows, *emissive* headlights and tail lights) cross the view faster.
  Frames are sampled with sub-pixel shifts of the pre-generated texture (bilinear from the four neighbouring
  integer shifts), so motion is smooth and rendering costs a few operations per pixel.
* **Night photocurrent.** ``I = illuminance · reflectance + emission + dark_current``, in units of a reference
  photocurrent. Lamps (headlights) are emitters: they stay bright whatever the illuminance.
* **Slow photoreceptor = event trails.** Each pixel low-pass filters ``log I`` with a time constant
  ``tau = tau_ref_us / I`` (bandwidth proportional to photocurrent, as in a logarithmic photoreceptor). In the
  dark the filtered value creeps towards a new level, so after an edge a pixel keeps firing same-polarity events
  with *growing gaps* — the low-light "event trails" that NER-Net's ETS pre-processing collapses and its
  learnable LETC representation is trained to undo. Brighter light gives a shorter trail.
* **Change detector.** Per-pixel ON/OFF thresholds with Gaussian mismatch (clipped to a minimum); the event time
  is interpolated linearly inside the sub-step where the threshold is crossed, several crossings give several
  events, and after each event the pixel is blind for a refractory period. An event resets the pixel's reference
  to the filtered value at the moment the event is emitted (so a change accumulated during the refractory period
  fires at its end, and change beyond one threshold is lost, as in a real pixel).
* **Noise.** Background activity (Poisson per pixel, higher rate in darker pixels) and a few hot pixels firing
  ON events at a fixed high rate. Noise is added to the stream and does not reset the signal path.

Time stepping
-------------
The scene is sampled on sub-steps of at most ``DvsParams.max_step_us`` (1 ms), shortened so the fastest motion
moves at most ``DvsParams.max_step_px`` pixels per step. Inside a step each pixel further splits the step when
its log input changes by more than ``max_dlog_per_substep``. The numba kernel loops pixel-major over chunks of
~20 ms (state stays in registers), then each chunk's events are merged with the noise and stably sorted by time.
Blocks of pixels run on a small thread pool (the kernel releases the GIL); their events are joined in pixel order
before the sort, so the output does not depend on the number of threads. All randomness comes from
``np.random.default_rng`` streams spawned from the seed: a seed gives bit-identical events and frames.

Speed (2-core AMD EPYC VM, default parameters): about 1 simulated second per wall second at 346×260
(~0.8 M events/s), ~0.1 at 1280×720 (~3.5 M events/s); ~10–18 ns of CPU per pixel and sub-step.

Ground truth (RLED protocol)
----------------------------
Frames show the *well-lit* scene (reflectance → uint8, lamps white), as a day camera behind a beam splitter
would. Frame ``i`` has exposure midpoint ``mid_us[i] = t0 + 10 ms + round(i · 1e6 / fps)`` and exposure end
``end_us[i] = mid_us[i] + gt_exposure_us // 2`` (the RLED image timestamp); ``n`` counts the frames whose ±10 ms
window fits in the recording: ``n = floor((seconds − 0.02) · fps) + 1`` (= ``floor(seconds · fps)`` for the
usual 2 s at 25 fps → 50). ``event_indices[i] = [searchsorted(t, mid − 10 ms), searchsorted(t, mid + 10 ms)]``
(both ``'left'``), half-open. Frames are rendered at the midpoint (no motion blur).

Example:
    >>> from livenight.simulate import simulate_night
    >>> sim = simulate_night(seconds=0.2, size=(64, 48), seed=1)
    >>> sim.frames.shape, sim.events.dtype.names
    ((5, 48, 64), ('t', 'x', 'y', 'p'))

numba is imported on first use (``import livenight.simulate`` stays cheap); kernels are compiled with
``cache=True``, so only the first run on a machine pays the compile time (a few seconds).
"""

from __future__ import annotations

import math
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from os import PathLike

import numpy as np

from .._optional import require
from ..events import EVENT_DTYPE

__all__ = ["NightScene", "DvsParams", "SimResult", "simulate_night", "write_night"]

#: RLED pairs each image with the events within ±10 ms of its exposure midpoint.
RLED_HALF_WINDOW_US = 10_000
#: Duration of one kernel call / one noise draw; events are sorted chunk by chunk.
_CHUNK_US = 20_000
#: Smallest per-thread event buffer of the kernel (it returns early and is resumed when the buffer fills).
_MIN_BUFFER_EVENTS = 1 << 16
#: Reference size: texture features and car sizes scale with min(width, height) / 260 (DAVIS346 height).
_REF_SIDE_PX = 260.0


# ----------------------------------------------------------------------------------------------------------------
# parameters and result


def _check_positive(owner: str, name: str, value: float, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}.{name} must be finite and {need} (got {value!r})")


@dataclass(frozen=True)
class NightScene:
    """What the camera looks at and how it moves. Sizes are in sensor pixels, speeds in pixels per second.

    Attributes:
        pan_px_per_s: camera pan speed; the texture slides across the view at this speed.
        pan_angle_deg: direction of the pan (0 = the view moves right over the texture, so content moves left;
            90 = the view moves down). A slight angle makes horizontal edges produce events too.
        n_objects: number of cars crossing the view.
        object_speed_px_per_s: (min, max) car speed; each car draws a speed in this range and a random direction.
        headlight_emission: photocurrent of a headlight (same units as ``DvsParams.illuminance``); tail lights
            emit a third of it. Independent of the illuminance: lamps are light sources.
        feature_scale: size multiplier of texture features and cars; ``None`` = min(width, height) / 260, so the
            scene looks alike at 346×260, 640×480 or 1280×720.
        texture_density: multiplier of the number of texture shapes (1.0 ≈ one shape per (28·scale)² pixels).
        contrast: texture contrast around the mean reflectance (0 = a flat grey field, 1 = default).
        reflectance_min: darkest reflectance after the contrast stretch.
        reflectance_max: brightest texture reflectance (lamps render as 1.0).
        gt_exposure_us: exposure of the ground-truth camera; the frame timestamp is its end (mid + exposure // 2).
    """

    pan_px_per_s: float = 40.0
    pan_angle_deg: float = 15.0
    n_objects: int = 3
    object_speed_px_per_s: tuple[float, float] = (90.0, 180.0)
    headlight_emission: float = 1.5
    feature_scale: float | None = None
    texture_density: float = 1.0
    contrast: float = 1.0
    reflectance_min: float = 0.02
    reflectance_max: float = 0.92
    gt_exposure_us: int = 10_000

    def __post_init__(self) -> None:
        o = "NightScene"
        _check_positive(o, "pan_px_per_s", float(self.pan_px_per_s), allow_zero=True)
        if not math.isfinite(float(self.pan_angle_deg)):
            raise ValueError(f"{o}.pan_angle_deg must be finite (got {self.pan_angle_deg!r})")
        if not isinstance(self.n_objects, numbers.Integral) or self.n_objects < 0:
            raise ValueError(f"{o}.n_objects must be an integer >= 0 (got {self.n_objects!r})")
        lo, hi = (float(v) for v in self.object_speed_px_per_s)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            raise ValueError(f"{o}.object_speed_px_per_s must be (min, max) with 0 <= min <= max "
                             f"(got {self.object_speed_px_per_s!r})")
        _check_positive(o, "headlight_emission", float(self.headlight_emission), allow_zero=True)
        if self.feature_scale is not None:
            _check_positive(o, "feature_scale", float(self.feature_scale))
        _check_positive(o, "texture_density", float(self.texture_density), allow_zero=True)
        _check_positive(o, "contrast", float(self.contrast), allow_zero=True)
        if not (0.0 <= self.reflectance_min < self.reflectance_max <= 1.0):
            raise ValueError(f"{o}: need 0 <= reflectance_min < reflectance_max <= 1 "
                             f"(got {self.reflectance_min!r}, {self.reflectance_max!r})")
        if not isinstance(self.gt_exposure_us, numbers.Integral) or self.gt_exposure_us < 0:
            raise ValueError(f"{o}.gt_exposure_us must be an integer >= 0 (got {self.gt_exposure_us!r})")


@dataclass(frozen=True)
class DvsParams:
    """The event sensor at night. Photocurrents are in units of a reference photocurrent ``I_ref``.

    Attributes:
        threshold_on: mean ON contrast threshold (log units).
        threshold_off: mean OFF contrast threshold (log units, positive).
        threshold_sigma: per-pixel Gaussian mismatch of both thresholds (log units).
        threshold_min: thresholds are clipped below at this value.
        refractory_us: dead time after each event of a pixel.
        illuminance: photocurrent of a white (reflectance 1) surface. 0.05 is a dim street at night; at 1.0 the
            photoreceptor time constant of a white surface equals ``tau_ref_us``.
        dark_current: photocurrent added to every pixel (limits contrast in the darkest areas).
        tau_ref_us: photoreceptor time constant at photocurrent 1.0; ``tau = tau_ref_us / I``.
        ba_rate_hz: background-activity rate of a pixel whose photocurrent is ``ba_ref_current``; a pixel with
            (mean) photocurrent ``I`` fires at ``ba_rate_hz · min((ba_ref_current / I) ** ba_dark_exponent,
            ba_max_factor)`` noise events per second, half ON, half OFF: darker pixels and darker nights are noisier.
        ba_ref_current: photocurrent at which the noise rate is ``ba_rate_hz`` (0.025: mid-grey at the default
            illuminance).
        ba_dark_exponent: how fast the noise rate grows in darker pixels.
        ba_max_factor: cap of the dark-pixel noise rate, as a multiple of ``ba_rate_hz``.
        n_hot_pixels: number of hot pixels (fixed random positions).
        hot_rate_hz: Poisson rate of each hot pixel (ON events).
        max_step_us: longest simulation sub-step.
        max_step_px: sub-steps are shortened so the fastest motion moves at most this many pixels per step.
        max_dlog_per_substep: a pixel splits a step further when its log input changes more than this.
    """

    threshold_on: float = 0.25
    threshold_off: float = 0.25
    threshold_sigma: float = 0.03
    threshold_min: float = 0.05
    refractory_us: float = 200.0
    illuminance: float = 0.05
    dark_current: float = 0.001
    tau_ref_us: float = 200.0
    ba_rate_hz: float = 0.3
    ba_ref_current: float = 0.025
    ba_dark_exponent: float = 0.5
    ba_max_factor: float = 10.0
    n_hot_pixels: int = 4
    hot_rate_hz: float = 100.0
    max_step_us: int = 1000
    max_step_px: float = 0.5
    max_dlog_per_substep: float = 0.25

    def __post_init__(self) -> None:
        o = "DvsParams"
        for name in ("threshold_on", "threshold_off", "threshold_min", "illuminance", "dark_current",
                     "ba_ref_current", "ba_max_factor", "max_step_px", "max_dlog_per_substep"):
            _check_positive(o, name, float(getattr(self, name)))
        for name in ("threshold_sigma", "refractory_us", "tau_ref_us", "ba_rate_hz", "ba_dark_exponent",
                     "hot_rate_hz"):
            _check_positive(o, name, float(getattr(self, name)), allow_zero=True)
        for name in ("n_hot_pixels", "max_step_us"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or v < (0 if name == "n_hot_pixels" else 1):
                raise ValueError(f"{o}.{name} must be an integer >= {0 if name == 'n_hot_pixels' else 1} "
                                 f"(got {v!r})")


@dataclass(frozen=True)
class SimResult:
    """A simulated recording: events plus well-lit ground-truth frames aligned by the RLED protocol.

    Attributes:
        events: :data:`~livenight.events.EVENT_DTYPE`, sorted by ``t`` (int64 µs).
        frames: (n, H, W) uint8 ground truth (well-lit reflectance).
        frame_mid_us: int64 (n,) exposure midpoints.
        frame_end_us: int64 (n,) exposure ends = the RLED image timestamps.
        event_indices: int64 (n, 2) half-open event index range within ±10 ms of each midpoint.
        sensor_size: (width, height).
        t0_us: start of the simulated interval; events lie in [t0_us, t0_us + duration_us].
        duration_us: simulated duration.
    """

    events: np.ndarray
    frames: np.ndarray
    frame_mid_us: np.ndarray
    frame_end_us: np.ndarray
    event_indices: np.ndarray
    sensor_size: tuple[int, int]
    t0_us: int = 0
    duration_us: int = 0

    @property
    def event_rate_hz(self) -> float:
        """Mean event rate over the simulated interval (events per second)."""
        return len(self.events) / (self.duration_us * 1e-6) if self.duration_us else 0.0


# ----------------------------------------------------------------------------------------------------------------
# numba kernels. Written as plain functions and compiled on first use by _jit(), which replaces the module
# globals by their numba dispatchers: `import livenight.simulate` must not import numba, and kernels that call
# each other find the compiled versions through the module globals. cache=True keeps compile cost to one run.


def _texture_at(x, y, k, tex, oxi, oyi, fx, fy):
    """Reflectance of the panning texture at pixel (x, y), step k: bilinear sample at a sub-pixel shift."""
    ty = y + oyi[k]
    tx = x + oxi[k]
    gx = fx[k]
    gy = fy[k]
    t00 = tex[ty, tx]
    t01 = tex[ty, tx + 1]
    t10 = tex[ty + 1, tx]
    t11 = tex[ty + 1, tx + 1]
    top = t00 + gx * (t01 - t00)
    bot = t10 + gx * (t11 - t10)
    return top + gy * (bot - top)


def _scene_at(x, y, k, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y):
    """Reflectance and emission seen by pixel (x, y) at step k: bilinear texture sample + cars on top."""
    r = _texture_at(x, y, k, tex, oxi, oyi, fx, fy)
    e = 0.0
    for j in range(spr_w.shape[0]):
        u = x - obj_x[k, j] + 1.0  # sprite arrays carry a 1-pixel zero border
        if u < 0.0 or u >= spr_w[j] + 1.0:
            continue
        v = y - obj_y[k, j] + 1.0
        if v < 0.0 or v >= spr_h[j] + 1.0:
            continue
        iu = int(u)
        iv = int(v)
        au = u - iu
        av = v - iv
        w00 = (1.0 - au) * (1.0 - av)
        w01 = au * (1.0 - av)
        w10 = (1.0 - au) * av
        w11 = au * av
        a = (w00 * spr_a[j, iv, iu] + w01 * spr_a[j, iv, iu + 1]
             + w10 * spr_a[j, iv + 1, iu] + w11 * spr_a[j, iv + 1, iu + 1])
        if a <= 0.0:
            continue
        ar = (w00 * spr_ar[j, iv, iu] + w01 * spr_ar[j, iv, iu + 1]
              + w10 * spr_ar[j, iv + 1, iu] + w11 * spr_ar[j, iv + 1, iu + 1])
        ee = (w00 * spr_e[j, iv, iu] + w01 * spr_e[j, iv, iu + 1]
              + w10 * spr_e[j, iv + 1, iu] + w11 * spr_e[j, iv + 1, iu + 1])
        r = r * (1.0 - a) + ar
        e = e * (1.0 - a) + ee
    return r, e


def _advance_pixel(lf, lref, tlast, lin0, lin1, cur1, ta, tb, con, coff, refr, tau_ref, max_dlog, cap,
                   ev_t, ev_p, n):
    """Advance one pixel from ``ta`` to ``tb`` (µs); its log input goes linearly from ``lin0`` to ``lin1``.

    ``lf`` is the low-passed log photocurrent, ``lref`` the reference of the change detector, ``tlast`` the time of
    the last event, ``cur1`` the photocurrent at ``tb``. Events go to ``ev_t``/``ev_p`` from index ``n`` (at most
    ``cap`` of them; further crossings stay pending and fire in the next step). Returns the new state and ``n``.
    """
    d_in = lin1 - lin0
    if abs(d_in) <= max_dlog:
        # fast path (most pixel-steps): one sub-step and no threshold reached at either end. lf moves
        # monotonically inside the step, so it cannot cross a threshold in between either.
        kk = (tb - ta) * cur1
        lf_new = lf + kk / (tau_ref + kk) * (lin1 - lf)
        d0 = lf - lref
        d1 = lf_new - lref
        if -coff < d0 < con and -coff < d1 < con:
            return lf_new, lref, tlast, n
        nsub = 1
    else:
        nsub = int(math.ceil(abs(d_in) / max_dlog))
    dt = (tb - ta) / nsub
    n_first = n
    for s in range(nsub):
        t0 = ta + s * dt
        t1 = tb if s == nsub - 1 else t0 + dt
        if nsub == 1:
            lin = lin1
            cur = cur1
        else:
            lin = lin0 + d_in * (s + 1) / nsub
            cur = math.exp(lin)
        # implicit-Euler first-order low pass with tau = tau_ref / I: stable for any step, exact as dt/tau -> 0
        kk = dt * cur
        lf_new = lf + kk / (tau_ref + kk) * (lin - lf)
        slope = (lf_new - lf) / dt if dt > 0.0 else 0.0
        t = t0
        while n - n_first < cap:
            t_ready = tlast + refr
            t_a = t if t > t_ready else t_ready
            if t_a > t1:
                break
            la = lf + slope * (t_a - t0)
            d = la - lref
            if d >= con or d <= -coff:  # change accumulated during the refractory period fires at its end
                ev_t[n] = int(math.floor(t_a))
                ev_p[n] = 1 if d > 0.0 else 0
                n += 1
                lref = la
                tlast = t_a
                t = t_a
                continue
            if slope > 0.0:
                target = lref + con
                pol = 1
            elif slope < 0.0:
                target = lref - coff
                pol = 0
            else:
                break
            tc = t0 + (target - lf) / slope
            if tc > t1:
                break
            if tc < t_a:
                tc = t_a
            ev_t[n] = int(math.floor(tc))
            ev_p[n] = pol
            n += 1
            lref = target
            tlast = tc
            t = tc
        lf = lf_new
    return lf, lref, tlast, n


def _chunk_kernel(p_start, p_end, width, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y,
                  t_steps, illum, dark, tau_ref, max_dlog, refr, cap,
                  lf, lref, tlast, lin, con, coff, mean_cur, ev_t, ev_x, ev_y, ev_p, n):
    """Simulate all steps of one chunk for the flat pixel indices ``[p_start, p_end)``, pixel by pixel.

    Pixels that no car touches during the chunk (outside the cars' bounding boxes over all its steps) sample the
    texture alone, which skips the per-car tests.

    Returns ``(p_next, n)``: ``p_next < p_end`` when the event buffers are nearly full (the caller drains them
    and calls again from ``p_next``). Per-pixel state arrays are updated in place, only inside the range, so
    disjoint ranges can run concurrently (the kernel releases the GIL).
    """
    n_steps = oxi.shape[0]
    capacity = ev_t.shape[0]
    n_obj = spr_w.shape[0]
    box = np.empty((n_obj, 4))  # x0, x1, y0, y1 of each car over the chunk
    for j in range(n_obj):
        box[j, 0] = obj_x[:, j].min() - 1.0
        box[j, 1] = obj_x[:, j].max() + spr_w[j] + 1.0
        box[j, 2] = obj_y[:, j].min() - 1.0
        box[j, 3] = obj_y[:, j].max() + spr_h[j] + 1.0
    for p in range(p_start, p_end):
        if n + n_steps * cap > capacity:
            return p, n
        y = p // width
        x = p - y * width
        s_lf = np.float64(lf[p])
        s_lref = np.float64(lref[p])
        s_tl = tlast[p]
        s_lin = np.float64(lin[p])
        s_con = np.float64(con[p])
        s_coff = np.float64(coff[p])
        near_car = False
        for j in range(n_obj):
            if box[j, 0] <= x <= box[j, 1] and box[j, 2] <= y <= box[j, 3]:
                near_car = True
        acc = 0.0
        for k in range(n_steps):
            if near_car:
                r, e = _scene_at(x, y, k, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y)
                c1 = illum * r + e + dark
            else:
                c1 = illum * _texture_at(x, y, k, tex, oxi, oyi, fx, fy) + dark
            l1 = math.log(c1)
            acc += c1
            if abs(l1 - s_lin) <= max_dlog:
                # fast path, inlined here by hand (same arithmetic as in _advance_pixel): no threshold reached
                kk = (t_steps[k + 1] - t_steps[k]) * c1
                lf_new = s_lf + kk / (tau_ref + kk) * (l1 - s_lf)
                d0 = s_lf - s_lref
                d1 = lf_new - s_lref
                if -s_coff < d0 < s_con and -s_coff < d1 < s_con:
                    s_lf = lf_new
                    s_lin = l1
                    continue
            n0 = n
            s_lf, s_lref, s_tl, n = _advance_pixel(s_lf, s_lref, s_tl, s_lin, l1, c1, t_steps[k], t_steps[k + 1],
                                                   s_con, s_coff, refr, tau_ref, max_dlog, cap, ev_t, ev_p, n)
            for q in range(n0, n):
                ev_x[q] = x
                ev_y[q] = y
            s_lin = l1
        lf[p] = s_lf
        lref[p] = s_lref
        tlast[p] = s_tl
        lin[p] = s_lin
        mean_cur[p] = acc / n_steps if n_steps > 0 else mean_cur[p]
    return p_end, n


def _video_kernel(p_start, p_end, width, cur, t_steps, tau_ref, max_dlog, refr, cap,
                  lf, lref, tlast, lin, con, coff, mean_cur, ev_t, ev_x, ev_y, ev_p, n):
    """Like :func:`_chunk_kernel`, but the photocurrent of every pixel and step is given: ``cur[k, p]`` at
    ``t_steps[k + 1]`` (a rendered video, :mod:`livenight.simulate.natural`). Same state arrays, same return."""
    n_steps = cur.shape[0]
    capacity = ev_t.shape[0]
    for p in range(p_start, p_end):
        if n + n_steps * cap > capacity:
            return p, n
        y = p // width
        x = p - y * width
        s_lf = np.float64(lf[p])
        s_lref = np.float64(lref[p])
        s_tl = tlast[p]
        s_lin = np.float64(lin[p])
        s_con = np.float64(con[p])
        s_coff = np.float64(coff[p])
        acc = 0.0
        for k in range(n_steps):
            c1 = np.float64(cur[k, p])
            l1 = math.log(c1)
            acc += c1
            if abs(l1 - s_lin) <= max_dlog:
                kk = (t_steps[k + 1] - t_steps[k]) * c1
                lf_new = s_lf + kk / (tau_ref + kk) * (l1 - s_lf)
                d0 = s_lf - s_lref
                d1 = lf_new - s_lref
                if -s_coff < d0 < s_con and -s_coff < d1 < s_con:
                    s_lf = lf_new
                    s_lin = l1
                    continue
            n0 = n
            s_lf, s_lref, s_tl, n = _advance_pixel(s_lf, s_lref, s_tl, s_lin, l1, c1, t_steps[k], t_steps[k + 1],
                                                   s_con, s_coff, refr, tau_ref, max_dlog, cap, ev_t, ev_p, n)
            for q in range(n0, n):
                ev_x[q] = x
                ev_y[q] = y
            s_lin = l1
        lf[p] = s_lf
        lref[p] = s_lref
        tlast[p] = s_tl
        lin[p] = s_lin
        mean_cur[p] = acc / n_steps if n_steps > 0 else mean_cur[p]
    return p_end, n


def _render_kernel(out_r, out_e, k, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y):
    """Render reflectance and emission of the whole view at step ``k`` of the given motion arrays."""
    height, width = out_r.shape
    for y in range(height):
        for x in range(width):
            r, e = _scene_at(x, y, k, tex, oxi, oyi, fx, fy, spr_ar, spr_a, spr_e, spr_w, spr_h, obj_x, obj_y)
            out_r[y, x] = r
            out_e[y, x] = e


def _trace_kernel(log_in, cur_in, t_us, con, coff, refr, tau_ref, max_dlog, cap, ev_t, ev_p):
    """One pixel driven by a given photocurrent series (for tests and studies); starts in steady state."""
    lf = log_in[0]
    lref = lf
    tl = -1e18
    n = 0
    for k in range(1, t_us.shape[0]):
        if n + cap > ev_t.shape[0]:
            break
        lf, lref, tl, n = _advance_pixel(lf, lref, tl, log_in[k - 1], log_in[k], cur_in[k], t_us[k - 1], t_us[k],
                                         con, coff, refr, tau_ref, max_dlog, cap, ev_t, ev_p, n)
    return n


#: (name, inline): helpers are inlined at numba-IR level; called as real functions, the array arguments would be
#: reference-counted on every call (atomic operations), costing ~100 ns per pixel and step.
_JIT_NAMES = (("_texture_at", True), ("_scene_at", True), ("_advance_pixel", True), ("_chunk_kernel", False),
              ("_video_kernel", False),
              ("_render_kernel", False), ("_trace_kernel", False))
_jitted = False
_jit_lock = threading.Lock()


def _jit() -> None:
    """Compile the kernels (numba, cached on disk) the first time the simulator runs."""
    global _jitted
    with _jit_lock:
        if _jitted:
            return
        numba = require("numba", "the night event simulator (livenight.simulate)")
        g = globals()
        for name, inline in _JIT_NAMES:
            g[name] = numba.njit(cache=True, nogil=True, inline="always" if inline else "never")(g[name])
        _jitted = True


# ----------------------------------------------------------------------------------------------------------------
# scene generation (numpy, once per simulation)


def _paint(canvas: np.ndarray, y0: int, x0: int, alpha: np.ndarray, value) -> None:
    """Alpha-blend a patch (value: scalar or array of alpha's shape) into the periodic canvas at (y0, x0)."""
    ht, wt = canvas.shape
    rows = (y0 + np.arange(alpha.shape[0])) % ht
    cols = (x0 + np.arange(alpha.shape[1])) % wt
    ix = np.ix_(rows, cols)
    canvas[ix] = canvas[ix] * (1.0 - alpha) + alpha * value


def _disc_alpha(radius: float) -> np.ndarray:
    """Anti-aliased disc coverage in a (2r+2)² patch."""
    size = int(math.ceil(2 * radius)) + 2
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    d = np.hypot(yy - c, xx - c)
    return np.clip(radius - d + 0.5, 0.0, 1.0)


def _make_texture(rng: np.random.Generator, ht: int, wt: int, scale: float, scene: NightScene) -> np.ndarray:
    """A periodic (ht, wt) float32 reflectance texture: smooth gradients plus blobs, discs, buildings, stripes."""
    yy, xx = np.mgrid[0:ht, 0:wt].astype(np.float64)
    canvas = np.full((ht, wt), 0.3)
    # smooth periodic illumination-like gradients (integer wave numbers keep the texture periodic)
    for _ in range(4):
        kx, ky = rng.integers(0, 3, size=2)
        if kx == 0 and ky == 0:
            kx = 1
        canvas += rng.uniform(0.04, 0.1) * np.cos(2 * np.pi * (kx * xx / wt + ky * yy / ht) + rng.uniform(0, 2 * np.pi))
    n_shapes = int(round(scene.texture_density * ht * wt / (28.0 * scale) ** 2))
    for _ in range(n_shapes):
        kind = rng.choice(5, p=[0.18, 0.22, 0.3, 0.15, 0.15])
        y0, x0 = int(rng.integers(0, ht)), int(rng.integers(0, wt))
        size = float(np.exp(rng.uniform(np.log(5.0), np.log(70.0)))) * scale
        value = float(rng.uniform(0.0, 1.0) ** 1.3)
        if kind == 0:  # smooth Gaussian blob
            sig = size / 2.5
            half = int(3 * sig) + 1
            g = np.arange(-half, half + 1)
            alpha = rng.uniform(0.4, 0.9) * np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * sig * sig))
            _paint(canvas, y0, x0, alpha, value)
        elif kind == 1:  # disc, sharp anti-aliased edge
            _paint(canvas, y0, x0, _disc_alpha(max(size / 2, 1.5)), value)
        elif kind == 2:  # rectangle (building), often with a grid of windows
            h = max(3, int(size * rng.uniform(0.6, 1.6)))
            w = max(3, int(size * rng.uniform(0.6, 1.6)))
            patch = np.full((h, w), value)
            if h > 12 * scale and w > 12 * scale and rng.random() < 0.7:
                step = max(4, int(rng.uniform(6, 12) * scale))
                win = max(2, int(step * rng.uniform(0.35, 0.6)))
                wv = float(np.clip(value + rng.choice([-1, 1]) * rng.uniform(0.25, 0.6), 0, 1))
                for r0 in range(step // 2, h - win, step):
                    for c0 in range(step // 2, w - win, step):
                        patch[r0:r0 + win, c0:c0 + win] = wv
            _paint(canvas, y0, x0, np.ones((h, w)), patch)
        elif kind == 3:  # oriented stripes
            h = max(4, int(size * rng.uniform(0.8, 1.5)))
            w = max(4, int(size * rng.uniform(0.8, 1.5)))
            period = rng.uniform(4.0, 14.0) * scale
            ang = rng.uniform(0, np.pi)
            py, px = np.mgrid[0:h, 0:w]
            phase = (px * np.cos(ang) + py * np.sin(ang)) * 2 * np.pi / period
            v2 = float(np.clip(value + rng.choice([-1, 1]) * rng.uniform(0.2, 0.6), 0, 1))
            wave = np.sin(phase)
            if rng.random() < 0.5:  # square wave with soft edges
                wave = np.clip(wave * 4, -1, 1)
            _paint(canvas, y0, x0, np.ones((h, w)), value + (v2 - value) * (0.5 + 0.5 * wave))
        else:  # rectangle with a linear gradient
            h = max(3, int(size * rng.uniform(0.6, 1.6)))
            w = max(3, int(size * rng.uniform(0.6, 1.6)))
            v2 = float(rng.uniform(0.0, 1.0))
            ang = rng.uniform(0, 2 * np.pi)
            py, px = np.mgrid[0:h, 0:w]
            proj = px * np.cos(ang) + py * np.sin(ang)
            proj = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-9)
            _paint(canvas, y0, x0, np.ones((h, w)) * rng.uniform(0.6, 1.0), value + (v2 - value) * proj)
    mean = 0.3
    canvas = mean + scene.contrast * (canvas - mean)
    return np.clip(canvas, scene.reflectance_min, scene.reflectance_max).astype(np.float32)


def _make_car(rng: np.random.Generator, scale: float, emission: float, facing_right: bool):
    """One car sprite: (alpha·reflectance, alpha, emission) float32 arrays of shape (h, w), drawn 2× supersampled."""
    ss = 2
    length = rng.uniform(45.0, 80.0) * scale
    height = length * rng.uniform(0.36, 0.48)
    w, h = int(math.ceil(length)), int(math.ceil(height))
    wh, hh = w * ss, h * ss
    yy, xx = np.mgrid[0:hh, 0:wh].astype(np.float64) / ss  # sprite pixel units
    alpha = np.zeros((hh, wh))
    refl = np.zeros((hh, wh))
    emis = np.zeros((hh, wh))
    body = float(rng.uniform(0.1, 0.85))
    wheel_r = 0.16 * height
    body_top = 0.45 * height
    body_bot = height - wheel_r
    # lower body, cabin, wheels
    lower = (yy >= body_top) & (yy < body_bot) & (xx >= 0.02 * length) & (xx < 0.98 * length)
    cab_x0, cab_x1 = (0.25 if facing_right else 0.3) * length, (0.7 if facing_right else 0.75) * length
    cabin = (yy >= 0.08 * height) & (yy < body_top) & (xx >= cab_x0) & (xx < cab_x1)
    alpha[lower | cabin] = 1.0
    refl[lower | cabin] = body
    # a contrasting stripe along the body and darker door lines
    stripe_y = body_top + rng.uniform(0.2, 0.5) * (body_bot - body_top)
    stripe = lower & (np.abs(yy - stripe_y) < 0.06 * height)
    refl[stripe] = float(np.clip(body + rng.choice([-1, 1]) * 0.35, 0.03, 0.95))
    for dx in (0.42, 0.58):
        refl[lower & (np.abs(xx - dx * length) < 0.5)] = body * 0.4
    # windows (dark glass)
    for wx0, wx1 in ((cab_x0 + 2, (cab_x0 + cab_x1) / 2 - 1), ((cab_x0 + cab_x1) / 2 + 1, cab_x1 - 2)):
        win = (yy >= 0.14 * height) & (yy < body_top - 1) & (xx >= wx0) & (xx < wx1)
        refl[win] = 0.06
    for cx in (0.22 * length, 0.78 * length):
        d = np.hypot(xx - cx, yy - (height - wheel_r - 0.5))
        wheel = d < wheel_r
        alpha[wheel] = 1.0
        refl[wheel] = 0.03
        refl[d < 0.45 * wheel_r] = 0.35  # hub cap
    # head and tail lights: reflectance 1 (white in the well-lit ground truth) and emissive at night
    lamp_r = max(0.07 * height, 1.2)
    lamp_y = body_top + 0.3 * (body_bot - body_top)
    front_x = length - lamp_r - 0.5 if facing_right else lamp_r + 0.5
    back_x = lamp_r + 0.5 if facing_right else length - lamp_r - 0.5
    for cx, e in ((front_x, emission), (back_x, emission / 3.0)):
        lamp = np.hypot(xx - cx, yy - lamp_y) < lamp_r
        alpha[lamp] = 1.0
        refl[lamp] = 1.0
        emis[lamp] = e

    def down(a: np.ndarray) -> np.ndarray:
        return a.reshape(h, ss, w, ss).mean(axis=(1, 3))

    a = down(alpha)
    return down(alpha * refl).astype(np.float32), a.astype(np.float32), down(alpha * emis).astype(np.float32)


@dataclass(frozen=True)
class _Scene:
    """Everything needed to render the view at any time (internal)."""

    width: int
    height: int
    tex_ext: np.ndarray  # (ht + height + 1, wt + width + 1) float32, periodic texture padded by wrap
    tex_period: tuple[int, int]  # (ht, wt)
    cam_start: tuple[float, float]  # (x, y) of the view's top-left in the texture at t = 0
    cam_vel: tuple[float, float]  # px/s
    spr_ar: np.ndarray  # (n_obj, hs + 2, ws + 2)
    spr_a: np.ndarray
    spr_e: np.ndarray
    spr_w: np.ndarray  # float64 (n_obj,)
    spr_h: np.ndarray
    obj_x0: np.ndarray  # float64 (n_obj,) screen x of the sprite's left edge at t = 0
    obj_y: np.ndarray  # float64 (n_obj,) screen y of the sprite's top edge
    obj_v: np.ndarray  # float64 (n_obj,) px/s (signed)
    obj_period: np.ndarray  # float64 (n_obj,) wrap-around period of x
    max_speed_px_per_s: float

    def motion(self, t_s: np.ndarray):
        """Per-time kernel inputs: integer/fractional texture offsets and car positions."""
        t_s = np.asarray(t_s, dtype=np.float64)
        ht, wt = self.tex_period
        cx = np.mod(self.cam_start[0] + self.cam_vel[0] * t_s, wt)
        cy = np.mod(self.cam_start[1] + self.cam_vel[1] * t_s, ht)
        oxi = np.floor(cx).astype(np.int64)
        oyi = np.floor(cy).astype(np.int64)
        fx = cx - oxi
        fy = cy - oyi
        oxi %= wt  # guards the (rounding) case cx == wt
        oyi %= ht
        left = -self.spr_w - 10.0
        obj_x = left + np.mod(self.obj_x0 - left + self.obj_v * t_s[:, None], self.obj_period)
        obj_y = np.broadcast_to(self.obj_y, obj_x.shape).copy()
        return oxi, oyi, fx, fy, obj_x, obj_y

    def render(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(reflectance, emission) float32 (H, W) images at time ``t_s`` (seconds since the start)."""
        oxi, oyi, fx, fy, obj_x, obj_y = self.motion(np.array([t_s]))
        r = np.empty((self.height, self.width), np.float32)
        e = np.empty((self.height, self.width), np.float32)
        _render_kernel(r, e, 0, self.tex_ext, oxi, oyi, fx, fy, self.spr_ar, self.spr_a, self.spr_e, self.spr_w,
                       self.spr_h, obj_x, obj_y)
        return r, e


def _texture_scene(tex: np.ndarray, width: int, height: int, cam_vel_px_per_s: tuple[float, float] = (0.0, 0.0),
                   cam_start: tuple[float, float] = (0.0, 0.0)) -> _Scene:
    """A scene made of a given periodic reflectance texture only (no cars): for tests and studies."""
    tex = np.asarray(tex, dtype=np.float32)
    ht, wt = tex.shape
    tex_ext = np.pad(tex, ((0, height + 1), (0, width + 1)), mode="wrap")
    no_sprite = np.zeros((0, 2, 2), np.float32)
    none = np.zeros(0)
    vel = (float(cam_vel_px_per_s[0]), float(cam_vel_px_per_s[1]))
    return _Scene(width, height, tex_ext, (ht, wt), (float(cam_start[0]), float(cam_start[1])), vel, no_sprite,
                  no_sprite, no_sprite, none, none, none, none, none, none, float(math.hypot(*vel)))


def _build_scene(width: int, height: int, scene: NightScene, rng_tex: np.random.Generator,
                 rng_obj: np.random.Generator) -> _Scene:
    scale = scene.feature_scale if scene.feature_scale is not None else min(width, height) / _REF_SIDE_PX
    scale = max(float(scale), 0.25)
    ht, wt = max(2 * height, 64), max(2 * width, 64)
    tex = _make_texture(rng_tex, ht, wt, scale, scene)
    tex_ext = np.pad(tex, ((0, height + 1), (0, width + 1)), mode="wrap")
    ang = math.radians(scene.pan_angle_deg)
    vel = (scene.pan_px_per_s * math.cos(ang), scene.pan_px_per_s * math.sin(ang))
    start = (float(rng_tex.uniform(0, wt)), float(rng_tex.uniform(0, ht)))

    n = scene.n_objects
    sprites = []
    speeds = np.zeros(n)
    for j in range(n):
        speed = rng_obj.uniform(*scene.object_speed_px_per_s)
        right = bool(rng_obj.random() < 0.5)
        speeds[j] = speed if right else -speed
        sprites.append(_make_car(rng_obj, scale, scene.headlight_emission, right))
    hs = max([s[0].shape[0] for s in sprites], default=0)
    ws = max([s[0].shape[1] for s in sprites], default=0)
    spr = np.zeros((3, n, hs + 2, ws + 2), np.float32)
    spr_w = np.zeros(n)
    spr_h = np.zeros(n)
    for j, (ar, a, e) in enumerate(sprites):
        h, w = a.shape
        spr[0, j, 1:h + 1, 1:w + 1] = ar
        spr[1, j, 1:h + 1, 1:w + 1] = a
        spr[2, j, 1:h + 1, 1:w + 1] = e
        spr_w[j], spr_h[j] = w, h
    # lanes in the lower part of the view; larger cars drawn last (nearer the camera)
    order = np.argsort(spr_h, kind="stable")
    spr = spr[:, order]
    spr_w, spr_h, speeds = spr_w[order], spr_h[order], speeds[order]
    lane_lo, lane_hi = 0.35 * height, 0.95 * height
    obj_y = np.array([rng_obj.uniform(lane_lo, max(lane_lo, lane_hi - h)) for h in spr_h])
    period = width + spr_w + 20.0
    obj_x0 = -spr_w - 10.0 + rng_obj.uniform(0, 1, size=n) * period
    vmax = max([scene.pan_px_per_s] + [abs(v) for v in speeds])
    return _Scene(width, height, tex_ext, (ht, wt), start, vel, np.ascontiguousarray(spr[0]),
                  np.ascontiguousarray(spr[1]), np.ascontiguousarray(spr[2]), spr_w, spr_h, obj_x0, obj_y, speeds,
                  period, float(vmax))


# ----------------------------------------------------------------------------------------------------------------
# public entry points


def _validate_args(seconds, size, seed, fps) -> tuple[int, int]:
    try:
        width, height = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height) (got {size!r})") from None
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or not 0 < v <= 65535:
            raise ValueError(f"size: {name} must be an integer in 1..65535 (got size={size!r})")
    if not isinstance(seconds, numbers.Real) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a finite number > 0 (got {seconds!r})")
    if not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0 (got {fps!r})")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (got {seed!r})")
    return int(width), int(height)


def _frame_times(t0_us: int, duration_us: int, fps: float, exposure_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Exposure midpoints and ends of the ground-truth frames whose ±10 ms window fits in the recording."""
    usable = duration_us - 2 * RLED_HALF_WINDOW_US
    n = int(math.floor(usable * fps / 1e6 + 1e-9)) + 1 if usable >= 0 else 0
    mid = t0_us + RLED_HALF_WINDOW_US + np.round(np.arange(n) * (1e6 / fps)).astype(np.int64)
    mid = mid[mid + RLED_HALF_WINDOW_US <= t0_us + duration_us]
    return mid, mid + exposure_us // 2


def simulate_night(seconds: float = 2.0, size: tuple[int, int] = (346, 260), seed: int = 0, fps: float = 25.0,
                   scene: NightScene | None = None, dvs: DvsParams | None = None, progress: bool = False, *,
                   t0_us: int = 0) -> SimResult:
    """Simulate a night drive seen by an event camera, with well-lit ground-truth frames.

    Args:
        seconds: simulated duration.
        size: sensor (width, height).
        seed: all randomness (texture, cars, threshold mismatch, noise) derives from it; same seed, same output.
        fps: ground-truth frame rate.
        scene: scene and motion parameters (default :class:`NightScene()`).
        dvs: sensor parameters (default :class:`DvsParams()`).
        progress: show a tqdm bar over the simulation sub-steps.
        t0_us: timestamp of the start of the recording (µs).

    Returns:
        :class:`SimResult` with time-sorted events in ``[t0_us, t0_us + seconds]`` and the RLED frame alignment.

    Example:
        >>> sim = simulate_night(seconds=1.0, size=(346, 260), seed=3)
        >>> sim.frames.shape
        (25, 260, 346)
    """
    width, height = _validate_args(seconds, size, seed, fps)
    if not isinstance(t0_us, numbers.Integral) or t0_us < 0:
        raise ValueError(f"t0_us must be an integer >= 0 (got {t0_us!r})")
    scene = NightScene() if scene is None else scene
    dvs = DvsParams() if dvs is None else dvs
    if not isinstance(scene, NightScene):
        raise TypeError(f"scene must be a NightScene (got {type(scene).__name__})")
    if not isinstance(dvs, DvsParams):
        raise TypeError(f"dvs must be a DvsParams (got {type(dvs).__name__})")
    _jit()
    t0_us = int(t0_us)
    duration_us = int(round(seconds * 1e6))
    ss_tex, ss_obj, ss_sensor, ss_noise = np.random.SeedSequence(int(seed)).spawn(4)
    sc = _build_scene(width, height, scene, np.random.default_rng(ss_tex), np.random.default_rng(ss_obj))
    events = _simulate_events(sc, dvs, duration_us, t0_us, np.random.default_rng(ss_sensor),
                              np.random.default_rng(ss_noise), progress)

    # ground truth: well-lit reflectance at each exposure midpoint
    mid, end = _frame_times(t0_us, duration_us, fps, int(scene.gt_exposure_us))
    frames = np.empty((len(mid), height, width), np.uint8)
    for i, m in enumerate(mid):
        r, _ = sc.render((int(m) - t0_us) * 1e-6)
        frames[i] = np.clip(np.rint(r * 255.0), 0, 255).astype(np.uint8)
    t = events["t"]
    idx = np.stack([np.searchsorted(t, mid - RLED_HALF_WINDOW_US, "left"),
                    np.searchsorted(t, mid + RLED_HALF_WINDOW_US, "left")], axis=1).astype(np.int64).reshape(-1, 2)
    return SimResult(events=events, frames=frames, frame_mid_us=mid, frame_end_us=end, event_indices=idx,
                     sensor_size=(width, height), t0_us=t0_us, duration_us=duration_us)


def _simulate_events(sc: _Scene, dvs: DvsParams, duration_us: int, t0_us: int, rng_sensor: np.random.Generator,
                     rng_noise: np.random.Generator, progress: bool = False) -> np.ndarray:
    """Events of the sensor ``dvs`` looking at ``sc`` during ``[t0_us, t0_us + duration_us]``, time-sorted."""
    _jit()
    width, height = sc.width, sc.height
    n_pix = width * height

    # sensor: per-pixel thresholds, hot pixels
    con = np.maximum(rng_sensor.normal(dvs.threshold_on, dvs.threshold_sigma, n_pix), dvs.threshold_min)
    coff = np.maximum(rng_sensor.normal(dvs.threshold_off, dvs.threshold_sigma, n_pix), dvs.threshold_min)
    con, coff = con.astype(np.float32), coff.astype(np.float32)
    hot = rng_sensor.choice(n_pix, size=min(dvs.n_hot_pixels, n_pix), replace=False).astype(np.int64)

    # time grid: integer-µs steps, short enough that the fastest motion moves <= max_step_px per step
    step_us = int(dvs.max_step_us)
    if sc.max_speed_px_per_s > 0:
        step_us = min(step_us, int(dvs.max_step_px / sc.max_speed_px_per_s * 1e6))
    step_us = max(step_us, 10)
    n_steps = -(-duration_us // step_us)
    steps_per_chunk = max(1, _CHUNK_US // step_us)
    # most events one pixel may emit per step; more crossings stay pending (the refractory period allows no more)
    cap = 64 if dvs.refractory_us <= 0 else int(min(64, math.ceil(step_us / dvs.refractory_us) + 2))

    # state: the pixels start adapted to the scene at t0 (no start-up burst)
    r0, e0 = sc.render(0.0)
    cur0 = (dvs.illuminance * r0.astype(np.float64) + e0 + dvs.dark_current).ravel()
    lin = np.log(cur0)  # float64 state: no rounding between chunks
    lf = lin.copy()
    lref = lin.copy()
    tlast = np.full(n_pix, -1e18)
    mean_cur = cur0.astype(np.float32)

    # Pixels are cut into contiguous blocks run by a thread pool (the kernel releases the GIL). Each block's
    # events are kept in pixel order and blocks are concatenated in order, so the stream before the stable
    # time sort is the same as one serial pass: the output does not depend on the number of threads.
    n_workers = _n_workers()
    n_blocks = min(n_pix, 4 * n_workers)
    bounds = np.linspace(0, n_pix, n_blocks + 1).round().astype(np.int64)
    capacity = max(_MIN_BUFFER_EVENTS, 4 * steps_per_chunk * cap)
    buffers = [(np.empty(capacity, np.int64), np.empty(capacity, np.uint16), np.empty(capacity, np.uint16),
                np.empty(capacity, np.uint8)) for _ in range(n_workers)]
    free = list(range(n_workers))

    def run_block(b: int, k_args: tuple) -> list:
        slot = free.pop()  # list.pop/append are atomic under the GIL; never more tasks running than buffers
        try:
            buf_t, buf_x, buf_y, buf_p = buffers[slot]
            out = []
            p, p_end = int(bounds[b]), int(bounds[b + 1])
            while p < p_end:
                p, n = _chunk_kernel(p, p_end, width, *k_args, lf, lref, tlast, lin, con, coff, mean_cur,
                                     buf_t, buf_x, buf_y, buf_p, 0)
                out.append((buf_t[:n].copy(), buf_x[:n].copy(), buf_y[:n].copy(), buf_p[:n].copy()))
            return out
        finally:
            free.append(slot)

    bar = None
    if progress:
        tqdm = require("tqdm", "the simulation progress bar").tqdm
        bar = tqdm(total=n_steps, unit="step", desc="simulate_night")
    chunks: list[np.ndarray] = []
    pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
    try:
        for k0 in range(0, n_steps, steps_per_chunk):
            k1 = min(k0 + steps_per_chunk, n_steps)
            t_rel = np.minimum(np.arange(k0, k1 + 1, dtype=np.int64) * step_us, duration_us)
            t_steps = (t0_us + t_rel).astype(np.float64)
            oxi, oyi, fx, fy, obj_x, obj_y = sc.motion(t_rel[1:] * 1e-6)
            k_args = (sc.tex_ext, oxi, oyi, fx, fy, sc.spr_ar, sc.spr_a, sc.spr_e, sc.spr_w, sc.spr_h, obj_x, obj_y,
                      t_steps, float(dvs.illuminance), float(dvs.dark_current), float(dvs.tau_ref_us),
                      float(dvs.max_dlog_per_substep), float(dvs.refractory_us), cap)
            if pool is None:
                per_block = [run_block(b, k_args) for b in range(n_blocks)]
            else:
                per_block = list(pool.map(run_block, range(n_blocks), [k_args] * n_blocks))
            parts = [part for block in per_block for part in block]
            parts.append(_noise(rng_noise, int(t_steps[0]), int(t_steps[-1]), mean_cur, hot, width, dvs))
            chunk = _pack(parts)
            chunks.append(chunk[np.argsort(chunk["t"], kind="stable")])
            if bar is not None:
                bar.update(k1 - k0)
    finally:
        if pool is not None:
            pool.shutdown()
        if bar is not None:
            bar.close()
    return np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)


def _n_workers() -> int:
    """Threads for the pixel kernel: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _noise(rng: np.random.Generator, ta: int, tb: int, mean_cur: np.ndarray, hot: np.ndarray, width: int,
           dvs: DvsParams):
    """Background activity and hot-pixel events in [ta, tb) as (t, x, y, p) columns (unsorted)."""
    dur_s = (tb - ta) * 1e-6
    if dur_s <= 0:
        z = np.empty(0, np.int64)
        return z, z.astype(np.uint16), z.astype(np.uint16), z.astype(np.uint8)
    factor = np.minimum((dvs.ba_ref_current / mean_cur.astype(np.float64)) ** dvs.ba_dark_exponent,
                        dvs.ba_max_factor)
    lam = dvs.ba_rate_hz * dur_s * factor
    total = float(lam.sum())
    # superposition: a Poisson total, spread over pixels in proportion to their rates
    n_ba = int(rng.poisson(total)) if total > 0 else 0
    if n_ba:
        cdf = np.cumsum(lam)
        pix = np.minimum(np.searchsorted(cdf, rng.uniform(0.0, cdf[-1], n_ba), "right"), len(lam) - 1)
    else:
        pix = np.empty(0, np.int64)
    p_ba = (rng.random(n_ba) < 0.5).astype(np.uint8)
    n_hot = rng.poisson(dvs.hot_rate_hz * dur_s, size=len(hot)) if len(hot) else np.empty(0, np.int64)
    pix = np.concatenate([pix, np.repeat(hot, n_hot)]).astype(np.int64)
    pol = np.concatenate([p_ba, np.ones(int(n_hot.sum()), np.uint8)])
    t = rng.integers(ta, tb, size=len(pix), dtype=np.int64)
    y, x = np.divmod(pix, width)
    return t, x.astype(np.uint16), y.astype(np.uint16), pol


def _pack(parts) -> np.ndarray:
    n = sum(len(p[0]) for p in parts)
    ev = np.empty(n, EVENT_DTYPE)
    i = 0
    for t, x, y, p in parts:
        j = i + len(t)
        ev["t"][i:j] = t
        ev["x"][i:j] = x
        ev["y"][i:j] = y
        ev["p"][i:j] = p
        i = j
    return ev


def _simulate_pixel(photocurrent, t_us, dvs: DvsParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Events of one pixel (mean thresholds, no mismatch, no noise) driven by a photocurrent series.

    ``photocurrent[k]`` is the photocurrent at ``t_us[k]`` (it varies linearly in log between samples); the pixel
    starts in steady state at ``photocurrent[0]``. Returns ``(t_us, p)`` of the events. Used to study trails.
    """
    dvs = DvsParams() if dvs is None else dvs
    _jit()
    cur = np.asarray(photocurrent, dtype=np.float64)
    t = np.asarray(t_us, dtype=np.float64)
    if cur.ndim != 1 or cur.shape != t.shape or np.any(cur <= 0) or np.any(np.diff(t) <= 0):
        raise ValueError("photocurrent and t_us must be 1-D of equal length, photocurrent > 0, t_us increasing")
    cap = 64
    ev_t = np.empty(cap * len(t) + cap, np.int64)
    ev_p = np.empty(len(ev_t), np.uint8)
    n = _trace_kernel(np.log(cur), cur, t, float(dvs.threshold_on), float(dvs.threshold_off),
                      float(dvs.refractory_us), float(dvs.tau_ref_us), float(dvs.max_dlog_per_substep), cap,
                      ev_t, ev_p)
    return ev_t[:n].copy(), ev_p[:n].copy()


def write_night(path: str | PathLike, seconds: float = 2.0, size: tuple[int, int] = (346, 260), seed: int = 0,
                fps: float = 25.0, scene: NightScene | None = None, dvs: DvsParams | None = None,
                progress: bool = False, *, t0_us: int = 0) -> SimResult:
    """Simulate (see :func:`simulate_night`) and write an RLED h5 file: events, every ground-truth image with its
    exposure-end timestamp, and ``event_indices``. Returns the simulation.

    Example:
        >>> write_night("night.h5", seconds=2.0, seed=0)  # doctest: +SKIP
    """
    sim = simulate_night(seconds=seconds, size=size, seed=seed, fps=fps, scene=scene, dvs=dvs, progress=progress,
                         t0_us=t0_us)
    write_sim(path, sim)
    return sim


def write_sim(path: str | PathLike, sim: SimResult) -> None:
    """Write a simulation as an RLED h5 file: events, images stamped with ``frame_end_us``, ``event_indices``."""
    from ..drivers.rled import RledWriter

    with RledWriter(path, sim.sensor_size) as writer:
        step = 1 << 20
        for i in range(0, len(sim.events), step):
            writer.add_events(sim.events[i:i + step])
        for frame, ts in zip(sim.frames, sim.frame_end_us):
            writer.add_image(frame, int(ts))
        writer.set_event_indices(sim.event_indices)
