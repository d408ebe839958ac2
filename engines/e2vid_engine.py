"""PyTorch engine for the E2VID family (E2VID, E2VID+, FireNet, FireNet+), CPU or CUDA.

Each step: 5-bin E2VID voxel grid of the window (:func:`livenight.voxel.voxel_grid`, normalised by its first and
last event) → non-zero mean/std normalisation for the families trained with it (E2VID, FireNet) → the network
with the recurrent state this engine keeps on its device (the model pads inside) → post-processing → crop to the
sensor size → float32 frame in [0, 1].

Post-processing presets (``postprocess=``), from ``e2vid-family.md`` §1.4, §2.4, §3.3 and §4.2:

* ``"official"`` (default): what each family's own inference does. E2VID and FireNet (rpg_e2vid): unsharp mask
  (amount 0.3, σ 1, 5×5, zero border) then intensity rescaling with fixed ``[Imin, Imax] = [0, 1]``
  (``rescale="auto_hdr"`` for rpg_e2vid's ``--auto_hdr``: per-frame min/max, min clamped to [0, 0.45] and max to
  [0.55, 1], each the median over recent frames). E2VID+ and FireNet+ (event_cnn_minimal): clip to [0, 1].
* ``"evreal"``: the EVREAL protocol: E2VID ``robust`` (``(img − p1)/(p99 − p1)`` per frame), everything else
  untouched, then clip to [0, 1].
* ``"clip"``: clip to [0, 1] only.

``rescale`` and ``unsharp_amount`` override the preset's choice: ``rescale`` ∈ ``"fixed"`` (clip to [0, 1]),
``"robust"`` (percentiles ``robust_percentiles``, default 1 / 99), ``"auto_hdr"`` (bounds smoothed by a median
over ``auto_hdr_median_size`` frames; cleared on ``reset``). The robust and fixed rescalings look at the
cropped frame; unsharp mask and auto-HDR bounds act on the padded frame, as rpg_e2vid does. No 8-bit
quantisation: frames stay float32.

Output-buffer rule: the returned array is reused by the next call.
"""

from __future__ import annotations

import math
import os
from collections import deque
from typing import Literal

import numpy as np

from livenight.errors import EngineMismatchError
from livenight.windowing import Window

from .base import EngineBase, EngineInfo

Postprocess = Literal["official", "evreal", "clip"]
Rescale = Literal["fixed", "robust", "auto_hdr"]

#: families whose checkpoints were trained (and are run officially and by EVREAL) on normalised voxels
NORMALISED_INPUT = {"E2VID": True, "FireNet": True, "E2VID+": False, "FireNet+": False}
#: families evaluated by rpg_e2vid's own inference (unsharp mask + intensity rescaler)
_RPG_FAMILIES = {"E2VID", "FireNet"}


def unsharp_kernel(size: int = 5, sigma: float = 1.0) -> np.ndarray:
    """rpg_e2vid's unsharp-mask blur kernel: per axis, normal-CDF differences over ``size`` equal cells spanning
    ``±(sigma + Δ/2)`` with ``Δ = (2·sigma + 1)/size``; 2-D = square root of the outer product, normalised to 1."""
    step = (2.0 * sigma + 1.0) / size
    edges = np.linspace(-sigma - step / 2.0, sigma + step / 2.0, size + 1)
    cdf = np.array([0.5 * (1.0 + math.erf(e / math.sqrt(2.0))) for e in edges])
    k1 = np.diff(cdf)
    k2 = np.sqrt(np.outer(k1, k1))
    return (k2 / k2.sum()).astype(np.float32)


class E2VIDEngine(EngineBase):
    """Run an E2VID-family network on windows of events.

    Args:
        model: a checkpoint path, a built :class:`~livenight.model.e2vid.E2VIDRecurrent` /
            :class:`~livenight.model.e2vid.FireNet`, or a zero-argument callable returning one (built on open).
        sensor_size: ``(width, height)`` of the source; frames come back at this size.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        dtype: network precision (float16 / bfloat16 only on CUDA); post-processing runs in float32.
        normalize: normalise the voxel's non-zero entries (``None``: the family's training choice — E2VID and
            FireNet yes, E2VID+ and FireNet+ no).
        postprocess: ``"official"``, ``"evreal"`` or ``"clip"`` (module docstring).
        rescale: override the preset's intensity rescaling (``"fixed"``, ``"robust"``, ``"auto_hdr"``).
        unsharp_amount: override the preset's unsharp-mask amount (0 disables it).
        robust_percentiles: ``(low, high)`` percentiles of ``"robust"``.
        auto_hdr_median_size: frames in the median of ``"auto_hdr"`` (rpg_e2vid default 10).
        family: force the family of a bare ``state_dict`` file.
        name: label for :class:`EngineInfo`.

    Example:
        >>> with E2VIDEngine("E2VID_lightweight.pth.tar", (346, 260)) as eng:      # doctest: +SKIP
        ...     for window in windows:
        ...         frame = eng.step(window)      # (260, 346) float32 in [0, 1], reused next call
    """

    def __init__(self, model, sensor_size: tuple[int, int], device: str = "cpu",
                 dtype: Literal["float32", "float16", "bfloat16"] = "float32", normalize: bool | None = None,
                 postprocess: Postprocess = "official", rescale: Rescale | None = None,
                 unsharp_amount: float | None = None, robust_percentiles: tuple[float, float] = (1.0, 99.0),
                 auto_hdr_median_size: int = 10, family: str | None = None, name: str | None = None) -> None:
        if postprocess not in ("official", "evreal", "clip"):
            raise ValueError(f"postprocess must be 'official', 'evreal' or 'clip' (got {postprocess!r})")
        if rescale not in (None, "fixed", "robust", "auto_hdr"):
            raise ValueError(f"rescale must be 'fixed', 'robust', 'auto_hdr' or None (got {rescale!r})")
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be 'float32', 'float16' or 'bfloat16' (got {dtype!r})")
        if dtype != "float32" and not device.startswith("cuda"):
            raise ValueError(f"dtype {dtype} needs a CUDA device (got device {device!r}); use float32 on the CPU")
        lo, hi = (float(v) for v in robust_percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"robust_percentiles must satisfy 0 <= low < high <= 100 (got {robust_percentiles!r})")
        if int(auto_hdr_median_size) < 1:
            raise ValueError(f"auto_hdr_median_size must be >= 1 (got {auto_hdr_median_size!r})")
        self._model_arg = model
        self.sensor_size = tuple(int(v) for v in sensor_size)
        self.device_name = device
        self.dtype_name = dtype
        self._normalize_arg = normalize
        self.postprocess = postprocess
        self._rescale_arg = rescale
        self._unsharp_arg = unsharp_amount
        self.robust_percentiles = (lo, hi)
        self.auto_hdr_median_size = int(auto_hdr_median_size)
        self._family_arg = family
        label = name or (os.path.basename(model) if isinstance(model, (str, os.PathLike)) else "E2VID-family")
        self.info = EngineInfo(name=str(label), backend="torch", device=device, dtype=dtype,
                               sensor_size=self.sensor_size, input_kind="events")

    # ------------------------------------------------------------------ building
    def _build(self):
        from torch import nn

        from livenight.model.e2vid import E2VIDRecurrent, FireNet, load_e2vid_family

        m = self._model_arg
        if isinstance(m, (str, os.PathLike)):
            model, _ = load_e2vid_family(m, self.sensor_size, family=self._family_arg)
            return model
        if callable(m) and not isinstance(m, nn.Module):
            m = m()
        if isinstance(m, (E2VIDRecurrent, FireNet)):
            return m
        raise TypeError(f"model must be a path, an E2VIDRecurrent / FireNet or a callable returning one "
                        f"(got {type(m).__name__})")

    def _open_impl(self) -> None:
        import torch
        import torch.nn.functional as F

        self._torch, self._F = torch, F
        model = self._build()
        if tuple(model.cfg.sensor_size) != self.sensor_size:
            raise EngineMismatchError(f"model was built for {model.cfg.sensor_size[0]}x{model.cfg.sensor_size[1]} "
                                      f"but the source is {self.sensor_size[0]}x{self.sensor_size[1]}")
        if model.cfg.family == "E2VID+" and model.cfg.num_bins == 10:
            raise EngineMismatchError("this E2VID+ checkpoint takes 10 input channels: an event_cnn_minimal 'update' "
                                      "model fed 5 ON + 5 OFF bins (--update); livenight feeds the 5 combined bins "
                                      "of the paper models and does not support it")
        self.model = model.eval()
        self.cfg = model.cfg
        self.family = model.cfg.family
        self.device = torch.device(self.device_name)
        self.dtype = getattr(torch, self.dtype_name)
        self.net = model.to(self.device, self.dtype)
        self.normalize = NORMALISED_INPUT.get(self.family, False) if self._normalize_arg is None \
            else bool(self._normalize_arg)
        rpg = self.postprocess == "official" and self.family in _RPG_FAMILIES
        self.unsharp_amount = float(self._unsharp_arg) if self._unsharp_arg is not None else (0.3 if rpg else 0.0)
        if self._rescale_arg is not None:
            self.rescale = self._rescale_arg
        elif self.postprocess == "evreal" and self.family == "E2VID":
            self.rescale = "robust"
        else:
            self.rescale = "fixed"
        self._blur = torch.from_numpy(unsharp_kernel()).to(self.device)[None, None]
        w, h = self.sensor_size
        self._vox = np.empty((self.cfg.num_bins, h, w), dtype=np.float32)
        self._frame = np.empty((h, w), dtype=np.float32)
        self._frame_t = torch.from_numpy(self._frame)
        self._left, _, self._top, _ = self.cfg.padding()
        self._bounds: deque[tuple[float, float]] = deque()
        label = self.info.name if self.info.name != "E2VID-family" else self.family
        self.info = EngineInfo(name=label, backend="torch", device=str(self.device), dtype=self.dtype_name,
                               sensor_size=self.sensor_size, input_kind="events")

    def _close_impl(self) -> None:
        self.state = None

    def _reset_impl(self) -> None:
        self.state = self.model.initial_state(device=self.device, dtype=self.dtype)
        self._bounds = deque()

    # ------------------------------------------------------------------ stepping
    def voxel(self, window: Window) -> np.ndarray:
        """The (normalised, when the family wants it) ``[B, H, W]`` voxel grid of a window; reused buffer."""
        from livenight.voxel import normalize_voxel, voxel_grid

        v = voxel_grid(window.events, self.cfg.num_bins, self.sensor_size, out=self._vox)
        if self.normalize:
            normalize_voxel(v, out=v)
        return v

    def _post(self, img):
        """Padded ``[1, 1, Hp, Wp]`` float32 network output → cropped ``[H, W]`` frame in [0, 1]."""
        torch, F = self._torch, self._F
        if self.unsharp_amount > 0:
            blurred = F.conv2d(img, self._blur, padding=self._blur.shape[-1] // 2)
            img = (1.0 + self.unsharp_amount) * img - self.unsharp_amount * blurred
        if self.rescale == "auto_hdr":
            lo = min(max(float(img.min()), 0.0), 0.45)
            hi = min(max(float(img.max()), 0.55), 1.0)
            # rpg_e2vid drops the oldest bound only when more than N are held, then appends: up to N+1 frames
            if len(self._bounds) > self.auto_hdr_median_size:
                self._bounds.popleft()
            self._bounds.append((lo, hi))
            lo = float(np.median([b[0] for b in self._bounds]))
            hi = float(np.median([b[1] for b in self._bounds]))
            img = (img - lo) / (hi - lo)
        w, h = self.sensor_size
        out = img[0, 0, self._top:self._top + h, self._left:self._left + w]
        if self.rescale == "robust":
            q = torch.tensor(self.robust_percentiles, device=out.device, dtype=out.dtype) / 100.0
            p_lo, p_hi = torch.quantile(out.reshape(-1), q)
            out = (out - p_lo) / torch.clamp(p_hi - p_lo, min=1e-12)
        return out.clamp(0.0, 1.0)

    def _step_impl(self, window: Window) -> np.ndarray:
        torch = self._torch
        v = torch.from_numpy(self.voxel(window))[None].to(self.device, self.dtype, non_blocking=True)
        with torch.inference_mode():
            img, self.state = self.net(v, self.state)
            frame = self._post(img.float())
            self._frame_t.copy_(frame)
        return self._frame
