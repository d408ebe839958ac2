"""Evaluation metrics: SSIM on active pixels (issue 12 item 5), full-frame SSIM and MSE of normalised images."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from livenight.eval import (FrameScorer, SequenceScores, active_mask, active_scores,  # noqa: E402
                            percentile_normalise)


def _scene(h=120, w=160, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 200, size=(h, w)).astype(np.uint8)
    return img


def test_percentile_normalise_maps_1st_and_99th_percentiles_to_0_and_1():
    img = np.arange(10_000, dtype=np.float64).reshape(100, 100)
    out = percentile_normalise(img)
    lo, hi = np.percentile(img, (1, 99))
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[50, 0] == pytest.approx((5000 - lo) / (hi - lo))
    assert not percentile_normalise(np.full((8, 8), 7)).any()  # a flat image: zeros, no division by zero


def test_active_mask_is_the_change_above_8_grey_levels_dilated_15x15():
    prev = np.full((60, 80), 100, np.uint8)
    ref = prev.copy()
    ref[30, 40] = 109  # > 8 levels: active
    ref[10, 10] = 108  # exactly 8: not active
    m = active_mask(ref, prev)
    assert m.sum() == 15 * 15
    assert m[30 - 7:30 + 8, 40 - 7:40 + 8].all() and not m[10, 10]


def test_active_ssim_scores_only_the_mask_and_skips_small_masks():
    ref = _scene()
    prev = ref.copy()
    prev[40:80, 60:100] = 255 - prev[40:80, 60:100]  # a moving object changed this block
    recon = ref.copy()
    # wrong far from the object (its pixels shuffled: same histogram, so the same percentile normalisation): hurts
    # the full-frame SSIM, not the active one
    recon[:, :30] = np.random.default_rng(5).permutation(recon[:, :30].ravel()).reshape(recon[:, :30].shape)
    s = active_scores(recon, ref, prev)
    assert s["ssim_active"] == pytest.approx(1.0, abs=1e-6)
    assert s["ssim_norm"] < 0.9
    assert s["mse_norm"] > 0
    tiny_prev = ref.copy()
    tiny_prev[0, 0] ^= 0xFF  # one changed pixel: 8x8 after clipping the 15x15 box at the corner = 0.33 % < 0.5 %
    assert np.isnan(active_scores(recon, ref, tiny_prev)["ssim_active"])
    assert np.isnan(active_scores(recon, ref, None)["ssim_active"])  # first frame: no previous reference


def test_frame_scorer_uses_the_last_different_reference_as_previous():
    a, b = _scene(seed=1), _scene(seed=2)
    scorer = FrameScorer(use_lpips=False)
    scores = SequenceScores("x")
    scorer.score(a, a, scores)  # first: nothing to compare with
    scorer.score(a, a, scores)  # same reference again (output faster than references): still no previous
    scorer.score(b, b, scores)  # b against previous a: active
    scorer.score(b, b, scores)  # b again: previous is still a (the last *different* reference)
    assert scores.frames == 4 and len(scores.ssim_norm) == 4
    assert len(scores.ssim_active) == 2 and scores.ssim_active == pytest.approx([1.0, 1.0])
