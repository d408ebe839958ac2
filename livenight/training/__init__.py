"""Training NER-Net-family models on RLED recordings, prepared memory maps and simulated data.

Modules, in data-flow order: :mod:`.config` (the TOML config), :mod:`.recordings` (RLED / memmap / in-memory
recordings), :mod:`.synthetic` (simulated recordings), :mod:`.augment` (crops, flips, sequences, the sampler),
:mod:`.losses`, :mod:`.trainer` (model, one step, checkpoints), :mod:`.validation`, :mod:`.run` (a whole run) and
:mod:`.prepare` (h5 → memmap).

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
    >>> from livenight.training import run_train
    >>> summary = run_train("configs/ner-tiny.toml", overrides={"steps": 10})   # doctest: +SKIP
"""

from .augment import Augment, SequenceDataset, SequenceItem, StepBatchSampler, model_inputs
from .config import DataConfig, LogConfig, LossConfig, NaturalConfig, SyntheticConfig, TrainConfig, ValConfig, load_config
from .losses import LossTerms, lpips_status, ssim, warp
from .prepare import prepare, prepare_file, run_prepare
from .recordings import ArrayRecording, H5Recording, MemmapRecording, open_recordings
from .run import TrainResult, run_train, train
from .synthetic import natural_params, synthetic_params, synthetic_recordings
from .trainer import SequenceModel, Trainer, build_model
from .validation import evaluate

__all__ = ["TrainConfig", "DataConfig", "ValConfig", "SyntheticConfig", "NaturalConfig", "LossConfig", "LogConfig",
           "load_config", "Augment", "SequenceItem", "SequenceDataset", "StepBatchSampler", "H5Recording",
           "MemmapRecording", "ArrayRecording", "open_recordings", "synthetic_params", "natural_params",
           "synthetic_recordings", "model_inputs", "build_model", "Trainer", "TrainResult", "SequenceModel",
           "LossTerms", "lpips_status", "ssim", "warp", "evaluate", "train", "run_train", "prepare", "prepare_file",
           "run_prepare"]
