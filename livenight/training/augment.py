"""Crops and flips shared by a whole sequence, sequences of windows, and the step-deterministic batch sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import SourceError
from .recordings import Recording


@dataclass(frozen=True)
class Augment:
    """One crop + flips, applied identically to every window of a sequence (events, frames and flow together).

    The crop is ``[x0, x0 + width) × [y0, y0 + height)``; events inside are shifted by ``(−x0, −y0)`` and then flipped
    as ``x → width − 1 − x`` (``hflip``) and ``y → height − 1 − y`` (``vflip``), exactly like the pixels.

    Example:
        >>> aug = Augment(x0=2, y0=1, width=4, height=3, hflip=True)
        >>> img = np.arange(30, dtype=np.uint8).reshape(5, 6)
        >>> aug.frame(img)[0].tolist()
        [11, 10, 9, 8]
    """

    x0: int
    y0: int
    width: int
    height: int
    hflip: bool = False
    vflip: bool = False

    @classmethod
    def random(cls, rng: np.random.Generator, sensor_size: tuple[int, int], crop: int | None,
               flips: bool) -> "Augment":
        w, h = sensor_size
        cw, ch = (w, h) if not crop else (crop, crop)
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        hf = bool(rng.random() < 0.5) if flips else False
        vf = bool(rng.random() < 0.5) if flips else False
        return cls(x0, y0, cw, ch, hf, vf)

    @classmethod
    def center(cls, sensor_size: tuple[int, int], crop: int | None) -> "Augment":
        w, h = sensor_size
        cw, ch = (w, h) if not crop else (crop, crop)
        return cls((w - cw) // 2, (h - ch) // 2, cw, ch)

    def events(self, ev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, t_us, p)`` of the events inside the crop, in crop coordinates (inputs are not modified)."""
        x = ev["x"].astype(np.int64)
        y = ev["y"].astype(np.int64)
        keep = (x >= self.x0) & (x < self.x0 + self.width) & (y >= self.y0) & (y < self.y0 + self.height)
        x = x[keep] - self.x0
        y = y[keep] - self.y0
        if self.hflip:
            x = self.width - 1 - x
        if self.vflip:
            y = self.height - 1 - y
        return x, y, ev["t"][keep].astype(np.int64), ev["p"][keep].astype(np.uint8)

    def frame(self, img: np.ndarray) -> np.ndarray:
        out = img[self.y0:self.y0 + self.height, self.x0:self.x0 + self.width]
        if self.hflip:
            out = out[:, ::-1]
        if self.vflip:
            out = out[::-1, :]
        return np.ascontiguousarray(out)

    def flow(self, fl: np.ndarray) -> np.ndarray:
        """Crop a ``[2, H, W]`` (dx, dy) flow field; a flip also negates the matching component."""
        out = np.array(fl[:, self.y0:self.y0 + self.height, self.x0:self.x0 + self.width], dtype=np.float32)
        if self.hflip:
            out = out[:, :, ::-1].copy()
            out[0] *= -1
        if self.vflip:
            out = out[:, ::-1, :].copy()
            out[1] *= -1
        return out


def model_inputs(x: np.ndarray, y: np.ndarray, t_us: np.ndarray, p: np.ndarray):
    """NER-Net's per-window training inputs (:meth:`livenight.families.nernet.NERNetFamily.training_events`)."""
    from .. import families

    return families.get("nernet").training_events(x, y, t_us, p)


@dataclass
class SequenceItem:
    """One training / validation sequence: ``events[k]`` = ``(x, y, t, p)`` of window ``start + k`` ready for
    :meth:`NERNet.quantize`, ``frames`` uint8 ``[L, h, w]`` (GT image ``start + k``), ``flow`` ``[L, 2, h, w]``
    or None."""

    name: str
    start: int
    augment: Augment
    events: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    frames: np.ndarray
    flow: np.ndarray | None = None


class SequenceDataset(torch.utils.data.Dataset):
    """Non-overlapping sequences of ``sequence_length`` consecutive windows (step = length, as officially).

    ``dataset[k]`` gives sequence ``k`` with a centred crop and no flip; ``dataset[(k, seed)]`` draws the crop and
    flips from ``seed`` (the training path). ``crop`` None / 0 keeps the full frame.

    Args:
        recordings: opened recordings.
        sequence_length: windows per sequence.
        crop: square crop size in pixels.
        flips: random horizontal / vertical flips (each with probability 0.5) on the seeded path.
        allow_short: a recording shorter than ``sequence_length`` gives one shorter sequence (validation) instead of
            none.
        max_sequences: keep only the first N sequences (0 = all).
        family: the model family (its ``training_events`` prepares each window; default NER-Net).
    """

    def __init__(self, recordings: Sequence[Recording], sequence_length: int, crop: int | None = None,
                 flips: bool = False, *, allow_short: bool = False, max_sequences: int = 0, family=None) -> None:
        from .. import families

        self.family = family or families.get("nernet")
        self.recordings = list(recordings)
        self.sequence_length = int(sequence_length)
        self.crop = crop or None
        self.flips = flips
        self.index: list[tuple[int, int, int]] = []  # (recording, first window, length)
        self.skipped: list[str] = []
        L = self.sequence_length
        for r, rec in enumerate(self.recordings):
            w, h = rec.sensor_size
            if self.crop and (self.crop > w or self.crop > h):
                raise SourceError(f"{rec.name}: {w}x{h} frames are smaller than the {self.crop}x{self.crop} crop; "
                                  "lower 'crop' or use larger recordings")
            n = rec.num_windows
            if n >= L:
                self.index.extend((r, s, L) for s in range(0, n - L + 1, L))
            elif allow_short and n > 0:
                self.index.append((r, 0, n))
            else:
                self.skipped.append(rec.name)
        if max_sequences:
            self.index = self.index[:max_sequences]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def has_flow(self) -> bool:
        return any(self.recordings[r].has_flow for r, _, _ in self.index)

    def __getitem__(self, key) -> SequenceItem:
        if isinstance(key, tuple):
            k, seed = key
            rec = self.recordings[self.index[k][0]]
            aug = Augment.random(np.random.default_rng(int(seed)), rec.sensor_size, self.crop, self.flips)
        else:
            k = key
            rec = self.recordings[self.index[k][0]]
            aug = Augment.center(rec.sensor_size, self.crop)
        return self.item(int(k), aug)

    def item(self, k: int, aug: Augment) -> SequenceItem:
        """Sequence ``k`` under an explicit augmentation."""
        r, start, length = self.index[k]
        rec = self.recordings[r]
        events, frames, flows = [], [], []
        for i in range(start, start + length):
            events.append(self.family.training_events(*aug.events(rec.window_events(i))))
            frames.append(aug.frame(rec.frame(i)))
            if rec.has_flow:
                flows.append(aug.flow(rec.flow(i)))
        return SequenceItem(rec.name, start, aug, events, np.stack(frames),
                            np.stack(flows) if flows else None)


class StepBatchSampler:
    """The keys ``(sequence, augment seed)`` each rank trains on at each step: a pure function of the step.

    Epoch ``e`` orders the ``n`` sequences by ``permutation(SeedSequence([seed, e]))``, pads it by wrapping to a
    multiple of ``world_size`` and gives rank ``r`` every ``world_size``-th entry from ``r`` (DistributedSampler-like).
    Rank ``r`` takes its samples ``step·batch … step·batch + batch − 1`` in that stream.
    """

    def __init__(self, num_sequences: int, batch: int, steps: int, start_step: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_sequences <= 0:
            raise ValueError(f"StepBatchSampler needs at least one sequence (got {num_sequences})")
        self.n, self.batch, self.steps, self.start = num_sequences, batch, steps, start_step
        self.seed, self.rank, self.world = seed, rank, world_size
        self.per_rank = math.ceil(num_sequences / world_size)

    @lru_cache(maxsize=4)
    def _shard(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng(np.random.SeedSequence([self.seed, epoch])).permutation(self.n)
        return np.resize(perm, self.per_rank * self.world)[self.rank::self.world]

    def keys(self, step: int) -> list[tuple[int, int]]:
        out = []
        for b in range(self.batch):
            epoch, j = divmod(step * self.batch + b, self.per_rank)
            seed = int(np.random.SeedSequence([self.seed, step, self.rank, b]).generate_state(1)[0])
            out.append((int(self._shard(epoch)[j]), seed))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for s in range(self.start, self.steps):
            yield self.keys(s)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def _as_list(batch: list) -> list:
    return batch
