"""PyTorch backend: any registered model family's network, on the CPU or CUDA.

Each step: the family's representation fills the ``[C, H, W]`` input on the CPU (numpy/numba), the network runs
with the recurrent state this engine owns (kept on the engine's device between calls), the family's
post-processing and the crop run on the padded output. Output-buffer rule: the returned array is reused by the
next call.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

from livenight.errors import EngineMismatchError

from .base import EngineInfo, ModelEngine

DTYPES = ("auto", "float32", "float16", "bfloat16")
#: families whose "auto" precision is measured to stay within 2 grey levels of float32 (bf16 on the CPU, fp16 on
#: CUDA: ``livenight bench cpu`` / ``livenight bench gpu``)
AUTO_FAST = {"nernet"}


class TorchEngine(ModelEngine):
    """Run a network of a registered model family on windows of events.

    Args:
        model: a checkpoint path, a built network, or a zero-argument callable returning one (built on open).
        sensor_size: ``(width, height)`` of the source.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        dtype: network precision: ``auto`` (NER-Net family, and models whose JSON lists the precision in
            ``fast_dtypes_checked``: bfloat16 on CPUs with AMX / AVX512-BF16, float16 on CUDA; float32 otherwise),
            float32, float16 (CUDA only), bfloat16.
        crop: crop the padded output to the sensor size (None: the family's choice).
        exact_letc: NER-Net only: the official per-event MLP instead of the lookup table (reference path).
        family: a family object or name (None: from the checkpoint's content or the network's class).
        meta: model metadata (default windows); read from ``<checkpoint>.json`` when the file has one.
        name: label for :class:`EngineInfo`.
        **family_options: the family's representation / post-processing options (E2VID: ``postprocess``,
            ``rescale``, ``unsharp_amount``, ``normalize``, ``robust_percentiles``, ``auto_hdr_median_size``).
    """

    def __init__(self, model, sensor_size: tuple[int, int], device: str = "cpu",
                 dtype: Literal["float32", "float16", "bfloat16"] = "float32", crop: bool | None = None,
                 exact_letc: bool = False, family=None, meta: dict | None = None, name: str | None = None,
                 **family_options) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
        if dtype == "float16" and not device.startswith("cuda"):
            raise ValueError(f"dtype float16 needs a CUDA device (got device {device!r}); on the CPU use float32 "
                             "or bfloat16")
        if family is not None and isinstance(family, str):
            from livenight import families

            family = families.get(family)
        if family is not None:  # check the options now, before anything is built
            self._check_options(family, family_options)
        self._model_arg = model
        self._family_arg = family
        self._options = family_options
        self.sensor_size = tuple(int(v) for v in sensor_size)
        self.device_name = device
        self.dtype_name = dtype
        self.exact_letc = exact_letc
        self.crop = crop
        self.meta = meta
        label = name or (os.path.basename(model) if isinstance(model, (str, os.PathLike)) else None)
        self._label = label
        self.info = EngineInfo(name=str(label or "model"), backend="torch", device=device, dtype=dtype,
                               sensor_size=self.sensor_size, input_kind="events")

    @staticmethod
    def _check_options(family, options: dict) -> None:
        post_keys = {"postprocess", "rescale", "unsharp_amount", "robust_percentiles", "auto_hdr_median_size"}
        family.postprocess({"family": ""}, **{k: v for k, v in options.items() if k in post_keys})

    def _build(self):
        from torch import nn

        from livenight import families

        m = self._model_arg
        if isinstance(m, (str, os.PathLike)):
            from livenight.model.checkpoint import read_checkpoint

            ck = read_checkpoint(m)
            fam = self._family_arg or families.detect(ck, str(m))
            return fam, fam.from_checkpoint(ck, self.sensor_size, str(m))
        if callable(m) and not isinstance(m, nn.Module):
            m = m()
        if not isinstance(m, nn.Module):
            raise TypeError(f"model must be a checkpoint path, a network or a callable returning one "
                            f"(got {type(m).__name__})")
        if self._family_arg is not None:
            if not self._family_arg.owns(m):
                raise TypeError(f"model must be a {self._family_arg.title} network (got {type(m).__name__})")
            return self._family_arg, m
        return families.family_of(m), m

    def _open_impl(self) -> None:
        import torch

        self._torch = torch
        family, model = self._build()
        cfg = model.cfg
        if tuple(cfg.sensor_size) != self.sensor_size:
            raise EngineMismatchError(f"model was built for {cfg.sensor_size[0]}x{cfg.sensor_size[1]} but the "
                                      f"source is {self.sensor_size[0]}x{self.sensor_size[1]}")
        family.check(model)
        self.model = model.eval()
        self.cfg = cfg
        self.device = torch.device(self.device_name)
        if self.dtype_name == "auto":
            self.dtype_name = self._auto_dtype(family)
        self.dtype = getattr(torch, self.dtype_name)
        rep_keys = {"normalize"}
        representation = family.representation(model, exact=self.exact_letc,
                                               **{k: v for k, v in self._options.items() if k in rep_keys})
        post = family.postprocess(family.config_of(model) | {"family": family.variant(model)},
                                  **{k: v for k, v in self._options.items() if k not in rep_keys})
        self._cpu_bf16 = self.device.type == "cpu" and self.dtype_name == "bfloat16"
        if self._cpu_bf16:  # bf16 convolutions + autocast + channels_last; the state's cell stays float32
            from livenight.cpu import prepare_cpu_model

            self.net = prepare_cpu_model(model, "bfloat16")
        else:
            self.net = model.to(self.device, self.dtype)
        from dataclasses import replace

        self.info = replace(self.info, name=self._label or family.variant(model), device=str(self.device),
                            dtype=self.dtype_name)
        self._setup(family, representation, post, cfg.padded_size, cfg.padding(), cfg.in_channels)

    def _close_impl(self) -> None:
        self.state = None

    def _auto_dtype(self, family) -> str:
        # a model's JSON may list the reduced precisions measured on its own weights ("fast_dtypes_checked")
        checked = set((self.meta or {}).get("fast_dtypes_checked") or ())
        cuda = self.device_name.startswith("cuda")
        if family.name not in AUTO_FAST and ("float16" if cuda else "bfloat16") not in checked:
            return "float32"
        if cuda:
            return "float16"
        from livenight.cpu import fast_cpu_dtype

        return fast_cpu_dtype()

    def _reset_state(self) -> None:
        if self._cpu_bf16:
            self.state = self.net.initial_state()
        else:
            self.state = self.model.initial_state(device=self.device, dtype=self.dtype)

    def _run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        in_dtype = torch.float32 if self._cpu_bf16 else self.dtype  # the bf16 wrapper casts inside autocast
        t = torch.from_numpy(x)[None].to(self.device, in_dtype, non_blocking=True)
        with torch.inference_mode():
            img, self.state = self.net(t, self.state)
            return img[0, 0].float().cpu().numpy()  # .cpu() waits for the device
