"""Quality evaluation against reference frames: MSE, SSIM (scikit-image, explicit data_range) and LPIPS when its
weights are available locally. Frames are compared at the sensor size, in [0, 1].

For real recordings (APS frames of another exposure and tone curve than any reconstruction, a static camera whose
background no event-only method can recover) :class:`FrameScorer` also gives the *active-pixel* scores:

* both images are normalised to their own 1st–99th percentiles (clipped to [0, 1]);
* the SSIM map is scikit-image's (``data_range=1``, default 7×7 window);
* **SSIM on active pixels** averages that map over the pixels where the reference changed by more than 8 grey
  levels since the previous reference, dilated by a 15×15 box; a frame whose mask covers < 0.5 % of the image is
  skipped (and the first frame, which has no previous reference);
* **full-frame SSIM** (``ssim_norm``) and **MSE** (``mse_norm``) are the same map's mean and the mean squared
  difference of the normalised images, over every scored frame.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np

from ._optional import has, require


@dataclass
class SequenceScores:
    name: str
    frames: int = 0
    mse: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    lpips: list[float] = field(default_factory=list)
    ssim_active: list[float] = field(default_factory=list)
    ssim_norm: list[float] = field(default_factory=list)
    mse_norm: list[float] = field(default_factory=list)
    fps: float = 0.0
    _prev_ref: np.ndarray | None = field(default=None, repr=False)
    _last_ref: np.ndarray | None = field(default=None, repr=False)

    def mean(self, key: str) -> float:
        vals = getattr(self, key)
        return float(np.mean(vals)) if vals else float("nan")


def lpips_available() -> tuple[bool, str]:
    """LPIPS needs the ``lpips`` package with its VGG weights on disk (nothing is downloaded at run time)."""
    if not has("lpips"):
        return False, "LPIPS skipped: the 'lpips' package (with locally available VGG weights) is not installed"
    return True, ""


#: active-pixel mask: a reference change above this many grey levels, dilated by a box of this side, at least this
#: fraction of the image
ACTIVE_CHANGE_GREY = 8
ACTIVE_DILATE_PX = 15
ACTIVE_MIN_FRACTION = 0.005


def percentile_normalise(img: np.ndarray) -> np.ndarray:
    """``img`` mapped to [0, 1] by its 1st and 99th percentiles (float64); a flat image becomes zeros."""
    lo, hi = np.percentile(img, (1, 99))
    if hi <= lo:
        return np.zeros(img.shape, np.float64)
    return np.clip((img.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)


def active_mask(ref_u8: np.ndarray, prev_ref_u8: np.ndarray) -> np.ndarray:
    """Pixels where the reference changed by more than 8 grey levels since the previous one, dilated 15×15."""
    from scipy.ndimage import maximum_filter

    changed = np.abs(ref_u8.astype(np.int16) - prev_ref_u8.astype(np.int16)) > ACTIVE_CHANGE_GREY
    return maximum_filter(changed, size=ACTIVE_DILATE_PX).astype(bool)


def active_scores(recon_u8: np.ndarray, ref_u8: np.ndarray, prev_ref_u8: np.ndarray | None) -> dict[str, float]:
    """``{"ssim_norm", "mse_norm", "ssim_active"}`` of one frame (``ssim_active`` NaN when skipped); see the module
    docstring for the definitions."""
    from skimage.metrics import structural_similarity

    a, b = percentile_normalise(recon_u8), percentile_normalise(ref_u8)
    _, smap = structural_similarity(a, b, data_range=1.0, full=True)
    out = {"ssim_norm": float(smap.mean()), "mse_norm": float(np.mean((a - b) ** 2)), "ssim_active": float("nan")}
    if prev_ref_u8 is not None:
        mask = active_mask(ref_u8, prev_ref_u8)
        if mask.mean() >= ACTIVE_MIN_FRACTION:
            out["ssim_active"] = float(smap[mask].mean())
    return out


class FrameScorer:
    """Scores one reconstruction against one reference frame (both uint8 (H, W) of the same size)."""

    def __init__(self, use_lpips: bool = True) -> None:
        self.metrics = require("skimage.metrics", "SSIM (pip install 'livenight[train]')")
        self._lpips = None
        if use_lpips and lpips_available()[0]:
            import lpips  # pragma: no cover - not installed in CI

            self._lpips = lpips.LPIPS(net="vgg", verbose=False)

    def score(self, recon_u8: np.ndarray, ref_u8: np.ndarray, into: SequenceScores) -> None:
        if recon_u8.shape != ref_u8.shape:
            raise ValueError(f"reconstruction {recon_u8.shape} and reference {ref_u8.shape} differ in size; "
                             "crop the reconstruction to the sensor size")
        a = recon_u8.astype(np.float64) / 255.0
        b = ref_u8.astype(np.float64) / 255.0
        into.mse.append(float(np.mean((a - b) ** 2)))
        into.ssim.append(float(self.metrics.structural_similarity(a, b, data_range=1.0)))
        # the previous reference is the last one that differs from this one (outputs may share a reference)
        if into._last_ref is not None and not np.array_equal(into._last_ref, ref_u8):
            into._prev_ref = into._last_ref
        into._last_ref = ref_u8.copy()
        act = active_scores(recon_u8, ref_u8, into._prev_ref)
        into.ssim_norm.append(act["ssim_norm"])
        into.mse_norm.append(act["mse_norm"])
        if act["ssim_active"] == act["ssim_active"]:
            into.ssim_active.append(act["ssim_active"])
        if self._lpips is not None:  # pragma: no cover
            import torch

            ta = torch.from_numpy(a).float()[None, None].repeat(1, 3, 1, 1) * 2 - 1
            tb = torch.from_numpy(b).float()[None, None].repeat(1, 3, 1, 1) * 2 - 1
            into.lpips.append(float(self._lpips(ta, tb).item()))
        into.frames += 1


def write_csv(path: str | os.PathLike, rows: list[SequenceScores]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", "frames", "mse", "ssim", "lpips", "ssim_active", "active_frames", "ssim_norm",
                    "mse_norm", "frames_per_s"])
        for r in rows:
            w.writerow([r.name, r.frames, f"{r.mean('mse'):.6f}", f"{r.mean('ssim'):.6f}",
                        "" if not r.lpips else f"{r.mean('lpips'):.6f}", f"{r.mean('ssim_active'):.6f}",
                        len(r.ssim_active), f"{r.mean('ssim_norm'):.6f}", f"{r.mean('mse_norm'):.6f}",
                        f"{r.fps:.3f}"])
