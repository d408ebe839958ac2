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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from os import PathLike

import numpy as np

from .._optional import require
from ..events import EVENT_DTYPE
from . import _kernels
from ._scene import _build_scene, _make_car, _Scene, _texture_scene  # noqa: F401  (natural.py, tests)

__all__ = ["NightScene", "DvsParams", "SimResult", "simulate_night", "write_night"]

#: RLED pairs each image with the events within ±10 ms of its exposure midpoint.
RLED_HALF_WINDOW_US = 10_000
#: Duration of one kernel call / one noise draw; events are sorted chunk by chunk.
_CHUNK_US = 20_000
#: Smallest per-thread event buffer of the kernel (it returns early and is resumed when the buffer fills).
_MIN_BUFFER_EVENTS = 1 << 16


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
    _kernels._jit()
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
    _kernels._jit()
    sensor = _Sensor(dvs, sc.width, sc.height, rng_sensor, sc.max_speed_px_per_s, duration_us, min_step_us=10)
    # the pixels start adapted to the scene at t0 (no start-up burst)
    r0, e0 = sc.render(0.0)
    sensor.adapt((dvs.illuminance * r0.astype(np.float64) + e0 + dvs.dark_current).ravel())

    def kernel_args(t_rel: np.ndarray, t_steps: np.ndarray) -> tuple:
        oxi, oyi, fx, fy, obj_x, obj_y = sc.motion(t_rel[1:] * 1e-6)
        return (sc.tex_ext, oxi, oyi, fx, fy, sc.spr_ar, sc.spr_a, sc.spr_e, sc.spr_w, sc.spr_h, obj_x, obj_y,
                t_steps, float(dvs.illuminance), float(dvs.dark_current), float(dvs.tau_ref_us),
                float(dvs.max_dlog_per_substep), float(dvs.refractory_us), sensor.cap)

    return sensor.run(_kernels._chunk_kernel, kernel_args, t0_us, rng_noise,
                      progress="simulate_night" if progress else None)


class _Sensor:
    """The pixel array both simulators share: per-pixel thresholds and hot pixels (drawn in that order from
    ``rng_sensor``), the integer-µs time grid, the float64 pixel state, and the threaded chunk loop that runs a
    pixel kernel block by block, adds the noise and time-sorts each chunk.

    The time grid is short enough that the fastest motion moves at most ``max_step_px`` per step (never shorter
    than ``min_step_us``). Pixels are cut into contiguous blocks run by a thread pool (the kernels release the
    GIL); each block's events stay in pixel order and blocks are concatenated in order, so the stream before the
    stable time sort is the same as one serial pass: the output does not depend on the number of threads.
    """

    def __init__(self, dvs: DvsParams, width: int, height: int, rng_sensor: np.random.Generator,
                 max_speed_px_per_s: float, duration_us: int, min_step_us: int) -> None:
        self.dvs, self.width, self.duration_us = dvs, width, duration_us
        self.n_pix = n_pix = width * height
        con = np.maximum(rng_sensor.normal(dvs.threshold_on, dvs.threshold_sigma, n_pix), dvs.threshold_min)
        coff = np.maximum(rng_sensor.normal(dvs.threshold_off, dvs.threshold_sigma, n_pix), dvs.threshold_min)
        self.con, self.coff = con.astype(np.float32), coff.astype(np.float32)
        self.hot = rng_sensor.choice(n_pix, size=min(dvs.n_hot_pixels, n_pix), replace=False).astype(np.int64)
        step_us = int(dvs.max_step_us)
        if max_speed_px_per_s > 0:
            step_us = min(step_us, int(dvs.max_step_px / max_speed_px_per_s * 1e6))
        self.step_us = step_us = max(step_us, min_step_us)
        self.n_steps = -(-duration_us // step_us)
        self.steps_per_chunk = max(1, _CHUNK_US // step_us)
        # most events one pixel may emit per step; more crossings stay pending (the refractory period allows no more)
        self.cap = 64 if dvs.refractory_us <= 0 else int(min(64, math.ceil(step_us / dvs.refractory_us) + 2))

    def adapt(self, cur0: np.ndarray) -> None:
        """Start every pixel adapted to the photocurrent ``cur0`` (float64 state: no rounding between chunks)."""
        self.lin = np.log(cur0)
        self.lf = self.lin.copy()
        self.lref = self.lin.copy()
        self.tlast = np.full(self.n_pix, -1e18)
        self.mean_cur = cur0.astype(np.float32)

    def run(self, kernel, kernel_args, t0_us: int, rng_noise: np.random.Generator,
            progress: str | None = None) -> np.ndarray:
        """Time-sorted events of the whole duration. ``kernel_args(t_rel, t_steps)`` gives a chunk's arguments
        between the pixel range and the pixel state (``t_rel``: the chunk's step times from the start, µs)."""
        n_workers = _n_workers()
        n_pix, width = self.n_pix, self.width
        n_blocks = min(n_pix, 4 * n_workers)
        bounds = np.linspace(0, n_pix, n_blocks + 1).round().astype(np.int64)
        capacity = max(_MIN_BUFFER_EVENTS, 4 * self.steps_per_chunk * self.cap)
        buffers = [(np.empty(capacity, np.int64), np.empty(capacity, np.uint16), np.empty(capacity, np.uint16),
                    np.empty(capacity, np.uint8)) for _ in range(n_workers)]
        free = list(range(n_workers))
        state = (self.lf, self.lref, self.tlast, self.lin, self.con, self.coff, self.mean_cur)

        def run_block(b: int, args: tuple) -> list:
            slot = free.pop()  # list.pop/append are atomic under the GIL; never more tasks running than buffers
            try:
                buf = buffers[slot]
                out = []
                p, p_end = int(bounds[b]), int(bounds[b + 1])
                while p < p_end:
                    p, n = kernel(p, p_end, width, *args, *state, *buf, 0)
                    out.append(tuple(a[:n].copy() for a in buf))
                return out
            finally:
                free.append(slot)

        bar = None
        if progress:
            tqdm = require("tqdm", "the simulation progress bar").tqdm
            bar = tqdm(total=self.n_steps, unit="step", desc=progress)
        chunks: list[np.ndarray] = []
        pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
        try:
            for k0 in range(0, self.n_steps, self.steps_per_chunk):
                k1 = min(k0 + self.steps_per_chunk, self.n_steps)
                t_rel = np.minimum(np.arange(k0, k1 + 1, dtype=np.int64) * self.step_us, self.duration_us)
                t_steps = (t0_us + t_rel).astype(np.float64)
                args = kernel_args(t_rel, t_steps)
                if pool is None:
                    per_block = [run_block(b, args) for b in range(n_blocks)]
                else:
                    per_block = list(pool.map(run_block, range(n_blocks), [args] * n_blocks))
                parts = [part for block in per_block for part in block]
                parts.append(_noise(rng_noise, int(t_steps[0]), int(t_steps[-1]), self.mean_cur, self.hot, width,
                                    self.dvs))
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
    _kernels._jit()
    cur = np.asarray(photocurrent, dtype=np.float64)
    t = np.asarray(t_us, dtype=np.float64)
    if cur.ndim != 1 or cur.shape != t.shape or np.any(cur <= 0) or np.any(np.diff(t) <= 0):
        raise ValueError("photocurrent and t_us must be 1-D of equal length, photocurrent > 0, t_us increasing")
    cap = 64
    ev_t = np.empty(cap * len(t) + cap, np.int64)
    ev_p = np.empty(len(ev_t), np.uint8)
    n = _kernels._trace_kernel(np.log(cur), cur, t, float(dvs.threshold_on), float(dvs.threshold_off),
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
