"""Training NER-Net-family models on RLED recordings, prepared memory maps and simulated night data.

Why it is like this
-------------------
* **The official recipe is the default** (``shared/reference/ner-net.md`` §5): sequences of 40 consecutive
  ``event_indices`` windows, one 160×160 random crop and one pair of random flips per sequence (events are cropped,
  shifted and flipped with the pixels: ``x → w−1−x``, ``y → h−1−y``), a dummy event ``(x=0, y=0, t=0, ON)`` in empty
  windows, zero state at the start of every sequence and back-propagation through the whole sequence, LETC loaded
  from ``letc.pth`` and frozen, Adam(lr 1e-4, amsgrad) with a constant rate, LPIPS (VGG) as the loss. Everything
  else (L1, a differentiable SSIM, temporal consistency, cosine / step schedules, gradient clipping, truncated
  BPTT, AMP, DDP) is opt-in from the config.
* **The model trains at the crop size.** ``NERNet(sensor_size=(crop, crop))``; the exact, differentiable LETC
  quantisation (:meth:`~livenight.model.nernet.NERNet.quantize`) builds each window's grid, so a trainable LETC MLP
  gets gradients. When the MLP is frozen the quantisation runs under ``no_grad`` (it dominates the backward pass
  otherwise), always in float32 and outside autocast (its ``index_put_`` accumulates into a float32 grid).
* **Times are converted exactly as livenight's inference converts them** (:func:`livenight.letc.official_times`:
  float32 seconds when a window spans more than 1 ms), so training and live see the same LETC input. The official
  trainer always divides by 1e6; the two differ only for windows spanning ≤ 1 ms whose events share one timestamp.
* **Sampling is a pure function of (seed, step, rank).** Epoch ``e`` visits the sequences in
  ``permutation(seed, e)``, sharded over ranks like ``DistributedSampler`` (padded by wrapping); the crop and flips
  of batch element ``b`` at step ``s`` on rank ``r`` come from ``SeedSequence([seed, s, r, b])``. Resuming therefore
  reproduces the uninterrupted run exactly without pickling any loader state, and DDP ranks see disjoint shards.
* **One module call per (truncated-BPTT) chunk.** The unrolled sequence is one ``nn.Module`` call, so DDP sees one
  forward per backward, and the gradients of every chunk are all-reduced once.
* **Only rank 0 writes** (checkpoints, CSV, TensorBoard, validation). Checkpoints are livenight's format
  (:func:`~livenight.model.checkpoint.save_model`) plus ``step``, ``optimizer``, ``train_config`` (plain JSON types),
  ``rng`` and ``scaler``: ``load_model`` and ``torch.load(weights_only=True)`` both read them.
* **Relative paths in a config resolve against the current working directory** (run from the project root).

Example:
    >>> from livenight.train import run_train
    >>> summary = run_train("configs/ner-tiny.toml", overrides={"steps": 10})   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import glob
import hashlib
import json
import math
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ._optional import has
from .errors import SourceError, SourceNotFoundError
from .events import EVENT_DTYPE, check_sensor_size
from .letc import official_times
from .model.checkpoint import load_letc, load_model, read_checkpoint, save_model
from .model.nernet import NERNet, NERNetConfig

__all__ = ["TrainConfig", "DataConfig", "ValConfig", "SyntheticConfig", "LossConfig", "LogConfig", "load_config",
           "Augment", "SequenceItem", "SequenceDataset", "StepBatchSampler", "H5Recording", "MemmapRecording",
           "ArrayRecording", "open_recordings", "synthetic_params", "synthetic_recordings", "model_inputs",
           "build_model", "Trainer", "TrainResult", "SequenceModel", "LossTerms", "lpips_status", "ssim", "warp",
           "evaluate", "train", "run_train", "prepare", "prepare_file", "run_prepare"]

Range = tuple[float, float]
Schedule = Literal["constant", "cosine", "step"]

# ================================================================================================ configuration


def _range(name: str, v: Any, integer: bool = False) -> tuple:
    """A fixed value or a ``[lo, hi]`` pair → ``(lo, hi)`` with ``lo <= hi``."""
    vals = list(v) if isinstance(v, (list, tuple)) else [v, v]
    if len(vals) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
        raise ValueError(f"synthetic.{name} must be a number or [min, max] (got {v!r})")
    lo, hi = (int(x) if integer else float(x) for x in vals)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"synthetic.{name} must be finite with min <= max (got {v!r})")
    return lo, hi


#: synthetic parameters drawn per sequence; log-uniform where they span decades, integers where they count
_SYN_RANGES = ("illuminance", "pan_px_per_s", "pan_angle_deg", "n_objects", "object_speed_px_per_s",
               "headlight_emission", "texture_density", "contrast", "feature_scale", "tau_ref_us", "threshold",
               "threshold_sigma", "refractory_us", "ba_rate_hz", "n_hot_pixels", "hot_rate_hz")
_SYN_LOG = {"illuminance", "tau_ref_us", "ba_rate_hz", "hot_rate_hz"}
_SYN_INT = {"n_objects", "n_hot_pixels"}


@dataclass(frozen=True)
class SyntheticConfig:
    """Simulated night recordings (:func:`livenight.simulate.simulate_night`), one parameter draw per recording.

    Every range is ``(min, max)`` (a single number fixes the value); recording ``i`` draws its
    :class:`~livenight.simulate.NightScene` / :class:`~livenight.simulate.DvsParams` from ``SeedSequence([seed, i])``
    and simulates with a seed derived from the same pair, so a different ``seed`` gives a disjoint set (use one for
    validation). ``illuminance``, ``tau_ref_us`` (longer = longer event trails), ``ba_rate_hz`` (background noise)
    and ``hot_rate_hz`` are drawn log-uniformly. ``feature_scale = None`` keeps the simulator's automatic scale.
    ``cache_dir``: write the recordings there as RLED h5 files once and reuse them (else simulate in memory at start).
    """

    count: int = 8
    seconds: float = 3.3
    size: tuple[int, int] = (240, 180)
    seed: int = 0
    fps: float = 25.0
    cache_dir: str | None = None
    illuminance: Range = (0.02, 0.2)
    pan_px_per_s: Range = (10.0, 80.0)
    pan_angle_deg: Range = (-180.0, 180.0)
    n_objects: Range = (0, 5)
    object_speed_px_per_s: Range = (40.0, 250.0)
    headlight_emission: Range = (0.5, 3.0)
    texture_density: Range = (0.5, 2.0)
    contrast: Range = (0.3, 1.2)
    feature_scale: Range | None = None
    tau_ref_us: Range = (100.0, 800.0)
    threshold: Range = (0.15, 0.35)
    threshold_sigma: Range = (0.01, 0.05)
    refractory_us: Range = (50.0, 500.0)
    ba_rate_hz: Range = (0.05, 1.0)
    n_hot_pixels: Range = (0, 8)
    hot_rate_hz: Range = (20.0, 200.0)

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"synthetic.count must be an integer >= 0 (got {self.count!r})")
        if not (isinstance(self.seconds, (int, float)) and self.seconds > 0):
            raise ValueError(f"synthetic.seconds must be > 0 (got {self.seconds!r})")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"synthetic.seed must be an integer >= 0 (got {self.seed!r})")
        for name in _SYN_RANGES:
            v = getattr(self, name)
            if v is not None or name != "feature_scale":
                object.__setattr__(self, name, _range(name, v, name in _SYN_INT))
        for name in _SYN_LOG:
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"synthetic.{name} is drawn log-uniformly: its range must be > 0 "
                                 f"(got {getattr(self, name)!r})")
        object.__setattr__(self, "size", check_sensor_size(self.size, "synthetic.size"))


@dataclass(frozen=True)
class DataConfig:
    """Training data: RLED ``.h5`` files, globs, folders of them, prepared memmap folders, and/or simulated data."""

    files: tuple[str, ...] = ()
    synthetic: SyntheticConfig | None = None


@dataclass(frozen=True)
class ValConfig:
    """Held-out data and how it is scored: non-overlapping sequences of ``sequence_length`` windows from a zero
    state (shorter recordings give one shorter sequence), centre crop of ``crop`` pixels (``None``: the training crop;
    ``0``: the full frame), at most ``max_sequences`` sequences (0 = all)."""

    files: tuple[str, ...] = ()
    synthetic: SyntheticConfig | None = None
    sequence_length: int = 40
    max_sequences: int = 0
    crop: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.files) or (self.synthetic is not None and self.synthetic.count > 0)


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (a term with weight 0 is off). Each term is averaged over the windows of a sequence.

    ``lpips``: LPIPS VGG v0.1 on the raw prediction (the official loss), used only when the ``lpips`` package and its
    VGG weights are on disk (nothing is downloaded). ``ssim``: ``1 − SSIM`` (Gaussian 11×11, σ 1.5). ``temporal``:
    Lai et al.'s short-term temporal consistency with ``exp(−temporal_alpha·Δ²)`` visibility from warped ground truth,
    from window ``temporal_start`` on; used only where the data carries optical flow.
    """

    l1: float = 0.0
    ssim: float = 0.0
    lpips: float = 1.0
    temporal: float = 0.0
    temporal_alpha: float = 50.0
    temporal_start: int = 1

    def __post_init__(self) -> None:
        for name in ("l1", "ssim", "lpips", "temporal", "temporal_alpha"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"losses.{name} must be a number >= 0 (got {v!r})")


@dataclass(frozen=True)
class LogConfig:
    """CSV (always, ``out_dir/train.csv``, a row every ``every`` steps), TensorBoard when importable, a tqdm bar."""

    every: int = 1
    tensorboard: bool = True
    progress: bool = True


_MODEL_KEYS = tuple(k for k in NERNetConfig.__dataclass_fields__ if k not in ("sensor_size", "arch"))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; load it with :func:`load_config` (TOML or JSON).

    ``model`` holds the architecture at the crop size (``sensor_size = (crop, crop)``). ``bptt`` = 0 back-propagates
    through the whole sequence, ``k`` > 0 in chunks of ``k`` windows (state detached between chunks).
    ``threads`` > 0 sets torch's intra-op CPU threads (on a shared CPU, fewer threads than cores avoids OpenMP
    spin-wait stalls). ``checkpoint_letc`` recomputes a trainable LETC MLP in the backward pass instead of keeping
    its per-event activations (same gradients; at ~12k events per window they take ~3 GB per 40-window sequence).
    ``grad_clip`` = 0 disables clipping. ``amp`` applies on CUDA only. ``checkpoint_every`` / ``val_every`` = 0: only
    at the end.
    """

    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)
    model: NERNetConfig = field(default_factory=lambda: NERNetConfig(sensor_size=(160, 160)))
    losses: LossConfig = field(default_factory=LossConfig)
    log: LogConfig = field(default_factory=LogConfig)
    letc: str | None = None
    freeze_letc: bool = True
    init: str | None = None
    sequence_length: int = 40
    crop: int = 160
    flips: bool = True
    batch: int = 1
    steps: int = 1000
    lr: float = 1e-4
    amsgrad: bool = True
    weight_decay: float = 0.0
    schedule: Schedule = "constant"
    warmup_steps: int = 0
    min_lr: float = 0.0
    lr_step_size: int = 1000
    lr_gamma: float = 0.5
    grad_clip: float = 0.0
    bptt: int = 0
    checkpoint_letc: bool = True
    amp: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    device: str = "auto"
    threads: int = 0
    num_workers: int = 0
    checkpoint_every: int = 500
    val_every: int = 500
    out_dir: str = "runs/train"
    seed: int = 123

    def __post_init__(self) -> None:
        ints = {"sequence_length": 1, "crop": 1, "batch": 1, "steps": 0, "warmup_steps": 0, "lr_step_size": 1,
                "bptt": 0, "threads": 0, "num_workers": 0, "checkpoint_every": 0, "val_every": 0, "seed": 0}
        for name, low in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low} (got {v!r})")
        for name in ("lr", "lr_gamma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a number > 0 (got {v!r})")
        for name in ("weight_decay", "min_lr", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0 (got {v!r})")
        if self.schedule not in ("constant", "cosine", "step"):
            raise ValueError(f"schedule must be 'constant', 'cosine' or 'step' (got {self.schedule!r})")
        if self.amp_dtype not in ("bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be 'bfloat16' or 'float16' (got {self.amp_dtype!r})")
        if self.model.sensor_size != (self.crop, self.crop):
            object.__setattr__(self, "model", replace(self.model, sensor_size=(self.crop, self.crop)))
        if self.val.crop is not None and (not isinstance(self.val.crop, int) or self.val.crop < 0):
            raise ValueError(f"val.crop must be an integer >= 0 (got {self.val.crop!r})")

    # ------------------------------------------------------------------------------------------- dict I/O
    def to_dict(self) -> dict:
        """Plain JSON types (lists, not tuples): stored in checkpoints and ``out_dir/config.json``."""

        def plain(v):
            if dataclasses.is_dataclass(v):
                return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v

        d = plain(self)
        d["model"] = {k: plain(getattr(self.model, k)) for k in _MODEL_KEYS}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from the nested dict of a TOML / JSON file; unknown keys are errors (they are usually typos)."""
        d = dict(d)
        kw: dict[str, Any] = {}
        if "data" in d:
            kw["data"] = _data_from(d.pop("data"), DataConfig, "data")
        if "val" in d:
            kw["val"] = _data_from(d.pop("val"), ValConfig, "val")
        if "losses" in d:
            kw["losses"] = _simple_from(d.pop("losses"), LossConfig, "losses")
        if "log" in d:
            kw["log"] = _simple_from(d.pop("log"), LogConfig, "log")
        model = dict(d.pop("model", {}))
        unknown = sorted(set(model) - set(_MODEL_KEYS))
        if unknown:
            raise ValueError(f"unknown [model] keys {unknown} (known: {', '.join(_MODEL_KEYS)})")
        crop = d.get("crop", cls.__dataclass_fields__["crop"].default)
        try:
            kw["model"] = NERNetConfig.from_dict({**model, "sensor_size": (crop, crop)})
        except (TypeError, ValueError) as e:
            raise ValueError(f"[model]: {e}") from None
        names = {f.name for f in dataclasses.fields(cls)} - {"data", "val", "losses", "log", "model"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown} (known: {', '.join(sorted(names))})")
        return cls(**kw, **d)


def _simple_from(d: Any, cls, where: str):
    if not isinstance(d, Mapping):
        raise ValueError(f"[{where}] must be a table (got {d!r})")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown [{where}] keys {unknown} (known: {', '.join(sorted(names))})")
    return cls(**d)


def _data_from(d: Any, cls, where: str):
    if not isinstance(d, Mapping):
        raise ValueError(f"[{where}] must be a table (got {d!r})")
    d = dict(d)
    files = d.pop("files", ())
    files = (files,) if isinstance(files, str) else tuple(str(f) for f in files)
    syn = d.pop("synthetic", None)
    syn = None if syn is None else _simple_from(syn, SyntheticConfig, f"{where}.synthetic")
    rest = _simple_from(d, cls, where) if d else cls()
    return replace(rest, files=files, synthetic=syn)


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ValueError(f"override {key!r}: {p!r} is not a table")
    d[parts[-1]] = value


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> TrainConfig:
    """Read a TOML (``.toml``) or JSON config and apply overrides.

    Args:
        path: the config file.
        overrides: ``{"steps": 10, "model.base_channels": 8}`` or ``["steps=10", "losses.l1=1.0"]`` (values parsed as
            TOML, else kept as strings).
    """
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"{path}: no such config file")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({e})") from None
    if overrides:
        items = overrides.items() if isinstance(overrides, Mapping) else []
        if not isinstance(overrides, Mapping):
            for o in overrides:
                if "=" not in o:
                    raise ValueError(f"override {o!r} must look like key=value")
                k, v = o.split("=", 1)
                items.append((k.strip(), _parse_value(v.strip())))
        for k, v in items:
            _set_dotted(raw, k, v)
    try:
        return TrainConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


# ================================================================================================ recordings


class _Recording:
    """Shared window logic. Subclasses set ``name``, ``sensor_size``, ``event_indices``, ``num_images``."""

    name: str
    sensor_size: tuple[int, int]
    event_indices: np.ndarray
    num_images: int
    has_flow: bool = False

    @property
    def num_windows(self) -> int:
        """Usable windows: one per image except the last (the official ``num_imgs − 1``)."""
        return max(0, min(self.num_images, len(self.event_indices)) - 1)

    def window_events(self, i: int) -> np.ndarray:
        a, b = (int(v) for v in self.event_indices[i])
        return self.events(a, b)

    def events(self, a: int, b: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def frame(self, i: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def flow(self, i: int) -> np.ndarray:
        raise SourceError(f"{self.name}: the recording has no optical flow")

    def _check_frame(self, img: np.ndarray, i: int) -> np.ndarray:
        w, h = self.sensor_size
        if img.shape != (h, w) or img.dtype != np.uint8:
            raise SourceError(f"{self.name}: image {i} is {img.dtype} {img.shape}, expected uint8 ({h}, {w})")
        return img


class H5Recording(_Recording):
    """An RLED h5 file, opened lazily (also in each DataLoader worker). Optical flow: ``flow/flowNNNNNNNNN`` [2,H,W]."""

    def __init__(self, path: str | os.PathLike) -> None:
        from .drivers.rled import RledFile

        self.path = Path(path)
        self.name = self.path.stem
        with RledFile(self.path) as f:
            if f.event_indices is None:
                raise SourceError(f"{self.path}: no 'event_indices' dataset; training windows come from it "
                                  "(RLED layout: [num_images, 2] event ranges around each image)")
            if f.num_images == 0:
                raise SourceError(f"{self.path}: no images; training needs ground-truth frames")
            self.sensor_size = tuple(f.sensor_size)
            self.event_indices = f.event_indices.copy()
            self.num_images = f.num_images
        import h5py

        with h5py.File(self.path, "r") as raw:
            self.has_flow = "flow" in raw and len(raw["flow"]) > 0
        self._f = None
        self._raw = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_f": None, "_raw": None}

    def _file(self):
        if self._f is None:
            from .drivers.rled import RledFile

            self._f = RledFile(self.path, sensor_size=self.sensor_size)
        return self._f

    def events(self, a: int, b: int) -> np.ndarray:
        return self._file().read_events(a, b)

    def frame(self, i: int) -> np.ndarray:
        return self._check_frame(self._file().image(i), i)

    def flow(self, i: int) -> np.ndarray:
        if self._raw is None:
            import h5py

            self._raw = h5py.File(self.path, "r")
        return np.asarray(self._raw["flow"][f"flow{i:09d}"][()], dtype=np.float32)

    def close(self) -> None:
        for h in (self._f, self._raw):
            if h is not None:
                h.close()
        self._f = self._raw = None


class MemmapRecording(_Recording):
    """A folder written by :func:`prepare` (or the official ``h5_to_memmap.py``), memory-mapped lazily.

    Reads ``t.npy`` (int64 µs, or the official float64 ``[N, 1]``), ``xy.npy`` int16 ``[N, 2]``, ``p.npy`` uint8
    (1 = ON), ``images.npy`` uint8 ``[n, H, W]`` (or ``[n, H, W, 1]``), ``event_indices.npy`` (or the official
    ``image_event_indices.npy``), optional ``flow.npy`` float32 ``[n, 2, H, W]`` and ``metadata.json``.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder)
        meta_path = self.path / "metadata.json"
        if not meta_path.is_file():
            raise SourceError(f"{self.path}: no metadata.json; not a prepared memmap folder (run livenight prepare)")
        self.metadata = json.loads(meta_path.read_text())
        self.name = self.path.name
        self._arrays: dict | None = None
        a = self._load()
        self.event_indices = np.asarray(a["idx"], dtype=np.int64)
        if self.event_indices.ndim != 2 or self.event_indices.shape[1] != 2:
            raise SourceError(f"{self.path}: event indices have shape {self.event_indices.shape}, expected (n, 2)")
        self.num_images, h, w = a["images"].shape[:3]
        self.sensor_size = (int(w), int(h))
        self.has_flow = a["flow"] is not None
        n = a["t"].shape[0]
        if a["xy"].shape[0] != n or a["p"].shape[0] != n:
            raise SourceError(f"{self.path}: t, xy and p have different lengths "
                              f"({n}, {a['xy'].shape[0]}, {a['p'].shape[0]})")
        if self.event_indices.size and (self.event_indices.min() < 0 or self.event_indices.max() > n):
            raise SourceError(f"{self.path}: event indices leave 0..{n}")

    def _load(self) -> dict:
        if self._arrays is None:
            def load(name: str, required: bool = True):
                p = self.path / name
                if not p.is_file():
                    if required:
                        raise SourceError(f"{self.path}: missing {name}")
                    return None
                return np.load(p, mmap_mode="r")

            t = load("t.npy")
            p = load("p.npy")
            images = load("images.npy")
            idx = load("event_indices.npy", required=False)
            self._arrays = {"t": t[:, 0] if t.ndim == 2 else t, "xy": load("xy.npy"),
                            "p": p[:, 0] if p.ndim == 2 else p,
                            "images": images[..., 0] if images.ndim == 4 else images,
                            "idx": idx if idx is not None else load("image_event_indices.npy"),
                            "flow": load("flow.npy", required=False)}
        return self._arrays

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}

    def events(self, a: int, b: int) -> np.ndarray:
        arr = self._load()
        t = np.asarray(arr["t"][a:b])
        ev = np.empty(t.shape[0], EVENT_DTYPE)
        ev["t"] = t if t.dtype.kind in "iu" else np.rint(t)
        xy = np.asarray(arr["xy"][a:b])
        ev["x"] = xy[:, 0]
        ev["y"] = xy[:, 1]
        ev["p"] = np.asarray(arr["p"][a:b]) > 0
        return ev

    def frame(self, i: int) -> np.ndarray:
        return self._check_frame(np.asarray(self._load()["images"][i]), i)

    def flow(self, i: int) -> np.ndarray:
        return np.asarray(self._load()["flow"][i], dtype=np.float32)


class ArrayRecording(_Recording):
    """An in-memory recording: time-sorted :data:`EVENT_DTYPE` events, uint8 ``[n, H, W]`` frames, event_indices.

    Example:
        >>> from livenight.simulate import simulate_night
        >>> rec = ArrayRecording.from_sim(simulate_night(0.2, (64, 48), seed=1))   # doctest: +SKIP
    """

    def __init__(self, events: np.ndarray, frames: np.ndarray, event_indices: np.ndarray, name: str = "memory",
                 flow: np.ndarray | None = None) -> None:
        if events.dtype != EVENT_DTYPE:
            raise SourceError(f"{name}: events must be EVENT_DTYPE (got {events.dtype})")
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise SourceError(f"{name}: frames must be uint8 [n, H, W] (got {frames.dtype} {frames.shape})")
        self.name = name
        self._events = events
        self._frames = frames
        self._flow = flow
        self.has_flow = flow is not None
        self.event_indices = np.asarray(event_indices, dtype=np.int64).reshape(-1, 2)
        self.num_images = frames.shape[0]
        self.sensor_size = (frames.shape[2], frames.shape[1])

    @classmethod
    def from_sim(cls, sim, name: str = "sim") -> "ArrayRecording":
        return cls(sim.events, sim.frames, sim.event_indices, name)

    def events(self, a: int, b: int) -> np.ndarray:
        return self._events[a:b]

    def frame(self, i: int) -> np.ndarray:
        return self._check_frame(self._frames[i], i)

    def flow(self, i: int) -> np.ndarray:
        if self._flow is None:
            return super().flow(i)
        return np.asarray(self._flow[i], dtype=np.float32)


Recording = H5Recording | MemmapRecording | ArrayRecording

_GLOB_CHARS = set("*?[")


def _expand(entry: str) -> list[Path]:
    p = Path(entry).expanduser()
    if _GLOB_CHARS & set(entry):
        hits = sorted(Path(h) for h in glob.glob(str(p), recursive=True))
        if not hits:
            raise SourceNotFoundError(f"data entry {entry!r} matches no file")
        return hits
    if not p.exists():
        raise SourceNotFoundError(f"data entry {entry!r}: no such file or folder")
    return [p]


def open_recordings(files: Sequence[str]) -> list[Recording]:
    """Open every data entry: an RLED ``.h5``/``.hdf5`` file, a glob, a prepared memmap folder, or a folder holding
    any of these (searched recursively; memmap folders are not searched further). An h5 file whose prepared folder
    is also found is used once, through the memmap."""
    out: list[Recording] = []
    for entry in files:
        for p in _expand(entry):
            if p.is_dir():
                if (p / "metadata.json").is_file():
                    out.append(MemmapRecording(p))
                    continue
                found = _scan_folder(p)
                if not found:
                    raise SourceNotFoundError(f"data entry {entry!r}: {p} holds no .h5 file and no prepared folder")
                out.extend(found)
            elif p.suffix.lower() in (".h5", ".hdf5"):
                out.append(H5Recording(p))
            else:
                raise SourceError(f"data entry {entry!r}: {p} is neither an RLED .h5 file nor a prepared folder")
    # an h5 file and its prepared copy (prepare writes into DATA_DIR/memmap by default) count once: the memmap
    prepared = {m.metadata.get("source") for m in out if isinstance(m, MemmapRecording)}
    return [r for r in out if not (isinstance(r, H5Recording) and str(r.path.resolve()) in prepared)]


def _scan_folder(root: Path) -> list[Recording]:
    found: list[Recording] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        if "metadata.json" in filenames and d != root:
            found.append(MemmapRecording(d))
            dirnames[:] = []
            continue
        found.extend(H5Recording(d / f) for f in sorted(filenames) if f.lower().endswith((".h5", ".hdf5")))
    return found


# ================================================================================================ synthetic data


def synthetic_params(spec: SyntheticConfig, i: int):
    """``(sim_seed, NightScene, DvsParams)`` of synthetic recording ``i`` (deterministic in ``spec.seed``, ``i``)."""
    from .simulate import DvsParams, NightScene

    ss = np.random.SeedSequence([int(spec.seed), int(i)])
    rng = np.random.default_rng(ss)
    sim_seed = int(ss.generate_state(1)[0])

    def draw(name: str):
        lo, hi = getattr(spec, name)
        if name in _SYN_INT:
            return int(rng.integers(lo, hi + 1))
        if name in _SYN_LOG:
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return float(rng.uniform(lo, hi))

    v = {name: draw(name) for name in _SYN_RANGES if name != "feature_scale"}
    speed = sorted(float(rng.uniform(*spec.object_speed_px_per_s)) for _ in range(2))
    scale = None if spec.feature_scale is None else float(rng.uniform(*spec.feature_scale))
    scene = NightScene(pan_px_per_s=v["pan_px_per_s"], pan_angle_deg=v["pan_angle_deg"], n_objects=v["n_objects"],
                       object_speed_px_per_s=(speed[0], speed[1]), headlight_emission=v["headlight_emission"],
                       feature_scale=scale, texture_density=v["texture_density"], contrast=v["contrast"])
    th_on, th_off = (float(rng.uniform(*spec.threshold)) for _ in range(2))
    dvs = DvsParams(threshold_on=th_on, threshold_off=th_off, threshold_sigma=v["threshold_sigma"],
                    refractory_us=v["refractory_us"], illuminance=v["illuminance"], tau_ref_us=v["tau_ref_us"],
                    ba_rate_hz=v["ba_rate_hz"], n_hot_pixels=v["n_hot_pixels"], hot_rate_hz=v["hot_rate_hz"])
    return sim_seed, scene, dvs


def _synthetic_key(spec: SyntheticConfig) -> str:
    from . import __version__

    d = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in ("count", "cache_dir")}
    blob = json.dumps({"spec": d, "version": __version__}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def synthetic_recordings(spec: SyntheticConfig, *, write: bool = True, barrier=None, say=None,
                         progress: bool = False) -> list[Recording]:
    """Simulate ``spec.count`` recordings: in memory, or once into ``spec.cache_dir`` as RLED files (reused later).

    With a cache and several processes, only the one with ``write=True`` simulates; ``barrier()`` is called before
    the files are opened.
    """
    from .simulate import simulate_night, write_night

    if spec.count == 0:
        return []
    indices = range(spec.count)
    if spec.cache_dir is None:
        if say:
            say(f"simulating {spec.count} synthetic night recording(s) of {spec.seconds} s at "
                f"{spec.size[0]}x{spec.size[1]} in memory")
        out = []
        for i in _bar(indices, progress, "simulating"):
            sim_seed, scene, dvs = synthetic_params(spec, i)
            sim = simulate_night(spec.seconds, spec.size, seed=sim_seed, fps=spec.fps, scene=scene, dvs=dvs)
            out.append(ArrayRecording.from_sim(sim, name=f"synthetic-s{spec.seed}-{i:04d}"))
        return out
    cache = Path(spec.cache_dir).expanduser()
    key = _synthetic_key(spec)
    paths = [cache / f"night-{key}-{i:04d}.h5" for i in indices]
    if write:
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            cache.mkdir(parents=True, exist_ok=True)
            if say:
                say(f"simulating {len(missing)} synthetic night recording(s) into {cache}")
            for i in _bar(missing, progress, "simulating"):
                sim_seed, scene, dvs = synthetic_params(spec, i)
                tmp = paths[i].with_suffix(f".partial{os.getpid()}.h5")
                write_night(tmp, spec.seconds, spec.size, seed=sim_seed, fps=spec.fps, scene=scene, dvs=dvs)
                os.replace(tmp, paths[i])
    if barrier is not None:
        barrier()
    return [H5Recording(p) for p in paths]


def _bar(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


# ================================================================================================ augmentation


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
    """``(x, y, t, p)`` as the LETC quantisation takes them: int64 coordinates, float32 times
    (:func:`~livenight.letc.official_times`), p = ±1 float32. An empty window becomes the official dummy event
    ``(0, 0, 0, ON)``, which quantises to an all-zero grid."""
    if x.size == 0:
        return (np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.float32), np.ones(1, np.float32))
    return x, y, official_times(t_us), p.astype(np.float32) * 2 - 1


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
    """

    def __init__(self, recordings: Sequence[Recording], sequence_length: int, crop: int | None = None,
                 flips: bool = False, *, allow_short: bool = False, max_sequences: int = 0) -> None:
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
            events.append(model_inputs(*aug.events(rec.window_events(i))))
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


# ================================================================================================ losses


def _gaussian(size: int, sigma: float, device, dtype) -> Tensor:
    r = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of two ``[B, C, H, W]`` batches (differentiable): Gaussian window, valid region only.

    Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=...)`` (both average the window-valid interior). A window larger than the image shrinks to fit.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two equal [B, C, H, W] tensors (got {tuple(a.shape)} and {tuple(b.shape)})")
    a, b = a.float(), b.float()
    c = a.shape[1]
    size = min(window, a.shape[2], a.shape[3])
    size -= 1 - size % 2
    k = _gaussian(size, sigma, a.device, a.dtype).expand(c, 1, size, size)

    def filt(x: Tensor) -> Tensor:
        return F.conv2d(x, k, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean()


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


class LossTerms:
    """The configured loss terms (unweighted values per window) and their weights; unusable terms are dropped with
    a message."""

    def __init__(self, cfg: LossConfig, device: torch.device, has_flow: bool, say) -> None:
        self.cfg = cfg
        self.weights = {k: float(getattr(cfg, k)) for k in ("l1", "ssim", "lpips", "temporal") if getattr(cfg, k) > 0}
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
               flow: Tensor | None) -> dict[str, Tensor]:
        """Unweighted terms for window ``k`` of a sequence (out, gt: ``[B, 1, h, w]``)."""
        terms: dict[str, Tensor] = {}
        out = out.float()
        if "l1" in self.weights:
            terms["l1"] = (out - gt).abs().mean()
        if "ssim" in self.weights:
            terms["ssim"] = 1.0 - ssim(out, gt)
        if "lpips" in self.weights:  # pragma: no cover - needs lpips
            terms["lpips"] = self._lpips(out.expand(-1, 3, -1, -1), gt.expand(-1, 3, -1, -1), normalize=True).mean()
        if ("temporal" in self.weights and flow is not None and prev_out is not None
                and k >= self.cfg.temporal_start):
            with torch.no_grad():
                visible = torch.exp(-self.cfg.temporal_alpha * (gt - warp(prev_gt, flow)) ** 2)
            terms["temporal"] = (visible * (out - warp(prev_out.float(), flow)).abs()).mean()
        return terms


# ================================================================================================ model and steps


class SequenceModel(nn.Module):
    """A chunk of recurrent steps in one call: LETC quantisation of each window, then NER-Net.

    ``forward(windows, state)``: ``windows[k][b] = (x, y, t, p)`` tensors of batch element ``b`` at step ``k``;
    returns ``(images [K, B, 1, h, w] cropped to the sensor size, state)``.
    """

    def __init__(self, net: NERNet, checkpoint_letc: bool = False) -> None:
        super().__init__()
        self.net = net
        self.checkpoint_letc = checkpoint_letc

    def forward(self, windows: list, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        w, h = self.net.cfg.sensor_size
        left, _, top, _ = self.net.cfg.padding()
        quant = self.net.representation.quantization_layer
        quant_grad = torch.is_grad_enabled() and any(p.requires_grad for p in quant.parameters())
        outs = []
        for win in windows:
            dev = state[0].device.type
            with torch.autocast(device_type=dev, enabled=False), torch.set_grad_enabled(quant_grad):
                if quant_grad and self.checkpoint_letc:  # recompute the per-event MLP in backward: far less memory
                    grid = torch.cat([checkpoint(self.net.quantize, *ev, use_reentrant=False) for ev in win])
                else:
                    grid = torch.cat([self.net.quantize(*ev) for ev in win])
            img, state = self.net(grid, state)
            outs.append(img[:, :, top:top + h, left:left + w])
        return torch.stack(outs), state


def build_model(cfg: TrainConfig, say=lambda m: None) -> NERNet:
    """The network at the crop size, seeded, with ``init`` weights and ``letc`` loaded (and frozen) as configured."""
    torch.manual_seed(cfg.seed)
    net = NERNet(cfg.model)
    if cfg.init:
        src = load_model(cfg.init, cfg.model.sensor_size)
        if src.cfg != net.cfg:
            raise ValueError(f"init {cfg.init}: its architecture {src.cfg.to_dict()} differs from [model] "
                             f"{net.cfg.to_dict()}")
        net.load_state_dict(src.state_dict())
    if cfg.letc:
        load_letc(net, cfg.letc, freeze=cfg.freeze_letc)
    elif cfg.freeze_letc:
        say("freeze_letc ignored: no 'letc' weights given, so LETC starts from random weights and is trained")
    return net


def _cuda_rng() -> list:
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


class Trainer:
    """Model, optimiser, losses and one training step; no data loading, logging or files.

    Example:
        >>> trainer = Trainer(cfg)                         # doctest: +SKIP
        >>> stats = trainer.train_step([dataset[(0, 1)]])   # doctest: +SKIP
    """

    def __init__(self, cfg: TrainConfig, device: torch.device | str = "cpu", *, has_flow: bool = False,
                 rank: int = 0, world_size: int = 1, say=lambda m: None) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.world_size = world_size
        self.net = build_model(cfg, say).to(self.device)
        self.seq_model = SequenceModel(self.net, checkpoint_letc=cfg.checkpoint_letc)
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.module: nn.Module = DistributedDataParallel(self.seq_model, device_ids=ids)
        else:
            self.module = self.seq_model
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("nothing to train: every parameter is frozen")
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, amsgrad=cfg.amsgrad, weight_decay=cfg.weight_decay)
        self.losses = LossTerms(cfg.losses, self.device, has_flow, say)
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        if cfg.amp and not self.amp:
            say("amp ignored: mixed precision is used on CUDA only")
        self.amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.step = 0
        self.skipped_steps = 0

    def lr_at(self, step: int) -> float:
        """Learning rate of (0-based) step ``step``: linear warm-up, then constant / cosine / step decay."""
        c = self.cfg
        if c.warmup_steps and step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        s = step - c.warmup_steps
        if c.schedule == "cosine":
            span = max(1, c.steps - c.warmup_steps)
            return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * min(1.0, s / span)))
        if c.schedule == "step":
            return c.lr * c.lr_gamma ** (s // c.lr_step_size)
        return c.lr

    def _to_device(self, items: Sequence[SequenceItem]):
        dev = self.device
        L = len(items[0].events)
        if any(len(it.events) != L for it in items):
            raise ValueError("all sequences of a batch must have the same length")
        windows = [[tuple(torch.from_numpy(np.ascontiguousarray(a)).to(dev, non_blocking=True) for a in it.events[k])
                    for it in items] for k in range(L)]
        gt = torch.from_numpy(np.stack([it.frames for it in items], axis=1)).to(dev).float().div_(255.0)
        gt = gt.unsqueeze(2)  # [L, B, 1, h, w]
        flow = None
        if all(it.flow is not None for it in items):
            flow = torch.from_numpy(np.stack([it.flow for it in items], axis=1)).to(dev)  # [L, B, 2, h, w]
        return windows, gt, flow

    def train_step(self, items: Sequence[SequenceItem]) -> dict[str, float]:
        """Run one optimiser step on a batch of sequences; returns the loss (total and per term), lr and grad norm."""
        lr = self.lr_at(self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        windows, gt, flow = self._to_device(items)
        L, B = gt.shape[0], gt.shape[1]
        chunk = self.cfg.bptt or L
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        state = self.net.initial_state(B, device=self.device)
        totals = {name: torch.zeros((), device=self.device) for name in self.losses.names}
        total = torch.zeros((), device=self.device)
        prev_out = None
        for c0 in range(0, L, chunk):
            c1 = min(L, c0 + chunk)
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                outs, state = self.module(windows[c0:c1], state)
            loss = torch.zeros((), device=self.device)  # losses in float32, outside autocast (SSIM variances)
            for j, k in enumerate(range(c0, c1)):
                terms = self.losses.window(k, outs[j], gt[k], prev_out, gt[k - 1] if k else None,
                                           None if flow is None else flow[k])
                prev_out = outs[j]
                for name, v in terms.items():
                    loss = loss + self.losses.weights[name] * v / L
                    totals[name] += v.detach().float() / L
            self.scaler.scale(loss).backward()
            total += loss.detach()
            state = tuple(s.detach() for s in state)
            prev_out = prev_out.detach()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if math.isfinite(grad_norm) or self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # GradScaler skips non-finite steps itself
        else:
            self.skipped_steps += 1
        self.scaler.update()
        self.step += 1
        names = ["loss", *totals]
        vals = torch.stack([total, *totals.values()]).double()
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(vals)
            vals /= self.world_size
        return {**dict(zip(names, vals.tolist())), "lr": lr, "grad_norm": grad_norm}

    # ------------------------------------------------------------------------------------------- checkpoints
    def save(self, path: str | os.PathLike) -> None:
        """livenight checkpoint + training state, written atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_model(self.net, tmp, step=self.step, optimizer=self.optimizer.state_dict(),
                   train_config=self.cfg.to_dict(), scaler=self.scaler.state_dict(),
                   rng={"torch": torch.get_rng_state(), "cuda": _cuda_rng()}, world_size=self.world_size,
                   skipped_steps=self.skipped_steps)
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike) -> int:
        """Restore weights, optimiser, scaler, step and RNG from a checkpoint written by :meth:`save`."""
        ck = read_checkpoint(path)
        if "optimizer" not in ck or "step" not in ck:
            raise SourceError(f"{path}: not a livenight training checkpoint (no 'step'/'optimizer'); to start from "
                              "its weights use 'init' in the config instead of --resume")
        own = {k: v for k, v in self.cfg.model.to_dict().items() if k != "sensor_size"}
        theirs = dict(ck.get("model", {}))
        if any(own.get(k) != theirs.get(k) for k in own):
            raise ValueError(f"{path}: checkpoint architecture {theirs} differs from the config's {own}")
        self.net.load_state_dict(ck["state_dict"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        rng = ck.get("rng") or {}
        if isinstance(rng.get("torch"), Tensor):
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(ck["step"])
        self.skipped_steps = int(ck.get("skipped_steps", 0))
        return self.step


# ================================================================================================ validation


@torch.no_grad()
def evaluate(net: NERNet, dataset: SequenceDataset, device: torch.device | str = "cpu") -> dict[str, float]:
    """MSE and SSIM of every window of every sequence, each sequence from a zero state.

    Predictions go through the inference post-processing (clip to [0, 1], ×255, truncation to uint8) and are scored
    with :class:`~livenight.eval.FrameScorer` (scikit-image SSIM) when scikit-image is installed, else with
    :func:`ssim` here. Frames of another size than ``net``'s get a copy of the network at their size.
    """
    device = torch.device(device)
    scorer = None
    if has("skimage"):
        from .eval import FrameScorer, SequenceScores

        scorer, scores = FrameScorer(use_lpips=False), SequenceScores("val")
    mse: list[float] = []
    sims: list[float] = []
    nets: dict[tuple[int, int], NERNet] = {tuple(net.cfg.sensor_size): net}
    was_training = net.training
    net.eval()
    try:
        for k in range(len(dataset)):
            item = dataset[k]
            size = (item.frames.shape[2], item.frames.shape[1])
            if size not in nets:
                m = NERNet(replace(net.cfg, sensor_size=size)).to(device)
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


# ================================================================================================ the run


class _Log:
    """CSV rows (rank 0; appended, so a resumed run continues the same file) and TensorBoard scalars."""

    FIELDS = ["step", "loss", "l1", "ssim", "lpips", "temporal", "lr", "grad_norm", "seconds", "elapsed_s",
              "val_mse", "val_ssim"]

    def __init__(self, out_dir: Path, tensorboard: bool, say) -> None:
        self.path = out_dir / "train.csv"
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=self.FIELDS, extrasaction="ignore")
        if new:
            self._w.writeheader()
        self._tb = None
        if tensorboard:
            if has("tensorboard"):
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out_dir / "tensorboard"))
            else:
                say("TensorBoard logging skipped: the 'tensorboard' package is not installed (CSV only)")

    def write(self, row: dict) -> None:
        self._w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._f.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and v == v:
                    self._tb.add_scalar(f"{'val' if k.startswith('val_') else 'train'}/{k}", v, row["step"])

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()


def _select_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(want)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


@dataclass
class TrainResult:
    """What :func:`train` returns; :func:`run_train` gives :meth:`summary`."""

    step: int
    start_step: int
    out_dir: Path
    checkpoint: Path | None
    csv: Path | None
    losses: list[float]
    val: dict[str, float]
    seconds_per_step: float
    notes: list[str]
    rank: int
    world_size: int
    trainer: Trainer

    def summary(self) -> dict:
        return {"step": self.step, "start_step": self.start_step, "out_dir": str(self.out_dir),
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "csv": str(self.csv) if self.csv else None, "loss": self.losses[-1] if self.losses else None,
                "first_loss": self.losses[0] if self.losses else None, "val": self.val,
                "seconds_per_step": self.seconds_per_step, "notes": list(self.notes), "rank": self.rank,
                "world_size": self.world_size}


def train(cfg: TrainConfig, resume: str | os.PathLike | None = None) -> TrainResult:
    """Train as configured; under ``torchrun`` (``WORLD_SIZE`` > 1) with DDP. See :func:`run_train`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank))) if world > 1 else 0
    device = _select_device(cfg, local_rank)
    created_pg = False
    dist = None
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                                    timeout=datetime.timedelta(minutes=30))
            created_pg = True
    main = rank == 0
    notes: list[str] = []

    def say(msg: str) -> None:
        if msg in notes:
            return
        notes.append(msg)
        if main:
            from tqdm import tqdm

            tqdm.write(f"livenight train: {msg}", file=sys.stderr)

    barrier = (lambda: dist.barrier()) if world > 1 else None
    try:
        return _train(cfg, resume, device, rank, world, main, say, barrier, notes)
    finally:
        if created_pg:
            dist.destroy_process_group()


def _train(cfg, resume, device, rank, world, main, say, barrier, notes) -> TrainResult:
    progress = cfg.log.progress and main
    recs = open_recordings(cfg.data.files)
    if cfg.data.synthetic is not None:
        recs += synthetic_recordings(cfg.data.synthetic, write=main, barrier=barrier, say=say if main else None,
                                     progress=progress)
    if not recs:
        raise ValueError("no training data: set data.files and/or [data.synthetic]")
    ds = SequenceDataset(recs, cfg.sequence_length, cfg.crop, cfg.flips)
    if ds.skipped:
        say(f"{len(ds.skipped)} recording(s) shorter than {cfg.sequence_length} windows skipped: "
            f"{', '.join(ds.skipped[:5])}{' …' if len(ds.skipped) > 5 else ''}")
    if len(ds) == 0:
        raise ValueError(f"no training sequence: every recording has fewer than sequence_length="
                         f"{cfg.sequence_length} windows")
    val_ds = None
    if main and cfg.val.enabled:
        vrecs = open_recordings(cfg.val.files)
        if cfg.val.synthetic is not None:
            vrecs += synthetic_recordings(cfg.val.synthetic, write=True, say=say, progress=progress)
        val_crop = cfg.crop if cfg.val.crop is None else cfg.val.crop
        val_ds = SequenceDataset(vrecs, cfg.val.sequence_length, val_crop, allow_short=True,
                                 max_sequences=cfg.val.max_sequences)
    trainer = Trainer(cfg, device, has_flow=ds.has_flow, rank=rank, world_size=world, say=say)
    start = trainer.load(resume) if resume else 0
    if start >= cfg.steps:
        say(f"nothing to train: the checkpoint is at step {start} and steps = {cfg.steps} (raise 'steps')")
    out_dir = Path(cfg.out_dir).expanduser()
    ckpt_dir = out_dir / "checkpoints"
    log = None
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log = _Log(out_dir, cfg.log.tensorboard, say)
        say(f"{len(ds)} training sequence(s) of {cfg.sequence_length} windows from {len(recs)} recording(s), "
            f"crop {cfg.crop}, batch {cfg.batch}×{world} process(es), device {device}; steps {start}→{cfg.steps}"
            + (f"; {len(val_ds)} validation sequence(s)" if val_ds is not None else ""))
    sampler = StepBatchSampler(len(ds), cfg.batch, cfg.steps, start, cfg.seed, rank, world)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=_as_list, num_workers=cfg.num_workers,
                                         pin_memory=device.type == "cuda")
    losses: list[float] = []
    val: dict[str, float] = {}
    step_times: list[float] = []
    checkpoint = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        for items in loader:
            t0 = time.perf_counter()
            stats = trainer.train_step(items)
            dt = time.perf_counter() - t0
            step_times.append(dt)
            step = trainer.step
            losses.append(stats["loss"])
            last = step == cfg.steps
            row = {"step": step, **stats, "seconds": dt, "elapsed_s": time.perf_counter() - t_start}
            if val_ds is not None and len(val_ds) and ((cfg.val_every and step % cfg.val_every == 0) or last):
                val = evaluate(trainer.net, val_ds, device)
                row.update(val)
            if main and (step % cfg.log.every == 0 or last or "val_mse" in row):
                log.write(row)
            if main and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last):
                checkpoint = ckpt_dir / f"step-{step:08d}.pth"
                trainer.save(checkpoint)
                shutil.copyfile(checkpoint, out_dir / "last.pth")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", **({"val_ssim": f"{val['val_ssim']:.3f}"} if val else {}))
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    if trainer.skipped_steps:
        say(f"{trainer.skipped_steps} step(s) skipped because the gradient was not finite")
    if barrier is not None:
        barrier()
    timed = step_times[1:] or step_times  # the first step pays one-off costs (allocation, kernel selection)
    return TrainResult(step=trainer.step, start_step=start, out_dir=out_dir,
                       checkpoint=(out_dir / "last.pth") if main and checkpoint else None,
                       csv=log.path if log else None, losses=losses, val=val,
                       seconds_per_step=float(np.mean(timed)) if timed else float("nan"), notes=notes, rank=rank,
                       world_size=world, trainer=trainer)


def run_train(config_path: str | os.PathLike, resume: str | os.PathLike | None = None,
              overrides: Mapping[str, Any] | Sequence[str] | None = None) -> dict:
    """CLI entry: ``livenight train CONFIG [--resume CK]``. Returns a JSON-friendly summary.

    Args:
        config_path: TOML / JSON config (:class:`TrainConfig`).
        resume: a checkpoint written by a previous run (``out_dir/last.pth`` or ``checkpoints/step-*.pth``): weights,
            optimiser, step count and RNG continue from it; training runs up to ``steps``.
        overrides: config overrides (see :func:`load_config`).

    Returns:
        ``{"step", "start_step", "out_dir", "checkpoint", "csv", "loss", "first_loss", "val", "seconds_per_step",
        "notes", "rank", "world_size"}``.
    """
    return train(load_config(config_path, overrides), resume=resume).summary()


# ================================================================================================ prepare


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def prepare_file(h5_path: str | os.PathLike, dest: str | os.PathLike, chunk_events: int = 1 << 20) -> Path:
    """Convert one RLED h5 into a memmap folder (written to ``dest.partial`` and renamed when complete)."""
    import h5py

    from .drivers.rled import RledFile

    h5_path, dest = Path(h5_path), Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with RledFile(h5_path) as f:
        if f.event_indices is None:
            raise SourceError(f"{h5_path}: no 'event_indices' dataset; cannot define training windows")
        n, (w, h) = f.num_events, f.sensor_size
        t = np.lib.format.open_memmap(tmp / "t.npy", "w+", np.int64, (n,))
        xy = np.lib.format.open_memmap(tmp / "xy.npy", "w+", np.int16, (n, 2))
        p = np.lib.format.open_memmap(tmp / "p.npy", "w+", np.uint8, (n,))
        for a, ev in f.iter_chunks(chunk_events):
            b = a + ev.size
            t[a:b] = ev["t"]
            xy[a:b, 0] = ev["x"]
            xy[a:b, 1] = ev["y"]
            p[a:b] = ev["p"]
        for arr in (t, xy, p):
            arr.flush()
        del t, xy, p
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (f.num_images, h, w))
        for i in range(f.num_images):
            images[i] = f.image(i)
        images.flush()
        del images
        np.save(tmp / "timestamps.npy", f.image_timestamps_us())
        np.save(tmp / "event_indices.npy", f.event_indices.astype(np.int64))
        num_images = f.num_images
    with h5py.File(h5_path, "r") as raw:
        attrs = {k: _jsonable(v) for k, v in raw.attrs.items()}
        if "flow" in raw and len(raw["flow"]):
            flow = np.lib.format.open_memmap(tmp / "flow.npy", "w+", np.float32, (num_images, 2, h, w))
            for i in range(num_images):
                flow[i] = raw["flow"][f"flow{i:09d}"][()]
            flow.flush()
            del flow
    st = h5_path.stat()
    meta = {**attrs, "sensor_resolution": [h, w], "sensor_size": [w, h], "num_events": n, "num_images": num_images,
            "t_unit": "us", "livenight_memmap": 1, "source": str(h5_path.resolve()), "source_size": st.st_size,
            "source_mtime_ns": st.st_mtime_ns}
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _up_to_date(h5_path: Path, dest: Path) -> bool:
    try:
        meta = json.loads((dest / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    st = h5_path.stat()
    return meta.get("source_size") == st.st_size and meta.get("source_mtime_ns") == st.st_mtime_ns


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, overwrite: bool = False,
            progress: bool = True) -> dict:
    """Convert every RLED h5 under ``data_dir`` (recursively; or one file) into memory-mapped folders.

    Each ``DATA_DIR/a/b.h5`` becomes ``OUT/a/b/`` holding ``t.npy`` int64 µs ``[N]``, ``xy.npy`` int16 ``[N, 2]``,
    ``p.npy`` uint8 ``[N]`` (1 = ON), ``images.npy`` uint8 ``[n, H, W]``, ``timestamps.npy`` int64 µs ``[n]`` (exposure
    ends), ``event_indices.npy`` int64 ``[n, 2]``, ``flow.npy`` when the h5 has flow, and ``metadata.json`` (the h5
    attributes, ``sensor_resolution`` as ``[H, W]`` like the official converter, ``sensor_size`` as ``[W, H]``).
    Folders whose source is unchanged (size and mtime) are skipped. ``out_dir`` defaults to ``DATA_DIR/memmap``.

    Returns:
        ``{"out_dir", "prepared": [folders], "skipped": [folders]}``.
    """
    src = Path(data_dir).expanduser()
    if not src.exists():
        raise SourceNotFoundError(f"{src}: no such file or folder")
    root = src.parent if src.is_file() else src
    out = Path(out_dir).expanduser() if out_dir else root / "memmap"
    if src.is_file():
        files = [src]
    else:
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".h5", ".hdf5") and p.is_file()
                       and out.resolve() not in p.resolve().parents)
    if not files:
        raise SourceNotFoundError(f"{src}: no .h5 / .hdf5 file found")
    prepared, skipped = [], []
    for f in _bar(files, progress, "prepare"):
        dest = out / f.relative_to(root).with_suffix("")
        if not overwrite and _up_to_date(f, dest):
            skipped.append(str(dest))
            continue
        prepare_file(f, dest)
        prepared.append(str(dest))
    return {"out_dir": str(out), "prepared": prepared, "skipped": skipped}


def run_prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """CLI entry: ``livenight prepare DATA_DIR [--out DIR]``; see :func:`prepare`."""
    return prepare(data_dir, out_dir)
