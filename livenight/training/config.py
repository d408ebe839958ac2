"""Training configuration: frozen dataclasses read from TOML / JSON (unknown keys are errors: usually typos)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from ..errors import SourceNotFoundError
from ..events import check_sensor_size
from ..model.nernet import NERNetConfig

Range = tuple[float, float]
Schedule = Literal["constant", "cosine", "step"]


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


_NAT_RANGES = ("window_ms", "illuminance", "tau_ref_us", "threshold", "threshold_ratio", "threshold_sigma",
               "refractory_us", "ba_rate_hz", "n_hot_pixels", "hot_rate_hz", "shot_noise")
_NAT_LOG = {"illuminance", "tau_ref_us", "threshold", "ba_rate_hz", "hot_rate_hz"}
_NAT_INT = {"n_hot_pixels"}
#: default tone-curve exponent range of natural recordings (log-uniform); a cache key leaves it out at this value,
#: so caches simulated before the setting existed stay valid
NATURAL_GAMMA = (0.6, 1.6)


@dataclass(frozen=True)
class NaturalConfig:
    """Natural-statistics simulated recordings (:func:`livenight.simulate.simulate_natural`): photographs, dead
    leaves and 1/f textures under camera ego-motion, or a fixed camera with moving objects; contiguous windows.

    Recording ``i`` draws its scene (:func:`~livenight.simulate.random_natural_scene`, a fixed camera with
    probability ``static_fraction``) and its sensor from ``SeedSequence([seed, i])``. Ranges are ``(min, max)``;
    ``illuminance``, ``tau_ref_us``, ``threshold`` (the ON threshold), ``ba_rate_hz`` and ``hot_rate_hz`` are drawn
    log-uniformly; the OFF threshold is the ON one times ``threshold_ratio``; ``threshold_sigma`` (per-pixel mismatch)
    is relative to the threshold. ``window_ms``: window length (frames at the window ends). ``gamma``: the scene's
    tone-curve exponent, log-uniform (reflectance ** gamma; ~2.2 decodes display-encoded photographs to the linear,
    dark-skewed irradiance a sensor and its APS frames see).
    """

    count: int = 0
    seconds: float = 2.0
    size: tuple[int, int] = (240, 180)
    seed: int = 0
    cache_dir: str | None = None
    static_fraction: float = 0.35
    max_speed_px_per_s: float = 400.0
    window_ms: Range = (40.0, 40.0)
    illuminance: Range = (0.01, 0.5)
    tau_ref_us: Range = (50.0, 1000.0)
    threshold: Range = (0.2, 1.5)
    threshold_ratio: Range = (0.7, 1.4)
    threshold_sigma: Range = (0.03, 0.15)
    refractory_us: Range = (0.0, 1000.0)
    ba_rate_hz: Range = (0.01, 1.0)
    n_hot_pixels: Range = (0, 10)
    hot_rate_hz: Range = (10.0, 300.0)
    shot_noise: Range = (0.0, 0.05)
    gamma: Range = NATURAL_GAMMA

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 0:
            raise ValueError(f"natural.count must be an integer >= 0 (got {self.count!r})")
        if not (isinstance(self.seconds, (int, float)) and self.seconds > 0):
            raise ValueError(f"natural.seconds must be > 0 (got {self.seconds!r})")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"natural.seed must be an integer >= 0 (got {self.seed!r})")
        if not 0 <= self.static_fraction <= 1:
            raise ValueError(f"natural.static_fraction must be in [0, 1] (got {self.static_fraction!r})")
        for name in _NAT_RANGES:
            object.__setattr__(self, name, _range(name, getattr(self, name), name in _NAT_INT))
        object.__setattr__(self, "gamma", _range("gamma", self.gamma, False))
        for name in _NAT_LOG | {"window_ms", "gamma"}:
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"natural.{name} must be > 0 (got {getattr(self, name)!r})")
        object.__setattr__(self, "size", check_sensor_size(self.size, "natural.size"))


@dataclass(frozen=True)
class DataConfig:
    """Training data: RLED ``.h5`` files, globs, folders of them, prepared memmap folders, and/or simulated data."""

    files: tuple[str, ...] = ()
    synthetic: SyntheticConfig | None = None
    natural: NaturalConfig | None = None


@dataclass(frozen=True)
class ValConfig:
    """Held-out data and how it is scored: non-overlapping sequences of ``sequence_length`` windows from a zero
    state (shorter recordings give one shorter sequence), centre crop of ``crop`` pixels (``None``: the training crop;
    ``0``: the full frame), at most ``max_sequences`` sequences (0 = all)."""

    files: tuple[str, ...] = ()
    synthetic: SyntheticConfig | None = None
    natural: NaturalConfig | None = None
    sequence_length: int = 40
    max_sequences: int = 0
    crop: int | None = None

    @property
    def enabled(self) -> bool:
        return (bool(self.files) or (self.synthetic is not None and self.synthetic.count > 0)
                or (self.natural is not None and self.natural.count > 0))


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (a term with weight 0 is off). Each term is averaged over the windows of a sequence.

    ``lpips``: LPIPS VGG v0.1 on the raw prediction (the official loss), used only when the ``lpips`` package and its
    VGG weights are on disk (nothing is downloaded). ``ssim``: ``1 − SSIM`` (Gaussian 11×11, σ 1.5). ``active``:
    ``1 − SSIM`` over the pixels where the ground truth changed by more than 8 grey levels since the previous frame,
    dilated 15×15 (what ``livenight eval`` scores on real recordings; from the second window on). ``norm_ssim`` /
    ``norm_active``: the same two SSIM terms on frames each mapped to [0, 1] by its own 1st–99th percentiles (what
    ``livenight eval`` and the viewer's auto display show): a faint blotch or trail on a flat background, cheap in
    absolute grey levels, is as visible there as the objects. ``change``: L1 between the frame-to-frame change of
    the output and of the ground truth (temporal consistency from the simulator's own frames, no flow needed: a
    static scene's output must not drift or flicker, an object's trail must go when the object does). ``temporal``:
    Lai et al.'s short-term temporal consistency with ``exp(−temporal_alpha·Δ²)`` visibility from warped ground truth,
    from window ``temporal_start`` on; used only where the data carries optical flow. ``unseen`` < 1 weighs the L1
    and SSIM terms down to ``unseen`` at pixels where no event has fired within ``seen_radius_px`` since the
    sequence started (a fixed camera's background, the first windows): what the events cannot show is not scored,
    so the mean image stops being the best answer there.
    """

    l1: float = 0.0
    ssim: float = 0.0
    active: float = 0.0
    lpips: float = 1.0
    temporal: float = 0.0
    norm_ssim: float = 0.0
    norm_active: float = 0.0
    change: float = 0.0
    temporal_alpha: float = 50.0
    temporal_start: int = 1
    unseen: float = 1.0
    seen_radius_px: int = 4

    def __post_init__(self) -> None:
        for name in ("l1", "ssim", "active", "lpips", "temporal", "norm_ssim", "norm_active", "change",
                     "temporal_alpha"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"losses.{name} must be a number >= 0 (got {v!r})")
        if not (isinstance(self.unseen, (int, float)) and 0 <= self.unseen <= 1):
            raise ValueError(f"losses.unseen must be a number in [0, 1] (got {self.unseen!r})")
        if not (isinstance(self.seen_radius_px, int) and 0 <= self.seen_radius_px <= 64):
            raise ValueError(f"losses.seen_radius_px must be an integer in 0..64 (got {self.seen_radius_px!r})")


@dataclass(frozen=True)
class LogConfig:
    """CSV (always, ``out_dir/train.csv``, a row every ``every`` steps), TensorBoard when importable, a tqdm bar."""

    every: int = 1
    tensorboard: bool = True
    progress: bool = True


_MODEL_KEYS = tuple(k for k in NERNetConfig.__dataclass_fields__ if k not in ("sensor_size", "arch"))


@dataclass(frozen=True)
class FamilyModelConfig:
    """``[model]`` of a family other than NER-Net: its options as given (the family checks them when it builds the
    network), at the crop size."""

    options: tuple = ()  # sorted (key, value) pairs
    sensor_size: tuple[int, int] = (160, 160)

    def to_dict(self) -> dict:
        return {**dict(self.options), "sensor_size": list(self.sensor_size)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; load it with :func:`load_config` (TOML or JSON).

    ``model`` holds the architecture at the crop size (``sensor_size = (crop, crop)``). ``bptt`` = 0 back-propagates
    through the whole sequence, ``k`` > 0 in chunks of ``k`` windows (state detached between chunks).
    ``threads`` > 0 sets torch's intra-op CPU threads (on a shared CPU, fewer threads than cores avoids OpenMP
    spin-wait stalls). ``checkpoint_letc`` recomputes a trainable LETC MLP in the backward pass instead of keeping
    its per-event activations (same gradients; at ~12k events per window they take ~3 GB per 40-window sequence).
    ``letc_table`` > 0: quantise through a ``letc_table``-entry table of the LETC MLP, interpolated per event (the
    inference approximation; far faster than the exact per-event MLP, still trains the MLP); 0: exact.
    ``letc_init = "voxel"`` starts a new LETC MLP as the triangle kernel of a voxel grid, ``max(0, 1 − |u|)``, so
    the network sees inputs of order one from the first step (random MLPs give ~0.05 and small models then learn to
    ignore the events). ``head_gain`` multiplies a new network's first convolution's initial weights: sparse event
    grids (~5 % of pixels non-zero) through default-initialised weights give pre-activations of ~0.1, and the
    network then shrinks them further and settles on predicting the mean image before it learns to read the events
    (ner-lite at 2e-4: the output's response to the events fell from 0.03 to 0.003 in 400 steps; with a gain of 8 it
    stayed at ~0.15).
    ``grad_clip`` = 0 disables clipping. ``ema_decay`` > 0 keeps an exponential moving average of the weights
    (``w_ema ← d·w_ema + (1−d)·w`` after every step): validation and checkpoints' ``state_dict`` use it (the raw
    weights travel as ``raw_state_dict`` for ``--resume``). With batches of a few short crops the weights of
    consecutive checkpoints score far apart on real recordings; the average is what a run learned, not its last
    batches. 0 = off. ``amp``: autocast on CUDA, and bfloat16 autocast on CPUs with AMX or
    AVX512-BF16 (the recurrent state is kept float32); ``channels_last`` stores the network that way (faster bf16
    convolutions on CPU). ``checkpoint_every`` / ``val_every`` = 0: only
    at the end.
    """

    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)
    family: str = "nernet"  # a registered model family (livenight.families); [model] holds its options
    model: NERNetConfig | FamilyModelConfig = field(default_factory=lambda: NERNetConfig(sensor_size=(160, 160)))
    losses: LossConfig = field(default_factory=LossConfig)
    log: LogConfig = field(default_factory=LogConfig)
    letc: str | None = None
    freeze_letc: bool = True
    letc_init: Literal["random", "voxel"] = "random"
    head_gain: float = 1.0
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
    ema_decay: float = 0.0
    bptt: int = 0
    checkpoint_letc: bool = True
    letc_table: int = 0
    amp: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = False
    device: str = "auto"
    threads: int = 0
    num_workers: int = 0
    checkpoint_every: int = 500
    val_every: int = 500
    out_dir: str = "runs/train"
    seed: int = 123

    def __post_init__(self) -> None:
        ints = {"sequence_length": 1, "crop": 1, "batch": 1, "steps": 0, "warmup_steps": 0, "lr_step_size": 1,
                "bptt": 0, "letc_table": 0, "threads": 0, "num_workers": 0, "checkpoint_every": 0, "val_every": 0, "seed": 0}
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
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must be a number in [0, 1) (got {self.ema_decay!r})")
        if self.schedule not in ("constant", "cosine", "step"):
            raise ValueError(f"schedule must be 'constant', 'cosine' or 'step' (got {self.schedule!r})")
        if not (isinstance(self.head_gain, (int, float)) and math.isfinite(self.head_gain) and self.head_gain > 0):
            raise ValueError(f"head_gain must be a number > 0 (got {self.head_gain!r})")
        if self.letc_init not in ("random", "voxel"):
            raise ValueError(f"letc_init must be 'random' or 'voxel' (got {self.letc_init!r})")
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
        if isinstance(self.model, FamilyModelConfig):
            d["model"] = {k: plain(v) for k, v in self.model.options}
        else:
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
        crop = d.get("crop", cls.__dataclass_fields__["crop"].default)
        family = d.get("family", "nernet")
        if family != "nernet":
            from .. import families

            families.get(family)  # an unknown family is an error naming the known ones
            kw["model"] = FamilyModelConfig(tuple(sorted(model.items())), (crop, crop))
        else:
            unknown = sorted(set(model) - set(_MODEL_KEYS))
            if unknown:
                raise ValueError(f"unknown [model] keys {unknown} (known: {', '.join(_MODEL_KEYS)})")
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
    nat = d.pop("natural", None)
    nat = None if nat is None else _simple_from(nat, NaturalConfig, f"{where}.natural")
    rest = _simple_from(d, cls, where) if d else cls()
    return replace(rest, files=files, synthetic=syn, natural=nat)


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
