"""The E2VID family: E2VID, E2VID+, FireNet, FireNet+ (rpg_e2vid and event_cnn_minimal checkpoints).

Input: the 5-bin E2VID voxel grid (:func:`livenight.voxel.voxel_grid`, times normalised by the window's first and
last event), with the non-zero mean/std normalisation for the variants trained with it (E2VID, FireNet).

Post-processing presets (``postprocess=``), from ``e2vid-family.md`` §1.4, §2.4, §3.3 and §4.2:

* ``"official"`` (default): what each variant's own inference does. E2VID and FireNet (rpg_e2vid): unsharp mask
  (amount 0.3, σ 1, 5×5, zero border) then intensity rescaling with fixed ``[Imin, Imax] = [0, 1]``
  (``rescale="auto_hdr"`` for rpg_e2vid's ``--auto_hdr``: per-frame min/max, min clamped to [0, 0.45] and max to
  [0.55, 1], each the median over recent frames). E2VID+ and FireNet+ (event_cnn_minimal): clip to [0, 1].
* ``"evreal"``: the EVREAL protocol: E2VID ``robust`` (``(img − p1)/(p99 − p1)`` per frame), everything else
  untouched, then clip to [0, 1].
* ``"clip"``: clip to [0, 1] only.

``rescale`` and ``unsharp_amount`` override the preset. The robust and fixed rescalings look at the cropped frame;
the unsharp mask and auto-HDR bounds act on the padded frame, as rpg_e2vid does. Everything is numpy, so every
backend (torch, ONNX Runtime, TensorRT) post-processes the same way.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .base import ModelFamily, Postprocess, crop_to

#: variants whose checkpoints were trained (and are run officially and by EVREAL) on normalised voxels
NORMALISED_INPUT = {"E2VID": True, "FireNet": True, "E2VID+": False, "FireNet+": False}
#: variants evaluated by rpg_e2vid's own inference (unsharp mask + intensity rescaler)
_RPG_VARIANTS = {"E2VID", "FireNet"}
PRESETS = ("official", "evreal", "clip")
RESCALES = ("fixed", "robust", "auto_hdr")


def unsharp_kernel(size: int = 5, sigma: float = 1.0) -> np.ndarray:
    """rpg_e2vid's unsharp-mask blur kernel: per axis, normal-CDF differences over ``size`` equal cells spanning
    ``±(sigma + Δ/2)`` with ``Δ = (2·sigma + 1)/size``; 2-D = square root of the outer product, normalised to 1."""
    step = (2.0 * sigma + 1.0) / size
    edges = np.linspace(-sigma - step / 2.0, sigma + step / 2.0, size + 1)
    cdf = np.array([0.5 * (1.0 + math.erf(e / math.sqrt(2.0))) for e in edges])
    k1 = np.diff(cdf)
    k2 = np.sqrt(np.outer(k1, k1))
    return (k2 / k2.sum()).astype(np.float32)


def _correlate_zero_border(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D cross-correlation with zero padding (what ``F.conv2d(img, k, padding=k//2)`` computes). A rank-1 kernel
    (the unsharp blur: the square root of an outer product is one) runs as a column pass then a row pass."""
    k = kernel.shape[0]
    r = k // 2
    h, w = img.shape
    col, row = kernel.sum(axis=1), kernel.sum(axis=0) / kernel.sum()
    if np.allclose(np.outer(col, row), kernel, rtol=1e-5, atol=1e-8):
        padded = np.zeros((h + 2 * r, w), dtype=np.float32)
        padded[r:r + h] = img
        tmp = np.zeros((h, w + 2 * r), dtype=np.float32)
        for dy in range(k):
            tmp[:, r:r + w] += col[dy] * padded[dy:dy + h]
        out = np.zeros_like(img)
        for dx in range(k):
            out += row[dx] * tmp[:, dx:dx + w]
        return out
    padded = np.zeros((h + 2 * r, w + 2 * r), dtype=np.float32)
    padded[r:r + h, r:r + w] = img
    out = np.zeros_like(img)
    for dy in range(k):
        for dx in range(k):
            out += kernel[dy, dx] * padded[dy:dy + h, dx:dx + w]
    return out


class VoxelRepresentation:
    def __init__(self, num_bins: int, normalize: bool) -> None:
        self.num_bins = int(num_bins)
        self.normalize = bool(normalize)
        self.channels = self.num_bins

    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int], out: np.ndarray) -> np.ndarray:
        from livenight.voxel import normalize_voxel, voxel_grid

        voxel_grid(events, self.num_bins, sensor_size, out=out)
        if self.normalize:
            normalize_voxel(out, out=out)
        return out

    def to_json(self) -> dict:
        return {"kind": "voxel", "num_bins": self.num_bins, "normalize": self.normalize}


class E2VIDPostprocess(Postprocess):
    def __init__(self, unsharp_amount: float, rescale: str, robust_percentiles=(1.0, 99.0),
                 auto_hdr_median_size: int = 10) -> None:
        self.unsharp_amount = float(unsharp_amount)
        self.rescale = rescale
        self.robust_percentiles = tuple(float(v) for v in robust_percentiles)
        self.auto_hdr_median_size = int(auto_hdr_median_size)
        self._blur = unsharp_kernel()
        self._bounds: deque[tuple[float, float]] = deque()

    def reset(self) -> None:
        self._bounds = deque()

    def __call__(self, img: np.ndarray, crop) -> np.ndarray:
        if self.unsharp_amount > 0:
            img = (1.0 + self.unsharp_amount) * img - self.unsharp_amount * _correlate_zero_border(img, self._blur)
        if self.rescale == "auto_hdr":
            lo = min(max(float(img.min()), 0.0), 0.45)
            hi = min(max(float(img.max()), 0.55), 1.0)
            # rpg_e2vid drops the oldest bound only when more than N are held, then appends: up to N+1 frames
            if len(self._bounds) > self.auto_hdr_median_size:
                self._bounds.popleft()
            self._bounds.append((lo, hi))
            lo = float(np.median([b[0] for b in self._bounds]))
            hi = float(np.median([b[1] for b in self._bounds]))
            img = (img - lo) / (hi - lo)
        out = crop_to(img, crop)
        if self.rescale == "robust":
            p_lo, p_hi = np.percentile(out, self.robust_percentiles)
            out = (out - np.float32(p_lo)) / np.float32(max(p_hi - p_lo, 1e-12))
        return np.clip(out, 0.0, 1.0)

    def to_json(self) -> dict:
        return {"unsharp_amount": self.unsharp_amount, "rescale": self.rescale,
                "robust_percentiles": list(self.robust_percentiles), "auto_hdr_median_size": self.auto_hdr_median_size}


class E2VIDFamily(ModelFamily):
    name = "e2vid"
    title = "E2VID / E2VID+ / FireNet / FireNet+"
    crop_by_default = True  # the official inferences return sensor-size frames
    default_window_us = (20_000, 40_000)
    rled_by_default = True

    def owns(self, model) -> bool:
        from livenight.model.e2vid import E2VIDRecurrent, FireNet

        return isinstance(model, (E2VIDRecurrent, FireNet))

    def detect(self, checkpoint: dict) -> int:
        from livenight.model.e2vid import detect_family

        if checkpoint.get("livenight_format") is not None:
            return 2 if checkpoint.get("family") == self.name else 0
        return 2 if detect_family(checkpoint) is not None else 0

    def from_checkpoint(self, checkpoint: dict, sensor_size, source: str):
        from livenight.model.e2vid import model_from_checkpoint

        if checkpoint.get("livenight_format") is not None:
            return super().from_checkpoint(checkpoint, sensor_size, source)
        return model_from_checkpoint(checkpoint, sensor_size, source)[0]

    def from_config(self, config: dict, sensor_size):
        from livenight.model.e2vid import E2VIDConfig, E2VIDRecurrent, FireNet, FireNetConfig

        d = {k: v for k, v in config.items() if k not in ("sensor_size", "arch")}
        if str(d.get("family", "")).startswith("FireNet"):
            return FireNet(FireNetConfig(**d, sensor_size=tuple(sensor_size)))
        return E2VIDRecurrent(E2VIDConfig(**d, sensor_size=tuple(sensor_size)))

    def check(self, model) -> None:
        from livenight.errors import EngineMismatchError

        if model.cfg.family == "E2VID+" and model.cfg.num_bins == 10:
            raise EngineMismatchError("this E2VID+ checkpoint takes 10 input channels: an event_cnn_minimal 'update' "
                                      "model fed 5 ON + 5 OFF bins (--update); livenight feeds the 5 combined bins "
                                      "of the paper models and does not support it")

    def variant(self, model_or_config) -> str:
        cfg = getattr(model_or_config, "cfg", None)
        return cfg.family if cfg is not None else str(model_or_config.get("family", "E2VID"))

    def representation(self, model, normalize: bool | None = None, **_):
        variant = self.variant(model)
        norm = NORMALISED_INPUT.get(variant, False) if normalize is None else bool(normalize)
        return VoxelRepresentation(model.cfg.num_bins, norm)

    def representation_from_json(self, d: dict):
        return VoxelRepresentation(d["num_bins"], d["normalize"])

    def postprocess(self, config: dict, postprocess: str = "official", rescale: str | None = None,
                    unsharp_amount: float | None = None, robust_percentiles=(1.0, 99.0),
                    auto_hdr_median_size: int = 10, **_) -> E2VIDPostprocess:
        if postprocess not in PRESETS:
            raise ValueError(f"postprocess must be 'official', 'evreal' or 'clip' (got {postprocess!r})")
        if rescale not in (None, *RESCALES):
            raise ValueError(f"rescale must be 'fixed', 'robust', 'auto_hdr' or None (got {rescale!r})")
        lo, hi = (float(v) for v in robust_percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"robust_percentiles must satisfy 0 <= low < high <= 100 (got {robust_percentiles!r})")
        if int(auto_hdr_median_size) < 1:
            raise ValueError(f"auto_hdr_median_size must be >= 1 (got {auto_hdr_median_size!r})")
        variant = self.variant(config)
        rpg = postprocess == "official" and variant in _RPG_VARIANTS
        amount = float(unsharp_amount) if unsharp_amount is not None else (0.3 if rpg else 0.0)
        if rescale is None:
            rescale = "robust" if postprocess == "evreal" and variant == "E2VID" else "fixed"
        return E2VIDPostprocess(amount, rescale, (lo, hi), auto_hdr_median_size)

    def postprocess_from_json(self, config: dict, d: dict) -> E2VIDPostprocess:
        return E2VIDPostprocess(d["unsharp_amount"], d["rescale"], d["robust_percentiles"], d["auto_hdr_median_size"])


FAMILY = E2VIDFamily()
