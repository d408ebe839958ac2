"""Validation: MSE and SSIM of every window of held-out sequences, each from a zero state."""

from __future__ import annotations

import numpy as np
import torch

from .._optional import has
from .augment import SequenceDataset
from .losses import ssim
from .trainer import SequenceModel


@torch.no_grad()
def evaluate(net: torch.nn.Module, dataset: SequenceDataset, device: torch.device | str = "cpu") -> dict[str, float]:
    """MSE and SSIM of every window of every sequence, each sequence from a zero state.

    Predictions go through the inference post-processing (clip to [0, 1], ×255, truncation to uint8) and are scored
    with :class:`~livenight.eval.FrameScorer` (scikit-image SSIM) when scikit-image is installed, else with
    :func:`ssim` here. Frames of another size than ``net``'s get a copy of the network at their size.
    """
    device = torch.device(device)
    scorer = None
    if has("skimage"):
        from ..eval import FrameScorer, SequenceScores

        scorer, scores = FrameScorer(use_lpips=False), SequenceScores("val")
    mse: list[float] = []
    sims: list[float] = []
    from .. import families

    family = families.family_of(net)
    nets: dict[tuple[int, int], torch.nn.Module] = {tuple(net.cfg.sensor_size): net}
    was_training = net.training
    net.eval()
    try:
        for k in range(len(dataset)):
            item = dataset[k]
            size = (item.frames.shape[2], item.frames.shape[1])
            if size not in nets:
                m = family.from_config(family.config_of(net), size).to(device)
                m.load_state_dict(net.state_dict())
                nets[size] = m.eval()
            model = SequenceModel(nets[size])
            state = nets[size].initial_state(1, device=device)
            for j, ev in enumerate(item.events):
                win = [[tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in ev)]]
                out, state = model(win, state)
                u8 = (out[0, 0, 0].float().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
                ref = item.frames[j]
                if scorer is not None:
                    scorer.score(u8, ref, scores)
                else:
                    a = torch.from_numpy(u8).float()[None, None] / 255
                    b = torch.from_numpy(ref).float()[None, None] / 255
                    mse.append(float(((a - b) ** 2).mean()))
                    sims.append(float(ssim(a, b)))
    finally:
        net.train(was_training)
    if scorer is not None:
        mse, sims = scores.mse, scores.ssim
    return {"val_mse": float(np.mean(mse)) if mse else float("nan"),
            "val_ssim": float(np.mean(sims)) if sims else float("nan"), "val_frames": len(mse)}
