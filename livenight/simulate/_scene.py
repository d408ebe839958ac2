"""Scene generation of the night simulator (numpy, once per simulation): the periodic street texture, cars with
lamps, and the :class:`_Scene` the kernels sample (:mod:`livenight.simulate.night`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import _kernels

if TYPE_CHECKING:
    from .night import NightScene

#: Reference size: texture features and car sizes scale with min(width, height) / 260 (DAVIS346 height).
_REF_SIDE_PX = 260.0



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
        _kernels._render_kernel(r, e, 0, self.tex_ext, oxi, oyi, fx, fy, self.spr_ar, self.spr_a, self.spr_e, self.spr_w,
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
