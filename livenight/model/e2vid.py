"""The E2VID family: E2VID, E2VID+ (recurrent U-Net with ConvLSTM) and FireNet, FireNet+ (ConvGRU), written from
the architecture facts in ``shared/reference/e2vid-family.md``, loading the official checkpoints strictly.

Why it is like this:

* One network class per architecture, one flat-state signature: ``forward(voxel, state) -> (image, state)`` with
  ``state`` an explicit tuple of tensors (``h0..h{n-1}, c0..c{n-1}`` for the U-Net with ConvLSTM, ``h0, h1`` for
  FireNet), so ONNX Runtime and TensorRT see it as named I/O, as for NER-Net. ``initial_state()`` gives the zeros
  the official code creates from ``None``.
* Module names reproduce the ``state_dict`` keys of the official files: ``unetrecurrent.*`` for E2VID (rpg_e2vid)
  and E2VID+ (event_cnn_minimal), ``head/G1/R1/G2/R2/pred`` for FireNet+. The original FireNet (rpg_e2vid's
  ``cedric/firenet`` branch, ``net.*`` keys) is the same network: its weights are loaded into the FireNet+ layout
  through a prefix map (``FIRENET_TO_PLUS``); :class:`FireNetLegacy` keeps the original layout for checks.
* Families differ outside the weights: E2VID ends in a sigmoid and pads by reflection; E2VID+ has no output
  activation (its config's ``final_activation`` is ``""``) and pads with zeros (event_cnn_minimal's
  ``CropParameters``); FireNet / FireNet+ run at full resolution without padding. Inputs are normalised for E2VID
  and FireNet only (see :mod:`livenight.engines.e2vid_engine`). The config records all of it.
* Like :class:`~livenight.model.nernet.NERNet`, the U-Net pads inside ``forward`` to a multiple of
  ``2**num_encoders`` (top/left get the larger half, as the official ``CropParameters`` split it) and returns the
  padded image; ``cfg.padding()`` says where to crop.
* Checkpoints are never trusted to name code: the ``arch`` string goes through an explicit table, never ``eval``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from livenight.errors import EngineMismatchError, ShapeError, SourceError

from .layers import ConvLayer, ResidualBlock, UNetPadding, UpsampleConvLayer, space_to_depth

Family = Literal["E2VID", "E2VID+", "FireNet", "FireNet+"]
FAMILIES: tuple[str, ...] = ("E2VID", "E2VID+", "FireNet", "FireNet+")

#: rpg_e2vid FireNet key prefix -> FireNet+ (event_cnn_minimal) key prefix (e2vid-family.md §3.3)
FIRENET_TO_PLUS: tuple[tuple[str, str], ...] = (
    ("net.head.conv.conv2d.", "head.conv2d."),
    ("net.head.recurrent_block.", "G1."),
    ("net.resblocks.0.conv.", "R1."),
    ("net.resblocks.0.recurrent_block.", "G2."),
    ("net.resblocks.1.", "R2."),
    ("net.pred.conv2d.", "pred.conv2d."),
)


# ------------------------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class E2VIDConfig(UNetPadding):
    """Architecture of a recurrent U-Net of the E2VID family; the defaults are E2VID (``E2VID_lightweight``)."""

    family: str = "E2VID"
    num_bins: int = 5
    base_channels: int = 32
    num_encoders: int = 3
    num_residual_blocks: int = 2
    kernel_size: int = 5
    recurrent_block: Literal["convlstm", "convgru"] = "convlstm"
    upsample: Literal["transposed", "bilinear"] = "transposed"  # TransposedConvLayer / UpsampleConvLayer
    final_activation: Literal["sigmoid", "none"] = "sigmoid"
    pad_mode: Literal["reflect", "zeros"] = "reflect"
    sensor_size: tuple[int, int] = (346, 260)  # (width, height), unpadded
    arch: str = field(default="E2VIDRecurrent")

    def __post_init__(self) -> None:
        for name, allowed in (("recurrent_block", ("convlstm", "convgru")), ("upsample", ("transposed", "bilinear")),
                              ("final_activation", ("sigmoid", "none")), ("pad_mode", ("reflect", "zeros"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"E2VIDConfig.{name} must be one of {allowed} (got {getattr(self, name)!r})")

    @property
    def in_channels(self) -> int:
        return self.num_bins

    def state_shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the recurrent state tensors, in the order of the state tuple."""
        wp, hp = self.padded_size
        hs = {f"h{i}": (batch, self.base_channels * 2 ** (i + 1), hp >> (i + 1), wp >> (i + 1))
              for i in range(self.num_encoders)}
        if self.recurrent_block == "convgru":
            return hs
        return {**hs, **{f"c{i}": s for i, s in enumerate(hs.values())}}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sensor_size"] = list(self.sensor_size)
        return d


@dataclass(frozen=True)
class FireNetConfig(UNetPadding):
    """Architecture of FireNet / FireNet+ (the same network); the official networks run at full resolution.

    ``stem_stride`` s > 1 (livenight's fast variant; 1 is the official layout and its ``state_dict``) folds each
    s×s block of the voxel grid into channels (space-to-depth: no event is dropped), runs every layer at 1/s
    resolution and turns the prediction's s² channels back into the full-resolution image (pixel shuffle). The
    grid is zero-padded to multiples of s (top/left get the larger half) and the image is returned padded.
    """

    family: str = "FireNet+"
    num_bins: int = 5
    base_channels: int = 16
    kernel_size: int = 3
    sensor_size: tuple[int, int] = (346, 260)
    arch: str = field(default="FireNet")
    stem_stride: int = 1

    def __post_init__(self) -> None:
        v = self.stem_stride
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"FireNetConfig.stem_stride must be an integer >= 1 (got {v!r})")

    @property
    def in_channels(self) -> int:
        return self.num_bins

    @property
    def pad_multiple(self) -> int:  # UNetPadding's padded_size / padding() then pad to multiples of the stride
        return self.stem_stride

    def state_shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        wp, hp = self.padded_size
        s = self.stem_stride
        return {"h0": (batch, self.base_channels, hp // s, wp // s), "h1": (batch, self.base_channels, hp // s, wp // s)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sensor_size"] = list(self.sensor_size)
        if self.stem_stride == 1:
            del d["stem_stride"]  # the official layout's dict stays as it was
        return d


# ------------------------------------------------------------------------------------------------ building blocks
# ConvLayer, UpsampleConvLayer and ResidualBlock are NER-Net's (same definitions and key names in both codebases)
class TransposedConvLayer(nn.Module):
    """×2 transposed conv (stride 2, ``output_padding`` 1) + ReLU; E2VID_lightweight's decoder."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.transposed_conv2d = nn.ConvTranspose2d(cin, cout, k, stride=2, padding=k // 2, output_padding=1,
                                                    bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.transposed_conv2d(x))


class ConvLSTM(nn.Module):
    """One conv over ``[x, h]`` gives the four gates in the order input, forget, output, cell."""

    def __init__(self, cin: int, hidden: int, k: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.Gates = nn.Conv2d(cin + hidden, 4 * hidden, k, padding=k // 2)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, o, g = self.Gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, c_new


class ConvGRU(nn.Module):
    """``z = σ(W_u[x,h]); r = σ(W_r[x,h]); n = tanh(W_o[x, r·h]); h' = h(1 − z) + n·z``."""

    def __init__(self, cin: int, hidden: int, k: int = 3) -> None:
        super().__init__()
        self.reset_gate = nn.Conv2d(cin + hidden, hidden, k, padding=k // 2)
        self.update_gate = nn.Conv2d(cin + hidden, hidden, k, padding=k // 2)
        self.out_gate = nn.Conv2d(cin + hidden, hidden, k, padding=k // 2)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        xh = torch.cat([x, h], dim=1)
        z = torch.sigmoid(self.update_gate(xh))
        r = torch.sigmoid(self.reset_gate(xh))
        n = torch.tanh(self.out_gate(torch.cat([x, h * r], dim=1)))
        return h * (1 - z) + n * z


class RecurrentConvLayer(nn.Module):
    """Conv (+ReLU) then a recurrent block with 3×3 gates: ``.conv`` and ``.recurrent_block``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = ConvLayer(cin, cout, k, stride, k // 2)
        self.recurrent_block = ConvLSTM(cout, cout, 3) if kind == "convlstm" else ConvGRU(cout, cout, 3)


# ------------------------------------------------------------------------------------------------ networks
class UNetRecurrent(nn.Module):
    """head → (strided conv → ConvLSTM) × n → residual blocks → decoders with sum skips → 1×1 prediction."""

    def __init__(self, cfg: E2VIDConfig) -> None:
        super().__init__()
        b, k, n = cfg.base_channels, cfg.kernel_size, cfg.num_encoders
        self.num_encoders = n
        self.kind = cfg.recurrent_block
        self.head = ConvLayer(cfg.in_channels, b, k, 1, k // 2)
        self.encoders = nn.ModuleList(RecurrentConvLayer(b << i, b << (i + 1), k, 2, cfg.recurrent_block)
                                      for i in range(n))
        deep = b << n
        self.resblocks = nn.ModuleList(ResidualBlock(deep) for _ in range(cfg.num_residual_blocks))
        up = TransposedConvLayer if cfg.upsample == "transposed" else UpsampleConvLayer
        self.decoders = nn.ModuleList(up(deep >> j, deep >> (j + 1), k) for j in range(n))
        self.pred = ConvLayer(b, 1, 1, relu=False)
        self.sigmoid = cfg.final_activation == "sigmoid"

    def forward(self, v: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        n = self.num_encoders
        hs = list(state[:n])
        cs = list(state[n:2 * n])
        x = self.head(v)
        head = x
        for i, enc in enumerate(self.encoders):
            x = enc.conv(x)
            if self.kind == "convlstm":
                hs[i], cs[i] = enc.recurrent_block(x, hs[i], cs[i])
            else:
                hs[i] = enc.recurrent_block(x, hs[i])
            x = hs[i]
        for rb in self.resblocks:
            x = rb(x)
        for j, dec in enumerate(self.decoders):
            x = dec(x + hs[n - 1 - j])
        img = self.pred(x + head)
        if self.sigmoid:
            img = torch.sigmoid(img)
        return img, (*hs, *cs)


class _StatefulBase(nn.Module):
    cfg: E2VIDConfig | FireNetConfig

    @property
    def family(self) -> str:
        return self.cfg.family

    @property
    def num_bins(self) -> int:
        return self.cfg.num_bins

    @property
    def state_names(self) -> list[str]:
        return list(self.cfg.state_shapes())

    def initial_state(self, batch: int = 1, device=None, dtype=torch.float32) -> tuple[Tensor, ...]:
        """Zeros for every state tensor (what the official code creates from ``None``)."""
        return tuple(torch.zeros(s, device=device, dtype=dtype) for s in self.cfg.state_shapes(batch).values())

    def _check_input(self, x: Tensor) -> None:
        w, h = self.cfg.sensor_size
        if x.dim() != 4 or x.shape[1] != self.cfg.num_bins or x.shape[2] != h or x.shape[3] != w:
            raise ShapeError(f"{type(self).__name__} expects a voxel grid [N, {self.cfg.num_bins}, {h}, {w}] "
                             f"(got {list(x.shape)})")


class E2VIDRecurrent(_StatefulBase):
    """E2VID / E2VID+: ``forward(voxel [N, B, H, W], state) -> (image [N, 1, Hp, Wp], state)``.

    The voxel is padded inside (reflection for E2VID, zeros for E2VID+) to ``cfg.padded_size``; the image is
    returned padded (crop with ``cfg.padding()``).

    Example:
        >>> net = E2VIDRecurrent(E2VIDConfig(sensor_size=(20, 13), base_channels=4))
        >>> img, state = net(torch.zeros(1, 5, 13, 20), net.initial_state())
        >>> tuple(img.shape), net.state_names
        ((1, 1, 16, 24), ['h0', 'h1', 'h2', 'c0', 'c1', 'c2'])
    """

    def __init__(self, cfg: E2VIDConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or E2VIDConfig()
        self.unetrecurrent = UNetRecurrent(self.cfg)

    @property
    def num_encoders(self) -> int:
        return self.cfg.num_encoders

    def forward(self, voxel: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        self._check_input(voxel)
        pad = self.cfg.padding()
        if any(pad):
            voxel = F.pad(voxel, pad, mode="reflect" if self.cfg.pad_mode == "reflect" else "constant")
        return self.unetrecurrent(voxel, tuple(state))


class FireNet(_StatefulBase):
    """FireNet in the FireNet+ (event_cnn_minimal) layout; also runs the original FireNet's weights.

    ``x = relu(head(v)); h0 = G1(x, h0); x = R1(h0); h1 = G2(x, h1); x = R2(h1); img = pred(x)`` (no activation).
    """

    #: the CPU bf16 path may keep the state in bf16 (GRU states are bounded; see livenight.cpu)
    bf16_state = True

    def __init__(self, cfg: FireNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FireNetConfig()
        b, k = cfg.base_channels, cfg.kernel_size
        s = cfg.stem_stride
        self.head = ConvLayer(cfg.in_channels * s * s, b, k, 1, k // 2)
        self.G1 = ConvGRU(b, b, k)
        self.R1 = ResidualBlock(b)
        self.G2 = ConvGRU(b, b, k)
        self.R2 = ResidualBlock(b)
        self.pred = ConvLayer(b, s * s, 1 if s == 1 else 3, padding=0 if s == 1 else 1, relu=False)

    def forward(self, voxel: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        self._check_input(voxel)
        h0, h1 = state
        s = self.cfg.stem_stride
        if s > 1:
            pad = self.cfg.padding()
            if any(pad):
                voxel = F.pad(voxel, pad)
            voxel = space_to_depth(voxel, s)
        h0 = self.G1(self.head(voxel), h0)
        h1 = self.G2(self.R1(h0), h1)
        img = self.pred(self.R2(h1))
        if s > 1:
            img = F.pixel_shuffle(img, s)
        return img, (h0, h1)


class _RecurrentResidualLayer(nn.Module):
    """The original FireNet's ``resblocks.0``: a residual block ``.conv`` then a ConvGRU ``.recurrent_block``."""

    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.conv = ResidualBlock(c)
        self.recurrent_block = ConvGRU(c, c, k)


class _UNetFire(nn.Module):
    def __init__(self, cfg: FireNetConfig) -> None:
        super().__init__()
        b, k = cfg.base_channels, cfg.kernel_size
        self.head = RecurrentConvLayer(cfg.in_channels, b, k, 1, "convgru")
        self.resblocks = nn.ModuleList([_RecurrentResidualLayer(b, k), ResidualBlock(b)])
        self.pred = ConvLayer(b, 1, 1, relu=False)


class FireNetLegacy(_StatefulBase):
    """The original FireNet in its own layout (``net.*`` keys of rpg_e2vid's ``cedric/firenet`` checkpoint).

    Kept to check the key map: loading runs the original weights in :class:`FireNet` instead.
    """

    def __init__(self, cfg: FireNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FireNetConfig(family="FireNet")
        self.net = _UNetFire(self.cfg)

    def forward(self, voxel: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        self._check_input(voxel)
        h0, h1 = state
        head, (rec, plain) = self.net.head, self.net.resblocks
        h0 = head.recurrent_block(head.conv(voxel), h0)
        h1 = rec.recurrent_block(rec.conv(h0), h1)
        return self.net.pred(plain(h1)), (h0, h1)


E2VIDFamilyModel = E2VIDRecurrent | FireNet


def firenet_to_plus(sd: dict) -> OrderedDict:
    """Rename an original FireNet ``state_dict`` (``net.*``) to the FireNet+ layout; unknown keys are kept."""
    out = OrderedDict()
    for k, v in sd.items():
        for old, new in FIRENET_TO_PLUS:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------------ checkpoints
#: arch strings of the official files -> network kind (an explicit table: the arch string is never evaluated)
_ARCHS = {"E2VIDRecurrent": "unet", "FireNet": "firenet", "FireNet_legacy": "firenet"}
_REFUSED_ARCHS = {
    "E2VID": "the non-recurrent E2VID (rpg_e2vid 'E2VID', 'unet.*' keys) is not supported; use E2VIDRecurrent",
    "FlowNet": "a flow network, not an intensity reconstructor", "EVFlowNet": "a flow network",
    "WFlowNet": "a flow network", "FlowNetNoRecur": "a flow network",
}


def _config_obj(ck: dict):
    """``ck['config']`` as a plain mapping (a pickled ConfigParser stand-in exposes its ``_config``)."""
    conf = ck.get("config")
    if conf is None or isinstance(conf, dict):
        return conf
    inner = getattr(conf, "__dict__", {}).get("_config")
    return inner if isinstance(inner, dict) else None


def _arch_name(ck: dict) -> str | None:
    arch = ck.get("arch")
    if isinstance(arch, str):
        return arch
    conf = _config_obj(ck)
    if isinstance(conf, dict):
        a = conf.get("arch")
        if isinstance(a, dict) and isinstance(a.get("type"), str):
            return a["type"]
        if isinstance(a, str):
            return a
    return None


def _state_dict_of(ck: dict) -> dict | None:
    sd = ck.get("state_dict", ck)
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        return None
    if all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return sd


def _is_event_cnn_minimal(ck: dict) -> bool:
    """event_cnn_minimal keeps the model in ``config['arch']`` (a dict with ``type``); rpg_e2vid in ``model``."""
    conf = _config_obj(ck)
    return isinstance(conf, dict) and isinstance(conf.get("arch"), dict) and "model" not in ck


def detect_family(ck: dict) -> str | None:
    """``"E2VID"``, ``"E2VID+"``, ``"FireNet"`` or ``"FireNet+"`` for an E2VID-family checkpoint, else ``None``.

    Decided from the checkpoint itself: the ``arch`` name (top-level or ``config['arch']['type']``), the key
    layout (``net.*`` = original FireNet, ``G1.*`` = FireNet+, ``unetrecurrent.*`` with ConvLSTM/ConvGRU gates =
    E2VID / E2VID+), and the config style (rpg_e2vid's ``model`` kwargs = E2VID, event_cnn_minimal's
    ``config['arch']`` block = E2VID+). A bare U-Net ``state_dict`` counts as E2VID when its decoders are
    transposed convolutions (E2VID_lightweight), else as E2VID+. NER-Net files (``representation.*`` keys,
    arch ``RepresentationRecurrent``, livenight's own format) give ``None``.
    """
    if not isinstance(ck, dict) or "livenight_format" in ck:
        return None
    arch = _arch_name(ck)
    if arch is not None and arch not in _ARCHS:
        return None
    sd = _state_dict_of(ck)
    if sd is None:
        return None
    keys = list(sd)
    if any(k.startswith("representation.") for k in keys):
        return None
    if "net.head.conv.conv2d.weight" in sd and "net.head.recurrent_block.update_gate.weight" in sd:
        return "FireNet"
    if "head.conv2d.weight" in sd and "G1.update_gate.weight" in sd:
        return "FireNet+"
    if "unetrecurrent.head.conv2d.weight" in sd and any(
            k.startswith("unetrecurrent.encoders.") and (".Gates." in k or ".update_gate." in k) for k in keys):
        if _is_event_cnn_minimal(ck):
            return "E2VID+"
        conf = _config_obj(ck)
        if "model" in ck or (isinstance(conf, dict) and "model" in conf):
            return "E2VID"
        return "E2VID" if any(".transposed_conv2d." in k for k in keys) else "E2VID+"
    return None


def _none_like(v) -> bool:
    return v is None or (isinstance(v, str) and v.lower() in ("", "none"))


def _refuse_options(kw: dict, fixed: dict, source: str) -> None:
    for key, allowed in fixed.items():
        if key in kw and kw[key] not in allowed and not (None in allowed and _none_like(kw[key])):
            raise EngineMismatchError(f"{source}: checkpoint option {key}={kw[key]!r} is not supported (livenight "
                                      f"implements {key} in {sorted(map(str, allowed))})")


def _count_indexed(sd: dict, prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".", 1)[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def _unet_config(family: str, kw: dict, sd: dict, sensor_size, source: str) -> E2VIDConfig:
    """Config of a U-Net checkpoint: the file's kwargs, with anything it leaves out read off the weights."""
    _refuse_options(kw, {"skip_type": ("sum",), "norm": (None,), "channel_multiplier": (2,)}, source)
    head = sd.get("unetrecurrent.head.conv2d.weight")
    n_enc = _count_indexed(sd, "unetrecurrent.encoders.")
    n_res = _count_indexed(sd, "unetrecurrent.resblocks.")
    if "recurrent_block_type" in kw:
        rec = str(kw["recurrent_block_type"]).lower()
    else:
        rec = "convgru" if any(".recurrent_block.update_gate." in k for k in sd) else "convlstm"
    if rec not in ("convlstm", "convgru"):
        raise EngineMismatchError(f"{source}: recurrent_block_type={rec!r} is not supported (convlstm, convgru)")
    if "use_upsample_conv" in kw:
        upsample = "bilinear" if bool(kw["use_upsample_conv"]) else "transposed"
    else:
        upsample = "transposed" if any(".transposed_conv2d." in k for k in sd) else "bilinear"
    if family == "E2VID":
        act, pad = "sigmoid", "reflect"  # rpg_e2vid: activation='sigmoid' hard-wired; ReflectionPad2d
    else:
        fa = kw.get("final_activation", "")
        if _none_like(fa):
            act = "none"
        elif fa == "sigmoid":
            act = "sigmoid"
        else:
            raise EngineMismatchError(f"{source}: final_activation={fa!r} is not supported ('', 'none', 'sigmoid')")
        pad = "zeros"  # event_cnn_minimal's CropParameters: ZeroPad2d
    return E2VIDConfig(
        family=family,
        num_bins=int(kw.get("num_bins", head.shape[1] if head is not None else 5)),
        base_channels=int(kw.get("base_num_channels", head.shape[0] if head is not None else 32)),
        num_encoders=int(kw.get("num_encoders", n_enc or (4 if family == "E2VID" else 3))),
        num_residual_blocks=int(kw.get("num_residual_blocks", n_res if n_res else 2)),
        kernel_size=int(kw.get("kernel_size", head.shape[-1] if head is not None else 5)),
        recurrent_block=rec, upsample=upsample, final_activation=act, pad_mode=pad,
        sensor_size=tuple(int(v) for v in sensor_size))


def _firenet_config(family: str, kw: dict, sd: dict, sensor_size, source: str) -> FireNetConfig:
    _refuse_options(kw, {"skip_type": ("no_skip", None), "norm": (None,), "recurrent_block_type": ("convgru",),
                         "num_residual_blocks": (2,), "final_activation": (None,)}, source)
    rb = kw.get("recurrent_blocks")
    if rb is not None and (not isinstance(rb, dict) or list(rb.get("resblock", [])) != [0]):
        raise EngineMismatchError(f"{source}: recurrent_blocks={rb!r} is not supported "
                                  "(FireNet has {'resblock': [0]})")
    head = sd.get("head.conv2d.weight")
    return FireNetConfig(family=family,
                         num_bins=int(kw.get("num_bins", head.shape[1] if head is not None else 5)),
                         base_channels=int(kw.get("base_num_channels", head.shape[0] if head is not None else 16)),
                         kernel_size=int(kw.get("kernel_size", head.shape[-1] if head is not None else 3)),
                         sensor_size=tuple(int(v) for v in sensor_size))


def _model_kwargs(ck: dict) -> dict:
    """The architecture kwargs of either format (rpg ``model`` / ``config['model']``; ECM ``arch.args``)."""
    if isinstance(ck.get("model"), dict):
        return dict(ck["model"])
    conf = _config_obj(ck)
    if isinstance(conf, dict):
        if isinstance(conf.get("model"), dict):
            return dict(conf["model"])
        arch = conf.get("arch")
        if isinstance(arch, dict):
            args = dict(arch.get("args") or {})
            return dict(args.get("unet_kwargs") or args)
    return {}


def model_from_checkpoint(ck: dict, sensor_size: tuple[int, int], source: str = "checkpoint",
                          family: str | None = None) -> tuple[E2VIDFamilyModel, str]:
    """Build and strictly load an E2VID-family model from an already read checkpoint dict."""
    found = detect_family(ck)
    arch = _arch_name(ck)
    if arch in _REFUSED_ARCHS:
        raise EngineMismatchError(f"{source}: checkpoint architecture {arch!r}: {_REFUSED_ARCHS[arch]}")
    fam = family or found
    if fam is None:
        raise EngineMismatchError(f"{source}: not an E2VID-family checkpoint (arch {arch!r}; supported: "
                                  f"{', '.join(sorted(_ARCHS))} with the rpg_e2vid or event_cnn_minimal key layout)")
    if fam not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES} (got {fam!r})")
    sd = _state_dict_of(ck)
    if sd is None:
        raise SourceError(f"{source}: no 'state_dict' of tensors (top-level keys: {', '.join(map(str, list(ck)[:8]))})")
    kw = _model_kwargs(ck)
    if fam.startswith("FireNet"):
        if any(k.startswith("net.") for k in sd):
            sd = firenet_to_plus(sd)
        model: E2VIDFamilyModel = FireNet(_firenet_config(fam, kw, sd, sensor_size, source))
    else:
        model = E2VIDRecurrent(_unet_config(fam, kw, sd, sensor_size, source))
    from .checkpoint import check_state_dict

    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
    return model.eval(), fam


def load_e2vid_family(path: str | os.PathLike, sensor_size: tuple[int, int],
                      family: str | None = None) -> tuple[E2VIDFamilyModel, str]:
    """Load an E2VID, E2VID+, FireNet or FireNet+ checkpoint for a ``(width, height)`` source.

    Reads the file without executing pickled code (:func:`livenight.model.checkpoint.read_checkpoint`), recognises
    the family from its content (:func:`detect_family`; ``family=`` overrides it for bare state dicts), builds the
    network from the file's own architecture block (filling gaps from the weights' shapes) and loads the weights
    strictly: missing, unexpected and differently shaped keys are reported by name.

    Returns:
        ``(model in eval mode, family name)``.

    Example:
        >>> model, family = load_e2vid_family("E2VID_lightweight.pth.tar", (346, 260))   # doctest: +SKIP
    """
    from .checkpoint import read_checkpoint

    path = Path(path)
    return model_from_checkpoint(read_checkpoint(path), sensor_size, str(path), family)
