"""Natural-statistics scenes for training: photographs, dead leaves and 1/f textures seen by a moving or fixed
camera, with independently moving objects, through the same night DVS model as :mod:`.night`.

Why it exists
-------------
A network trained on one procedural street learns that street, not the sensor. What E2VID / FireNet+ learned from
is the floor: natural images under random camera motion, contrast thresholds drawn widely (Stoffregen et al.
2020: about 0.2–1.5) and sensor noise. Nothing is downloaded: the photographs are those scikit-image ships in its
wheel, the rest is generated (dead leaves with textured leaves, 1/f noise).

What is modelled
----------------
* **Background.** A canvas large enough for the whole camera path: a photograph (random crop, scale, flips,
  gamma), a dead-leaves image (occluding discs / ellipses / rectangles with power-law sizes, filled flat, with a
  gradient, or with photo / 1/f texture), a 1/f texture, or a photo multiplied by a 1/f shading.
* **Camera.** Either static (only objects move: a street seen from a fixed camera; the background then fires
  nothing but noise and must reconstruct flat), or ego-motion: translation with acceleration, rotation with
  angular acceleration, zoom, plus a small shake. Views are resampled bilinearly from the canvas
  (``torch.nn.functional.grid_sample``, batched over the sub-steps of a chunk).
* **Objects.** Textured patches with soft masks (ellipses, rectangles, polygons) or the night simulator's cars
  with emissive lamps, each with its own velocity, acceleration, rotation and scale change, composited back to
  front in view coordinates.
* **Sensor.** Photocurrent ``illuminance · reflectance + emission + dark current`` with multiplicative shot noise
  (log-normal, stronger in dark pixels), then the per-pixel model of :mod:`.night` (low-pass photoreceptor whose
  bandwidth follows the photocurrent = low-light trails, threshold mismatch, refractory period, background
  activity, hot pixels).
* **Windows: every event counts.** Ground-truth frames (the well-lit reflectance, lamps white) are rendered at
  the ends of contiguous windows of ``window_us``; ``event_indices[i]`` covers ``[end_i − window_us, end_i)``, so
  each event belongs to exactly one window. Written as RLED h5, training reads these windows unchanged.

All randomness comes from ``numpy.random.SeedSequence(seed)``: same seed, same events and frames (the pixel kernel
runs on a thread pool but joins its blocks in pixel order, as in :mod:`.night`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from os import PathLike

import numpy as np

from . import _kernels, night
from .night import DvsParams, SimResult

__all__ = ["NaturalScene", "random_natural_scene", "simulate_natural", "write_natural", "dead_leaves",
           "pink_noise", "photo_bank"]

#: scikit-image photographs shipped in its wheel (no download); grey-converted, in [0, 1]
_PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
           "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
           "stereo_motorcycle")


@dataclass(frozen=True)
class NaturalScene:
    """One scene and its motion. Speeds in pixels per second at the sensor, angles in degrees.

    Attributes:
        background: "photo", "deadleaves", "noise" or "shaded" (photo × 1/f shading).
        static_camera: the camera does not move; only objects do.
        velocity_px_per_s: camera translation (vx, vy) at t = 0 (content moves the opposite way).
        accel_px_per_s2: camera acceleration (ax, ay).
        rotation_deg_per_s: camera roll rate; ``rotation_accel_deg_per_s2`` its change.
        zoom_per_s: rate of log scale (positive: the view widens, content shrinks).
        shake_px: amplitude of a small 2–6 Hz camera shake.
        n_objects: independently moving objects.
        object_speed_px_per_s: (min, max) object speed.
        cars: fraction of objects that are cars with emissive lamps (the rest are textured patches).
        headlight_emission: lamp photocurrent (units of DvsParams.illuminance).
        contrast: stretch of the reflectance around its mean (1 = as generated).
        gamma: reflectance → reflectance ** gamma (tone variety).
    """

    background: str = "photo"
    static_camera: bool = False
    velocity_px_per_s: tuple[float, float] = (60.0, 10.0)
    accel_px_per_s2: tuple[float, float] = (0.0, 0.0)
    rotation_deg_per_s: float = 0.0
    rotation_accel_deg_per_s2: float = 0.0
    zoom_per_s: float = 0.0
    shake_px: float = 0.0
    n_objects: int = 2
    object_speed_px_per_s: tuple[float, float] = (40.0, 250.0)
    cars: float = 0.3
    headlight_emission: float = 1.5
    contrast: float = 1.0
    gamma: float = 1.0
    reflectance_range: tuple[float, float] = field(default=(0.02, 0.95))

    def __post_init__(self) -> None:
        if self.background not in ("photo", "deadleaves", "noise", "shaded"):
            raise ValueError(f"NaturalScene.background must be photo, deadleaves, noise or shaded "
                             f"(got {self.background!r})")
        if not isinstance(self.n_objects, (int, np.integer)) or self.n_objects < 0:
            raise ValueError(f"NaturalScene.n_objects must be an integer >= 0 (got {self.n_objects!r})")
        lo, hi = self.object_speed_px_per_s
        if not 0 <= lo <= hi:
            raise ValueError(f"NaturalScene.object_speed_px_per_s must be (min, max), 0 <= min <= max "
                             f"(got {self.object_speed_px_per_s!r})")
        if not (self.contrast >= 0 and self.gamma > 0 and 0 <= self.cars <= 1):
            raise ValueError("NaturalScene: need contrast >= 0, gamma > 0 and 0 <= cars <= 1 "
                             f"(got {self.contrast!r}, {self.gamma!r}, {self.cars!r})")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def random_natural_scene(rng: np.random.Generator, static_fraction: float = 0.35,
                         max_speed_px_per_s: float = 400.0,
                         gamma_range: tuple[float, float] = (0.6, 1.6)) -> NaturalScene:
    """Draw a scene: static camera with probability ``static_fraction`` (then 1–6 objects), else ego-motion with
    log-uniform speed up to ``max_speed_px_per_s`` (and 0–4 objects); the tone curve's exponent log-uniform in
    ``gamma_range`` (about 2.2 turns display-encoded photographs into linear irradiance, which is what a sensor
    sees: dark-skewed scenes where bright things stand far above the median)."""
    static = bool(rng.random() < static_fraction)
    background = str(rng.choice(["photo", "deadleaves", "noise", "shaded"], p=[0.4, 0.3, 0.1, 0.2]))
    if static:
        vel, acc, rot, rot_acc, zoom, shake = (0.0, 0.0), (0.0, 0.0), 0.0, 0.0, 0.0, 0.0
        n_obj = int(rng.integers(1, 7))
    else:
        speed = _log_uniform(rng, 5.0, max_speed_px_per_s)
        ang = rng.uniform(0, 2 * np.pi)
        vel = (speed * math.cos(ang), speed * math.sin(ang))
        acc = tuple(float(v) for v in rng.normal(0.0, 0.5 * speed, 2))
        rot = float(rng.normal(0.0, 8.0)) if rng.random() < 0.5 else 0.0
        rot_acc = float(rng.normal(0.0, 10.0)) if rot else 0.0
        zoom = float(rng.normal(0.0, 0.15)) if rng.random() < 0.4 else 0.0
        shake = float(rng.uniform(0.0, 2.0)) if rng.random() < 0.3 else 0.0
        n_obj = int(rng.integers(0, 5))
    lo = _log_uniform(rng, 10.0, 150.0)
    return NaturalScene(background=background, static_camera=static, velocity_px_per_s=vel, accel_px_per_s2=acc,
                        rotation_deg_per_s=rot, rotation_accel_deg_per_s2=rot_acc, zoom_per_s=zoom, shake_px=shake,
                        n_objects=n_obj, object_speed_px_per_s=(lo, min(max_speed_px_per_s, lo * rng.uniform(1, 4))),
                        cars=float(rng.uniform(0.0, 0.6)), headlight_emission=_log_uniform(rng, 0.3, 4.0),
                        contrast=float(rng.uniform(0.5, 1.3)), gamma=_log_uniform(rng, *gamma_range))


# ----------------------------------------------------------------------------------------------------------------
# images


@lru_cache(maxsize=1)
def photo_bank() -> tuple[np.ndarray, ...]:
    """The scikit-image photographs as float32 grey images in [0, 1] (loaded once per process)."""
    from skimage import data
    from skimage.color import rgb2gray

    out = []
    for name in _PHOTOS:
        try:
            im = getattr(data, name)()
        except Exception:  # noqa: BLE001 - an image missing from this scikit-image build is simply not used
            continue
        if isinstance(im, tuple):
            im = im[0]
        im = np.asarray(im)
        if im.ndim == 3:
            im = rgb2gray(im[..., :3])
        else:
            im = im.astype(np.float64) / (255.0 if im.dtype == np.uint8 else max(float(im.max()), 1.0))
        out.append(im.astype(np.float32))
    if not out:
        raise RuntimeError("no scikit-image sample photograph could be loaded (install scikit-image)")
    return tuple(out)


def pink_noise(rng: np.random.Generator, h: int, w: int, beta: float = 1.0) -> np.ndarray:
    """A 1/f^beta texture (random phase), normalised to [0, 1] by its 1st–99th percentiles."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    amp = f ** -beta
    amp[0, 0] = 0.0
    spec = amp * np.exp(2j * np.pi * rng.random(amp.shape))
    img = np.fft.irfft2(spec, s=(h, w))
    lo, hi = np.percentile(img, (1, 99))
    return np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1).astype(np.float32)


def _resample(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random (h, w) view of ``img``: random scale (0.5–2×), crop, flips and 90° turns."""
    from scipy.ndimage import zoom

    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.3:
        img = img[::-1]
    img = np.rot90(img, int(rng.integers(0, 4)))
    need = max(h / img.shape[0], w / img.shape[1])
    scale = max(need, _log_uniform(rng, 0.5, 2.0))
    if abs(scale - 1.0) > 1e-3:
        img = zoom(np.ascontiguousarray(img), scale, order=1, grid_mode=True, mode="reflect")
    y0 = int(rng.integers(0, img.shape[0] - h + 1))
    x0 = int(rng.integers(0, img.shape[1] - w + 1))
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w], dtype=np.float32)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A fill for a leaf or an object: flat, gradient, photo patch or 1/f patch."""
    kind = rng.choice(4, p=[0.3, 0.2, 0.3, 0.2])
    v = float(rng.random())
    if kind == 0:
        return np.full((h, w), v, np.float32)
    if kind == 1:
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        proj = xx * math.cos(ang) + yy * math.sin(ang)
        proj = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-9)
        return (v + (float(rng.random()) - v) * proj).astype(np.float32)
    if kind == 2:
        photos = photo_bank()
        return _resample(photos[int(rng.integers(len(photos)))], h, w, rng)
    tex = pink_noise(rng, h, w, rng.uniform(0.8, 2.0))
    return np.clip(v + rng.uniform(0.2, 0.8) * (tex - 0.5), 0.0, 1.0).astype(np.float32)


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Soft (anti-aliased) coverage of an ellipse, rectangle or convex polygon filling an (h, w) box."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    kind = rng.choice(3)
    if kind == 0:
        d = np.hypot((yy - cy) / max(h / 2, 1), (xx - cx) / max(w / 2, 1))
        return np.clip((1.0 - d) * min(h, w) / 2 + 0.5, 0, 1)
    if kind == 1:
        dy = (h / 2 - np.abs(yy - cy))
        dx = (w / 2 - np.abs(xx - cx))
        return np.clip(np.minimum(dy, dx) + 0.5, 0, 1)
    n = int(rng.integers(3, 8))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    px, py = cx + (w / 2) * np.cos(ang), cy + (h / 2) * np.sin(ang)
    inside = np.full((h, w), np.inf, np.float32)
    for i in range(n):  # signed distance to each edge of the (counter-clockwise) convex polygon
        x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        ex, ey = x1 - x0, y1 - y0
        norm = max(math.hypot(ex, ey), 1e-6)
        inside = np.minimum(inside, ((xx - x0) * ey - (yy - y0) * ex) / norm * -1.0)
    return np.clip(inside + 0.5, 0, 1)


def dead_leaves(rng: np.random.Generator, h: int, w: int, r_min: float = 3.0, r_max: float | None = None,
                n_leaves: int | None = None) -> np.ndarray:
    """A dead-leaves image: occluding shapes with radii ~ r⁻³ (scale invariant) in [r_min, r_max], each filled
    with a flat value, a gradient, a photo or a 1/f patch; painted back to front."""
    r_max = r_max or max(h, w) / 3
    n_leaves = n_leaves or int(2.5 * h * w / (r_min * r_max * 4))
    n_leaves = min(n_leaves, 3000)
    canvas = np.full((h, w), float(rng.random()), np.float32)
    # inverse CDF of p(r) ∝ r^-3 on [r_min, r_max]
    u = rng.random(n_leaves)
    radii = 1.0 / np.sqrt(u / r_max ** 2 + (1 - u) / r_min ** 2)
    for r in radii:
        bh = max(2, int(2 * r * rng.uniform(0.5, 1.5)))
        bw = max(2, int(2 * r * rng.uniform(0.5, 1.5)))
        y0 = int(rng.integers(-bh // 2, h - bh // 2))
        x0 = int(rng.integers(-bw // 2, w - bw // 2))
        ya, yb, xa, xb = max(y0, 0), min(y0 + bh, h), max(x0, 0), min(x0 + bw, w)
        if ya >= yb or xa >= xb:
            continue
        mask = _shape_mask(rng, bh, bw)[ya - y0:yb - y0, xa - x0:xb - x0]
        fill = _texture(rng, bh, bw)[ya - y0:yb - y0, xa - x0:xb - x0] if r > 6 else float(rng.random())
        sub = canvas[ya:yb, xa:xb]
        canvas[ya:yb, xa:xb] = sub + mask * (fill - sub)
    return canvas


def _background(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    photos = photo_bank()
    if kind == "photo":
        return _resample(photos[int(rng.integers(len(photos)))], h, w, rng)
    if kind == "deadleaves":
        return dead_leaves(rng, h, w, r_min=rng.uniform(2.0, 6.0))
    if kind == "noise":
        return pink_noise(rng, h, w, rng.uniform(0.8, 2.0))
    shade = pink_noise(rng, h, w, rng.uniform(1.8, 2.6))
    return _resample(photos[int(rng.integers(len(photos)))], h, w, rng) * (0.4 + 0.6 * shade)


def _tone(img: np.ndarray, scene: NaturalScene) -> np.ndarray:
    lo, hi = scene.reflectance_range
    m = float(img.mean())
    img = np.clip(m + scene.contrast * (img - m), 0, 1) ** scene.gamma
    return (lo + (hi - lo) * img).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# motion and rendering


@dataclass
class _Sprite:
    refl: np.ndarray  # (h, w) reflectance·alpha
    alpha: np.ndarray
    emis: np.ndarray  # emission·alpha
    p0: np.ndarray  # centre at t = 0, view pixels
    v: np.ndarray
    a: np.ndarray
    rot: float  # rad/s
    zoom: float  # log scale per s


def _make_objects(rng: np.random.Generator, scene: NaturalScene, width: int, height: int) -> list[_Sprite]:
    out = []
    side = min(width, height)
    for _ in range(scene.n_objects):
        speed = float(rng.uniform(*scene.object_speed_px_per_s))
        if rng.random() < scene.cars:
            right = bool(rng.random() < 0.5)
            ar, a, e = night._make_car(rng, side / 260.0 * rng.uniform(0.7, 1.6), scene.headlight_emission, right)
            ang = (0.0 if right else math.pi) + rng.normal(0, 0.1)
            rot = 0.0
        else:
            size = _log_uniform(rng, 0.08, 0.5) * side
            h, w = max(4, int(size * rng.uniform(0.6, 1.4))), max(4, int(size * rng.uniform(0.6, 1.4)))
            a = _shape_mask(rng, h, w).astype(np.float32)
            ar = a * _tone(_texture(rng, h, w), scene)
            e = np.zeros_like(a)
            if rng.random() < 0.15:  # a lamp-like emissive blob
                e = a * scene.headlight_emission * float(rng.uniform(0.2, 1.0))
            ang = rng.uniform(0, 2 * np.pi)
            rot = float(rng.normal(0, 0.5)) if rng.random() < 0.3 else 0.0
        v = speed * np.array([math.cos(ang), math.sin(ang)])
        # start so that the object crosses the view during the clip (somewhere inside, or entering)
        p0 = np.array([rng.uniform(0, width), rng.uniform(0.1 * height, height)]) - v * rng.uniform(0, 0.5)
        acc = rng.normal(0, 0.3 * speed, 2)
        zoom = float(rng.normal(0, 0.1)) if rng.random() < 0.3 else 0.0
        out.append(_Sprite(ar.astype(np.float32), a.astype(np.float32), e.astype(np.float32), p0, v, acc, rot,
                           zoom))
    # larger objects nearer the camera: drawn last
    return sorted(out, key=lambda s: s.alpha.size)


@dataclass
class _Natural:
    """A rendered world: canvas, camera path, objects (internal)."""

    width: int
    height: int
    canvas: np.ndarray  # (Hc, Wc) reflectance
    scene: NaturalScene
    c0: np.ndarray  # camera centre on the canvas at t = 0
    theta0: float
    shake_phase: np.ndarray
    shake_hz: np.ndarray
    objects: list[_Sprite]
    max_speed_px_per_s: float

    def camera(self, t_s: np.ndarray):
        s = self.scene
        t = t_s[:, None]
        c = self.c0 + np.asarray(s.velocity_px_per_s) * t + 0.5 * np.asarray(s.accel_px_per_s2) * t * t
        if s.shake_px:
            c = c + s.shake_px * np.sin(2 * np.pi * self.shake_hz * t + self.shake_phase)
        theta = self.theta0 + np.radians(s.rotation_deg_per_s * t_s + 0.5 * s.rotation_accel_deg_per_s2 * t_s ** 2)
        scale = np.exp(s.zoom_per_s * t_s)
        return c, theta, scale

    def render(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reflectance, emission) float32 (K, H, W) at the times ``t_s`` (seconds)."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small batched ops: one thread is fastest, and the pixel kernel owns the others
        try:
            return self._render(np.asarray(t_s, np.float64))
        finally:
            torch.set_num_threads(threads)

    def _render(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch
        import torch.nn.functional as F

        k, h, w = len(t_s), self.height, self.width
        hc, wc = self.canvas.shape
        c, theta, scale = self.camera(t_s)
        # view pixel (x, y) -> canvas point c + scale·R(theta)·(x − (w−1)/2, y − (h−1)/2), as an affine map of
        # normalised coordinates (align_corners=True: −1 and 1 are the centres of the first and last pixels)
        refl = F.grid_sample(torch.from_numpy(self.canvas)[None, None].expand(k, 1, hc, wc),
                             self._grid(c, scale * np.cos(theta), scale * np.sin(theta), (wc, hc), (w, h)),
                             mode="bilinear", padding_mode="reflection", align_corners=True)[:, 0]
        emis = torch.zeros_like(refl)
        ts = t_s[:, None]
        for o in self.objects:
            oh, ow = o.alpha.shape
            pos = o.p0 + o.v * ts + 0.5 * o.a * ts * ts  # object centre in view pixels
            ang = o.rot * t_s
            sc = np.exp(-o.zoom * t_s)
            # view pixel -> sprite pixel: R(−ang)·sc·(p − pos) + sprite centre; written as "centre + A·(p − v0)"
            cos, sin = sc * np.cos(ang), sc * np.sin(ang)
            # sprite coordinates of the view centre
            d = np.array([(w - 1) / 2, (h - 1) / 2]) - pos
            sx = cos * d[:, 0] + sin * d[:, 1] + (ow - 1) / 2
            sy = -sin * d[:, 0] + cos * d[:, 1] + (oh - 1) / 2
            g = self._grid(np.stack([sx, sy], 1), cos, -sin, (ow, oh), (w, h))
            spr = torch.from_numpy(np.stack([o.refl, o.alpha, o.emis]))[None].expand(k, 3, oh, ow)
            smp = F.grid_sample(spr, g, mode="bilinear", padding_mode="zeros", align_corners=True)
            a = smp[:, 1]
            refl = torch.addcmul(smp[:, 0], refl, 1 - a)
            emis = torch.addcmul(smp[:, 2], emis, 1 - a)
        return refl.numpy(), emis.numpy()

    @staticmethod
    def _grid(centre: np.ndarray, cos: np.ndarray, sin: np.ndarray, src: tuple[int, int], dst: tuple[int, int]):
        """Sampling grid for ``src_point = centre + [[cos, −sin], [sin, cos]]·(p − dst_centre)`` per time."""
        import torch
        import torch.nn.functional as F

        (ws, hs), (wd, hd) = src, dst
        k = len(cos)
        # normalised dst u = (x − (wd−1)/2)·2/(wd−1); normalised src = (point − (ws−1)/2)·2/(ws−1)
        fx, fy = (wd - 1) / max(ws - 1, 1), (hd - 1) / max(ws - 1, 1)
        gx, gy = (wd - 1) / max(hs - 1, 1), (hd - 1) / max(hs - 1, 1)
        theta = np.empty((k, 2, 3))
        theta[:, 0, 0] = cos * fx
        theta[:, 0, 1] = -sin * fy
        theta[:, 0, 2] = (centre[:, 0] - (ws - 1) / 2) * 2 / max(ws - 1, 1)
        theta[:, 1, 0] = sin * gx
        theta[:, 1, 1] = cos * gy
        theta[:, 1, 2] = (centre[:, 1] - (hs - 1) / 2) * 2 / max(hs - 1, 1)
        return F.affine_grid(torch.from_numpy(theta).float(), [k, 1, hd, wd], align_corners=True)


def _build(width: int, height: int, scene: NaturalScene, seconds: float, rng: np.random.Generator) -> _Natural:
    s = scene
    t = np.linspace(0, seconds, 64)
    # camera path extent: centre travel plus the rotated / zoomed view's half diagonal
    vel, acc = np.asarray(s.velocity_px_per_s), np.asarray(s.accel_px_per_s2)
    path = vel * t[:, None] + 0.5 * acc * t[:, None] ** 2
    zmax = float(np.exp(abs(s.zoom_per_s) * seconds))
    half = 0.5 * math.hypot(width, height) * zmax + 2 * s.shake_px + 4
    lo, hi = path.min(axis=0) - half, path.max(axis=0) + half
    wc, hc = int(math.ceil(hi[0] - lo[0])), int(math.ceil(hi[1] - lo[1]))
    wc, hc = min(wc, 4096), min(hc, 4096)  # bounded canvas; a faster path reflects at its border
    canvas = _tone(_background(rng, s.background, hc, wc), s)
    c0 = -lo
    theta0 = float(rng.uniform(-0.2, 0.2)) if not s.static_camera else 0.0
    objects = _make_objects(rng, s, width, height)
    r = 0.5 * math.hypot(width, height)
    cam_speed = float(np.linalg.norm(vel) + np.linalg.norm(acc) * seconds
                      + math.radians(abs(s.rotation_deg_per_s) + abs(s.rotation_accel_deg_per_s2) * seconds) * r
                      + abs(s.zoom_per_s) * r * zmax + 2 * np.pi * 6 * s.shake_px)
    obj_speed = max([float(np.linalg.norm(o.v) + np.linalg.norm(o.a) * seconds + abs(o.rot) * max(o.alpha.shape))
                     for o in objects], default=0.0)
    return _Natural(width, height, canvas, s, c0, theta0, rng.uniform(0, 2 * np.pi, 2), rng.uniform(2, 6, 2),
                    objects, max(cam_speed, obj_speed))


# ----------------------------------------------------------------------------------------------------------------
# events


def simulate_natural(seconds: float = 2.0, size: tuple[int, int] = (240, 180), seed: int = 0,
                     scene: NaturalScene | None = None, dvs: DvsParams | None = None, *, window_us: int = 40_000,
                     shot_noise: float = 0.02, t0_us: int = 0) -> SimResult:
    """Simulate a natural scene seen by a night DVS; frames at the ends of contiguous ``window_us`` windows.

    Args:
        seconds: duration.
        size: sensor (width, height).
        seed: everything random (scene when ``scene`` is None, sensor mismatch, noise).
        scene: the scene; None draws one with :func:`random_natural_scene`.
        dvs: the sensor (default :class:`DvsParams` with 2 ms / 2 px sub-steps: the pixel kernel interpolates the
            log photocurrent linearly inside a sub-step, so rendering more often buys little).
        window_us: window length; frame i is rendered at ``t0 + (i + 1) · window_us``.
        shot_noise: log-photocurrent noise per 1 ms sub-step at photocurrent 0.01, scaling as 1/√I.
        t0_us: first timestamp.

    Returns:
        :class:`~livenight.simulate.night.SimResult` whose ``event_indices`` are the contiguous windows.
    """
    width, height = night._validate_args(seconds, size, seed, 1e6 / max(int(window_us), 1))
    dvs = DvsParams(max_step_us=2000, max_step_px=2.0) if dvs is None else dvs
    ss_scene, ss_world, ss_sensor, ss_noise, ss_shot = np.random.SeedSequence(int(seed)).spawn(5)
    if scene is None:
        scene = random_natural_scene(np.random.default_rng(ss_scene))
    _kernels._jit()
    world = _build(width, height, scene, seconds, np.random.default_rng(ss_world))
    duration_us = int(round(seconds * 1e6))
    rng_sensor, rng_noise, rng_shot = (np.random.default_rng(s) for s in (ss_sensor, ss_noise, ss_shot))
    sensor = night._Sensor(dvs, width, height, rng_sensor, world.max_speed_px_per_s, duration_us, min_step_us=100)
    n_pix, step_us = sensor.n_pix, sensor.step_us

    def photocurrent(refl, emis):
        return dvs.illuminance * refl + emis + dvs.dark_current

    r0, e0 = world.render(np.zeros(1))
    sensor.adapt(photocurrent(r0[0], e0[0]).astype(np.float64).ravel())

    def kernel_args(t_rel: np.ndarray, t_steps: np.ndarray) -> tuple:
        refl, emis = world.render(t_rel[1:] * 1e-6)
        cur = photocurrent(refl, emis).reshape(len(t_rel) - 1, n_pix)
        if shot_noise > 0:  # log-normal, σ ∝ 1/√I; one draw per ~2 ms (held across shorter sub-steps)
            hold = max(1, 2000 // step_us)
            draws = rng_shot.standard_normal((-(-cur.shape[0] // hold), n_pix), dtype=np.float32)
            sigma = np.minimum(shot_noise * np.sqrt(0.01 / cur), 0.5)
            cur = cur * np.exp(sigma * np.repeat(draws, hold, axis=0)[:cur.shape[0]])
        cur = np.ascontiguousarray(cur, dtype=np.float32)
        return (cur, t_steps, float(dvs.tau_ref_us), float(dvs.max_dlog_per_substep), float(dvs.refractory_us),
                sensor.cap)

    events = sensor.run(_kernels._video_kernel, kernel_args, t0_us, rng_noise)

    n_frames = duration_us // int(window_us)
    end = t0_us + (np.arange(n_frames, dtype=np.int64) + 1) * int(window_us)
    frames = np.empty((n_frames, height, width), np.uint8)
    for i0 in range(0, n_frames, 16):
        refl, _ = world.render((end[i0:i0 + 16] - t0_us) * 1e-6)
        frames[i0:i0 + 16] = np.clip(np.rint(refl * 255.0), 0, 255).astype(np.uint8)
    t = events["t"]
    idx = np.stack([np.searchsorted(t, end - int(window_us), "left"), np.searchsorted(t, end, "left")],
                   axis=1).astype(np.int64).reshape(-1, 2)
    return SimResult(events=events, frames=frames, frame_mid_us=end, frame_end_us=end, event_indices=idx,
                     sensor_size=(width, height), t0_us=int(t0_us), duration_us=duration_us)


def write_natural(path: str | PathLike, seconds: float = 2.0, size: tuple[int, int] = (240, 180), seed: int = 0,
                  scene: NaturalScene | None = None, dvs: DvsParams | None = None, **kw) -> SimResult:
    """:func:`simulate_natural`, written as an RLED h5 file (image timestamps = window ends)."""
    sim = simulate_natural(seconds, size, seed, scene, dvs, **kw)
    night.write_sim(path, sim)
    return sim
