"""The model and one optimiser step: network construction, the unrolled sequence module, checkpoints."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import SourceError
from ..model.checkpoint import load_letc, read_checkpoint
from .augment import SequenceItem
from .config import TrainConfig
from .losses import LossTerms, seen_weights


class SequenceModel(nn.Module):
    """A chunk of recurrent steps in one call: each window's network input, then the network.

    ``forward(windows, state)``: ``windows[k][b]`` = the tensors of the family's ``training_events`` for batch
    element ``b`` at step ``k``; returns ``(images [K, B, 1, h, w] cropped to the sensor size, state)``. Networks
    with a trainable representation (NER-Net's LETC: ``quantize``) are differentiated through it, with the
    lookup-table and checkpointing options below; other families' inputs come from their ``training_input``.
    """

    def __init__(self, net: nn.Module, checkpoint_letc: bool = False, channels_last: bool = False,
                 letc_table: int = 0, family=None) -> None:
        super().__init__()
        from .. import families

        self.family = family or families.family_of(net)
        self.net = net
        self.checkpoint_letc = checkpoint_letc
        self.channels_last = channels_last
        self.letc_table = letc_table

    def _table_quantize(self, table: Tensor, x: Tensor, y: Tensor, t: Tensor, p: Tensor) -> Tensor:
        """LETC quantisation through a table of the MLP (``table[j] = MLP(u_j)``, u over [−(C−1), C−1]), linearly
        interpolated per event: the inference path's approximation (:class:`~livenight.letc.LetcTable`), and
        differentiable in the table, so the MLP still trains, at a few operations per event instead of ~5,000."""
        c = self.net.cfg.num_bins
        n = table.shape[0]

        def value(u: Tensor) -> Tensor:
            pos = ((u + (c - 1)) * ((n - 1) / (2 * (c - 1)))).clamp(0, n - 1)
            j = pos.floor().long().clamp_(max=n - 2)
            frac = pos - j
            return table[j] + frac * (table[j + 1] - table[j])

        return self.net.representation.quantization_layer.scatter(x, y, t, p, value)

    def forward(self, windows: list, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        if not hasattr(self.net, "quantize"):
            return self._forward_inputs(windows, state)
        w, h = self.net.cfg.sensor_size
        left, _, top, _ = self.net.cfg.padding()
        quant = self.net.representation.quantization_layer
        quant_grad = torch.is_grad_enabled() and any(p.requires_grad for p in quant.parameters())
        dev = state[0].device.type
        table = None
        if self.letc_table:
            c = self.net.cfg.num_bins
            with torch.autocast(device_type=dev, enabled=False), torch.set_grad_enabled(quant_grad):
                u = torch.linspace(-(c - 1), c - 1, self.letc_table, device=state[0].device)
                table = quant.value_layer(u)
        outs = []
        for win in windows:
            with torch.autocast(device_type=dev, enabled=False), torch.set_grad_enabled(quant_grad):
                if table is not None:
                    grid = torch.cat([self._table_quantize(table, *ev) for ev in win])
                elif quant_grad and self.checkpoint_letc:  # recompute the per-event MLP in backward: less memory
                    grid = torch.cat([checkpoint(self.net.quantize, *ev, use_reentrant=False) for ev in win])
                else:
                    grid = torch.cat([self.net.quantize(*ev) for ev in win])
            if self.channels_last:
                grid = grid.contiguous(memory_format=torch.channels_last)
            img, state = self.net(grid, state)
            if torch.is_autocast_enabled(state[0].device.type):
                state = tuple(t.float() for t in state)  # the recurrent state stays float32 under autocast
            outs.append(img[:, :, top:top + h, left:left + w])
        return torch.stack(outs), state

    def _forward_inputs(self, windows: list, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Families without a trainable representation: the family's input per window, then the network."""
        w, h = self.net.cfg.sensor_size
        left, _, top, _ = self.net.cfg.padding()
        outs = []
        for win in windows:
            x = torch.cat([self.family.training_input(self.net, ev) for ev in win])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            img, state = self.net(x, state)
            if torch.is_autocast_enabled(state[0].device.type):
                state = tuple(t.float() for t in state)
            outs.append(img[:, :, top:top + h, left:left + w])
        return torch.stack(outs), state


def build_model(cfg: TrainConfig, say=lambda m: None) -> nn.Module:
    """The network of the configured family at the crop size, seeded, with ``init`` weights and (NER-Net) ``letc``
    loaded (and frozen) as configured."""
    from .. import families

    family = families.get(cfg.family)
    torch.manual_seed(cfg.seed)
    net = family.from_config(cfg.model.to_dict(), cfg.model.sensor_size)
    if cfg.init:
        ck = read_checkpoint(cfg.init)
        src = families.detect(ck, cfg.init).from_checkpoint(ck, cfg.model.sensor_size, cfg.init)
        if type(src) is not type(net) or src.cfg != net.cfg:
            raise ValueError(f"init {cfg.init}: its architecture {src.cfg.to_dict()} differs from [model] "
                             f"{net.cfg.to_dict()}")
        net.load_state_dict(src.state_dict())
    if cfg.letc and family.name != "nernet":
        raise ValueError(f"'letc' loads NER-Net's LETC weights; the {family.name} family has no LETC")
    if cfg.letc_init == "voxel" and family.name != "nernet":
        raise ValueError(f"letc_init = 'voxel' initialises NER-Net's LETC; the {family.name} family has no LETC")
    if cfg.letc:
        load_letc(net, cfg.letc, freeze=cfg.freeze_letc)
    elif cfg.letc_init == "voxel" and not cfg.init:
        err = fit_voxel_letc(net)
        say(f"LETC MLP fitted to the voxel triangle kernel (max error {err:.3f})"
            + ("; frozen" if cfg.freeze_letc else "; trained from there"))
        if cfg.freeze_letc:
            for p in net.representation.parameters():
                p.requires_grad_(False)
    elif cfg.freeze_letc and not cfg.init and family.name == "nernet":
        say("freeze_letc ignored: no 'letc' weights given, so LETC starts from random weights and is trained")
    if cfg.head_gain != 1.0 and not cfg.init:
        first = next(m for m in net.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad)
        with torch.no_grad():
            first.weight.mul_(cfg.head_gain)
        say(f"first convolution's initial weights x {cfg.head_gain:g} (head_gain)")
    return net


def fit_voxel_letc(net: nn.Module, steps: int = 400) -> float:
    """Fit the LETC MLP to the voxel-grid triangle ``max(0, 1 − |u|)`` over its input range; returns the max error.
    Deterministic (seeded by the caller); ~0.5 s on a CPU."""
    mlp = net.representation.quantization_layer.value_layer
    c = net.cfg.num_bins
    u = torch.linspace(-(c - 1), c - 1, 2001)
    target = (1 - u.abs()).clamp(min=0)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = 1e-2 * (1 - i / steps) + 1e-4
        opt.zero_grad()
        loss = (mlp(u) - target).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((mlp(u) - target).abs().max())


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX bfloat16 tiles (``amx_bf16`` in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


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
        from .. import families

        self.family = families.get(cfg.family)
        self.net = build_model(cfg, say).to(self.device)
        self.seq_model = SequenceModel(self.net, checkpoint_letc=cfg.checkpoint_letc, channels_last=cfg.channels_last,
                                       letc_table=cfg.letc_table)
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
        self.amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        if cfg.amp and self.device.type == "cpu":
            # CPU autocast: bfloat16 only, and worth it only with AMX: on an AVX512-BF16 CPU without AMX (AMD
            # EPYC), a 10-window step of configs/ner-lite.toml took 0.97 s in bf16 vs 0.9 s in fp32 channels_last
            self.amp = self.amp_dtype == torch.bfloat16 and cpu_has_amx()
            if not self.amp:
                say("amp ignored on this CPU: bfloat16 autocast is used on CPUs with AMX only (training in float32)")
        elif cfg.amp and not self.amp:
            say(f"amp ignored: no mixed precision on {self.device.type}")
        if cfg.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.ema = None
        if cfg.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)
        self.step = 0
        self.skipped_steps = 0

    @property
    def averaged_net(self) -> nn.Module:
        """The weights to validate and ship: the moving average when ``ema_decay`` > 0, else the trained ones."""
        return self.net if self.ema is None else self.ema.module

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
        weights = None
        if self.cfg.losses.unseen < 1.0:
            weights = seen_weights(windows, tuple(gt.shape[-2:]), self.cfg.losses.unseen,
                                   self.cfg.losses.seen_radius_px, self.device)
        for c0 in range(0, L, chunk):
            c1 = min(L, c0 + chunk)
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                outs, state = self.module(windows[c0:c1], state)
            loss = torch.zeros((), device=self.device)  # losses in float32, outside autocast (SSIM variances)
            for j, k in enumerate(range(c0, c1)):
                terms = self.losses.window(k, outs[j], gt[k], prev_out, gt[k - 1] if k else None,
                                           None if flow is None else flow[k], None if weights is None else weights[k])
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
        if self.ema is not None:
            self.ema.update_parameters(self.net)
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
        ema = {} if self.ema is None else {"raw_state_dict": self.net.state_dict(),
                                           "ema_updates": int(self.ema.n_averaged)}
        self.family.save(self.averaged_net, tmp, step=self.step, optimizer=self.optimizer.state_dict(),
                         train_config=self.cfg.to_dict(), scaler=self.scaler.state_dict(),
                         rng={"torch": torch.get_rng_state(), "cuda": _cuda_rng()}, world_size=self.world_size,
                         skipped_steps=self.skipped_steps, **ema)
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
        self.net.load_state_dict(ck.get("raw_state_dict", ck["state_dict"]))
        if self.ema is not None and "raw_state_dict" in ck:  # the average goes on; else it starts at these weights
            self.ema.module.load_state_dict(ck["state_dict"])
            self.ema.n_averaged.fill_(int(ck.get("ema_updates", 1)))
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
