"""Loss terms: L1, differentiable SSIM, SSIM where the scene moves (also on percentile-normalised frames), LPIPS
(local weights only), temporal consistency from optical flow or from the ground truth's own frame-to-frame change."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .._optional import has
from ..eval import ACTIVE_CHANGE_GREY, ACTIVE_DILATE_PX
from .config import LossConfig


def _gaussian(size: int, sigma: float, device, dtype) -> Tensor:
    """The normalised 1-D Gaussian; the 2-D window is its outer product (applied as two 1-D passes)."""
    r = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype)


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of two ``[B, C, H, W]`` batches (differentiable): Gaussian window, valid region only.

    Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=...)`` (both average the window-valid interior). A window larger than the image shrinks to fit.
    """
    return ssim_map(a, b, data_range, window, sigma).mean()


def ssim_map(a: Tensor, b: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """The per-pixel SSIM map behind :func:`ssim`, over the window-valid interior (``[B, C, H − s + 1, W − s + 1]``
    for a window of ``s``)."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two equal [B, C, H, W] tensors (got {tuple(a.shape)} and {tuple(b.shape)})")
    a, b = a.float(), b.float()
    c = a.shape[1]
    size = min(window, a.shape[2], a.shape[3])
    size -= 1 - size % 2
    g = _gaussian(size, sigma, a.device, a.dtype)
    n = 5 * c  # the five local means in one separable pass (one depthwise conv per direction, not five 2-D ones)
    stats = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    stats = F.conv2d(F.conv2d(stats, g.view(1, 1, 1, size).expand(n, 1, 1, size), groups=n),
                     g.view(1, 1, size, 1).expand(n, 1, size, 1), groups=n)
    mu_a, mu_b, e_aa, e_bb, e_ab = torch.split(stats, c, dim=1)
    var_a = e_aa - mu_a ** 2
    var_b = e_bb - mu_b ** 2
    cov = e_ab - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def _box_max(x: Tensor, size: int) -> Tensor:
    """Dilate ``[B, C, H, W]`` by a ``size``×``size`` box (odd ``size``; separable: a row pass, then a column pass)."""
    r = size // 2
    x = F.max_pool2d(x, (1, size), stride=1, padding=(0, r))
    return F.max_pool2d(x, (size, 1), stride=1, padding=(r, 0))


def weighted_dssim(out: Tensor, gt: Tensor, weight: Tensor, min_total: float, window: int = 11) -> Tensor:
    """``1 − SSIM`` averaged with full-size per-pixel ``weight`` over the SSIM map's window-valid interior (the
    weights' total is clamped to at least ``min_total``)."""
    smap = ssim_map(out, gt, window=window)
    r = (out.shape[-1] - smap.shape[-1]) // 2
    wv = weight[..., r:r + smap.shape[-2], r:r + smap.shape[-1]]
    return ((1.0 - smap) * wv).sum() / wv.sum().clamp(min=min_total)


def active_mask(gt: Tensor, prev_gt: Tensor, threshold: float = ACTIVE_CHANGE_GREY / 255,
                dilate: int = ACTIVE_DILATE_PX) -> Tensor:
    """Where the scene moves: pixels whose reference changed by more than ``threshold`` since the previous
    reference, dilated by a ``dilate``×``dilate`` box (the "active pixels" of ``livenight eval``)."""
    return _box_max(((gt.float() - prev_gt.float()).abs() > threshold).float(), dilate)


def active_ssim_loss(out: Tensor, gt: Tensor, prev_gt: Tensor, window: int = 11) -> Tensor:
    """``1 − SSIM`` averaged over the active pixels (:func:`active_mask`) of each frame; 0 where nothing moved."""
    return weighted_dssim(out, gt, active_mask(gt, prev_gt), min_total=1.0, window=window)


def percentile_normalise(x: Tensor, low: float = 0.01, high: float = 0.99, min_range: float = 0.01) -> Tensor:
    """Each ``[C, H, W]`` frame of ``x`` mapped to [0, 1] by its own 1st and 99th percentiles and clipped, as
    :func:`livenight.eval.percentile_normalise` does (differentiable; the range is held at least ``min_range``)."""
    flat = x.float().flatten(1)
    q = torch.quantile(flat, torch.tensor([low, high], device=x.device, dtype=flat.dtype), dim=1)  # [2, B]
    lo, hi = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
    return ((x.float() - lo) / (hi - lo).clamp(min=min_range)).clamp(0.0, 1.0)


def warp(img: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: ``out[y, x] = img[y + dy, x + dx]`` (bilinear, zeros outside) with ``flow = (dx, dy)``
    ``[B, 2, H, W]`` in pixels."""
    b, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device, dtype=img.dtype),
                            torch.arange(w, device=img.device, dtype=img.dtype), indexing="ij")
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return F.grid_sample(img, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS (VGG, v0.1) can run without downloading anything, and why not."""
    if not has("lpips"):
        return False, "LPIPS loss skipped: the 'lpips' package is not installed"
    import lpips

    head = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    vgg = Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"
    for p in (head, vgg):
        if not p.is_file():
            return False, f"LPIPS loss skipped: weights {p} are not on disk (nothing is downloaded at run time)"
    return True, ""


def seen_weights(windows: list, size_hw: tuple[int, int], unseen: float, radius_px: int, device) -> list[Tensor]:
    """Per window ``k`` of a batch of sequences, ``[B, 1, h, w]`` weights: 1 where an event fired within
    ``radius_px`` (a box) in windows ``0 … k``, ``unseen`` elsewhere. ``windows[k][b]`` starts with the event
    ``x`` and ``y`` pixel tensors."""
    h, w = size_hw
    seen = torch.zeros(len(windows[0]), 1, h, w, device=device)
    one = torch.ones((), device=device)
    out = []
    for win in windows:
        for b, ev in enumerate(win):
            x, y = ev[0].long().clamp(0, w - 1), ev[1].long().clamp(0, h - 1)
            seen[b, 0].index_put_((y, x), one)
        m = _box_max(seen, 2 * radius_px + 1) if radius_px else seen
        out.append(unseen + (1.0 - unseen) * m)
    return out


class LossTerms:
    """The configured loss terms (unweighted values per window) and their weights; unusable terms are dropped with
    a message."""

    def __init__(self, cfg: LossConfig, device: torch.device, has_flow: bool, say) -> None:
        self.cfg = cfg
        self.weights = {k: float(getattr(cfg, k)) for k in ("l1", "ssim", "active", "lpips", "temporal", "norm_ssim",
                                                            "norm_active", "change") if getattr(cfg, k) > 0}
        self._lpips = None
        if "lpips" in self.weights:
            ok, why = lpips_status()
            if ok:  # pragma: no cover - lpips is not installed in CI
                import lpips

                self._lpips = lpips.LPIPS(net="vgg", version="0.1", verbose=False).to(device).eval()
                for p in self._lpips.parameters():
                    p.requires_grad_(False)
            else:
                say(why)
                del self.weights["lpips"]
        if "temporal" in self.weights and not has_flow:
            say("temporal consistency loss skipped: the training data carries no optical flow "
                "(h5 'flow/flowNNNNNNNNN' or memmap 'flow.npy')")
            del self.weights["temporal"]
        if not self.weights:
            raise ValueError("no usable loss term: set losses.l1 and/or losses.ssim > 0 "
                             "(LPIPS needs the lpips package with local weights; temporal needs flow data)")

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    def window(self, k: int, out: Tensor, gt: Tensor, prev_out: Tensor | None, prev_gt: Tensor | None,
               flow: Tensor | None, weight: Tensor | None = None) -> dict[str, Tensor]:
        """Unweighted terms for window ``k`` of a sequence (out, gt: ``[B, 1, h, w]``); ``weight`` ``[B, 1, h, w]``
        (:func:`seen_weights`) weighs the L1 and SSIM terms per pixel."""
        terms: dict[str, Tensor] = {}
        out = out.float()
        if "l1" in self.weights:
            d = (out - gt).abs()
            terms["l1"] = d.mean() if weight is None else (weight * d).sum() / weight.sum().clamp(min=1e-6)
        if "ssim" in self.weights:
            terms["ssim"] = 1.0 - ssim(out, gt) if weight is None else weighted_dssim(out, gt, weight, min_total=1e-6)
        if "active" in self.weights and prev_gt is not None:
            terms["active"] = active_ssim_loss(out, gt, prev_gt)
        if "norm_ssim" in self.weights or ("norm_active" in self.weights and prev_gt is not None):
            a, b = percentile_normalise(out), percentile_normalise(gt)
            if "norm_ssim" in self.weights:
                terms["norm_ssim"] = 1.0 - ssim(a, b)
            if "norm_active" in self.weights and prev_gt is not None:
                terms["norm_active"] = weighted_dssim(a, b, active_mask(gt, prev_gt), min_total=1.0)
        if "change" in self.weights and prev_out is not None and prev_gt is not None:
            terms["change"] = ((out - prev_out.float()) - (gt - prev_gt)).abs().mean()
        if "lpips" in self.weights:  # pragma: no cover - needs lpips
            terms["lpips"] = self._lpips(out.expand(-1, 3, -1, -1), gt.expand(-1, 3, -1, -1), normalize=True).mean()
        if ("temporal" in self.weights and flow is not None and prev_out is not None
                and k >= self.cfg.temporal_start):
            with torch.no_grad():
                visible = torch.exp(-self.cfg.temporal_alpha * (gt - warp(prev_gt, flow)) ** 2)
            terms["temporal"] = (visible * (out - warp(prev_out.float(), flow)).abs()).mean()
        return terms
