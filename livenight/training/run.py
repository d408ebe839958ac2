"""A training run: data, sampler, trainer, logging, checkpoints, validation; DDP under torchrun."""

from __future__ import annotations

import csv
import datetime
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._optional import has
from .augment import SequenceDataset, StepBatchSampler, _as_list
from .config import TrainConfig, load_config
from .recordings import open_recordings
from .synthetic import synthetic_recordings
from .trainer import Trainer
from .validation import evaluate


class _Log:
    """CSV rows (rank 0; appended, so a resumed run continues the same file) and TensorBoard scalars."""

    FIELDS = ["step", "loss", "l1", "ssim", "lpips", "temporal", "norm_ssim", "norm_active", "change", "lr", "grad_norm", "seconds", "elapsed_s",
              "val_mse", "val_ssim", "active"]

    def __init__(self, out_dir: Path, tensorboard: bool, say) -> None:
        self.path = out_dir / "train.csv"
        new = not self.path.is_file() or self.path.stat().st_size == 0
        fields = self.FIELDS
        if not new:  # a resumed run keeps the columns its file started with
            with open(self.path, newline="") as f:
                fields = next(csv.reader(f), None) or self.FIELDS
        self._f = open(self.path, "a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=fields, extrasaction="ignore")
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
    for spec in (cfg.data.synthetic, cfg.data.natural):
        if spec is not None:
            recs += synthetic_recordings(spec, write=main, barrier=barrier, say=say if main else None,
                                         progress=progress)
    if not recs:
        raise ValueError("no training data: set data.files and/or [data.synthetic]")
    from .. import families

    family = families.get(cfg.family)
    ds = SequenceDataset(recs, cfg.sequence_length, cfg.crop, cfg.flips, family=family)
    if ds.skipped:
        say(f"{len(ds.skipped)} recording(s) shorter than {cfg.sequence_length} windows skipped: "
            f"{', '.join(ds.skipped[:5])}{' …' if len(ds.skipped) > 5 else ''}")
    if len(ds) == 0:
        raise ValueError(f"no training sequence: every recording has fewer than sequence_length="
                         f"{cfg.sequence_length} windows")
    val_ds = None
    if main and cfg.val.enabled:
        vrecs = open_recordings(cfg.val.files)
        for spec in (cfg.val.synthetic, cfg.val.natural):
            if spec is not None:
                vrecs += synthetic_recordings(spec, write=True, say=say, progress=progress)
        val_crop = cfg.crop if cfg.val.crop is None else cfg.val.crop
        val_ds = SequenceDataset(vrecs, cfg.val.sequence_length, val_crop, allow_short=True,
                                 max_sequences=cfg.val.max_sequences, family=family)
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
                val = evaluate(trainer.averaged_net, val_ds, device)
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
