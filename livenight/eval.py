"""Quality evaluation against reference frames: MSE, SSIM (scikit-image, explicit data_range) and LPIPS when its
weights are available locally. Frames are compared at the sensor size, in [0, 1]."""

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
    fps: float = 0.0

    def mean(self, key: str) -> float:
        vals = getattr(self, key)
        return float(np.mean(vals)) if vals else float("nan")


def lpips_available() -> tuple[bool, str]:
    """LPIPS needs the ``lpips`` package with its VGG weights on disk (nothing is downloaded at run time)."""
    if not has("lpips"):
        return False, "LPIPS skipped: the 'lpips' package (with locally available VGG weights) is not installed"
    return True, ""


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
        if self._lpips is not None:  # pragma: no cover
            import torch

            ta = torch.from_numpy(a).float()[None, None].repeat(1, 3, 1, 1) * 2 - 1
            tb = torch.from_numpy(b).float()[None, None].repeat(1, 3, 1, 1) * 2 - 1
            into.lpips.append(float(self._lpips(ta, tb).item()))
        into.frames += 1


def write_csv(path: str | os.PathLike, rows: list[SequenceScores]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", "frames", "mse", "ssim", "lpips", "frames_per_s"])
        for r in rows:
            w.writerow([r.name, r.frames, f"{r.mean('mse'):.6f}", f"{r.mean('ssim'):.6f}",
                        "" if not r.lpips else f"{r.mean('lpips'):.6f}", f"{r.fps:.3f}"])
