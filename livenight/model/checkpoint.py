"""Loading NER-Net checkpoints safely, and livenight's own checkpoint format.

Accepted files:

* the official ``ner.pth`` exactly as the official trainer writes it: a dict with ``arch``, ``epoch``,
  ``state_dict``, ``optimizer``, ``monitor_best`` and ``config`` = a pickled ``parse_config.ConfigParser``
  (possibly holding ``pathlib.WindowsPath`` objects), tensors saved on ``cuda:0``;
* ``letc.pth``: ``{'state_dict': …}`` with the LETC keys lacking the ``representation.`` prefix;
* a plain ``state_dict``;
* livenight's own format: ``{'livenight_format': 1, 'model': <NERNetConfig as a dict>, 'state_dict': …}``.

Never executing pickled code: the official file needs ``weights_only=False`` (its config is a class instance),
so it is read with a restricted unpickler whose class lookup admits only tensor rebuilding, ``OrderedDict``,
pure paths (``WindowsPath`` → ``PureWindowsPath``, which also unpickles on Linux) and a stand-in for the
config class. Any other global is refused with an error naming it.
"""

from __future__ import annotations

import os
import pickle
import types
from collections import OrderedDict
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from livenight.errors import EngineMismatchError, SourceError

from .nernet import NERNet, NERNetConfig

LIVENIGHT_FORMAT = 1


class ConfigStandIn:
    """Takes the place of the official ``parse_config.ConfigParser`` when unpickling; holds its ``__dict__``."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})

    @property
    def config(self) -> dict:
        return self.__dict__.get("_config", {})


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("parse_config", "ConfigParser"): ConfigStandIn,
    ("pathlib", "WindowsPath"): PureWindowsPath,
    ("pathlib", "PureWindowsPath"): PureWindowsPath,
    ("pathlib", "PosixPath"): PurePosixPath,
    ("pathlib", "PurePosixPath"): PurePosixPath,
    ("pathlib", "Path"): PurePosixPath,
    ("builtins", "object"): object,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
}
_ALLOWED_TORCH = {
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"), ("torch", "device"), ("torch", "dtype"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"),
}
_TORCH_STORAGES = {"FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
                   "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "UntypedStorage"}
_NUMPY_SCALARS = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) == ("copyreg", "_reconstructor"):
            import copyreg

            return copyreg._reconstructor
        if (module, name) in _ALLOWED_TORCH or (module == "torch" and name in _TORCH_STORAGES):
            return super().find_class(module, name)
        if (module, name) in _NUMPY_SCALARS or (module.startswith("numpy") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}': livenight only unpickles tensors, OrderedDict, paths and "
            "the NER-Net config; this file holds something else (it may not be a NER-Net checkpoint, or it may be "
            "unsafe)")


_restricted_pickle = types.ModuleType("livenight_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
_restricted_pickle.__name__ = "pickle"  # torch checks nothing else


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file on the CPU without executing pickled code."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except pickle.UnpicklingError as e:
        raise SourceError(f"{path}: {e}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise SourceError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if isinstance(obj, dict):
        return obj
    raise SourceError(f"{path}: expected a dict (checkpoint or state_dict), got {type(obj).__name__}")


# ------------------------------------------------------------------------------------------- config mapping
#: options of the official config that livenight implements only with these values
_OFFICIAL_FIXED = {"skip_type": "sum", "recurrent_network": "NIAM_STcell_GCB", "use_upsample_conv": True,
                   "final_activation": "", "norm": "", "use_cnn_representation": True, "normalize": False,
                   "combine_voxel": False, "RepCNN_kernel_size": 3, "RepCNN_padding": 1, "RepCNN_num_layers": 1,
                   "use_flow_net": False}


def config_from_official(arch: dict, sensor_size: tuple[int, int]) -> NERNetConfig:
    """Map the official ``config['arch']`` block to a :class:`NERNetConfig`, refusing what is not implemented."""
    if arch.get("type") != "RepresentationRecurrent":
        raise EngineMismatchError(f"checkpoint architecture {arch.get('type')!r} is not supported "
                                  "(livenight implements NER-Net's 'RepresentationRecurrent')")
    kw = dict(arch.get("args", {}).get("unet_kwargs", arch.get("args", {})))
    for key, want in _OFFICIAL_FIXED.items():
        if key in kw and kw[key] not in (want, None) and not (want == "" and kw[key] in ("", None)):
            raise EngineMismatchError(f"checkpoint option {key}={kw[key]!r} is not supported (livenight implements "
                                      f"{key}={want!r})")
    return NERNetConfig(num_bins=int(kw.get("num_bins", 5)), base_channels=int(kw.get("base_num_channels", 32)),
                        num_encoders=int(kw.get("num_encoders", 3)),
                        num_residual_blocks=int(kw.get("num_residual_blocks", 2)),
                        kernel_size=int(kw.get("kernel_size", 5)),
                        mlp_layers=tuple(int(v) for v in kw.get("mlp_layers", (1, 50, 50, 50, 1))),
                        rep_channels=int(kw.get("RepCNN_channel", 64)), sensor_size=tuple(sensor_size))


def _strip_module(sd: dict) -> dict:
    if sd and all(k.startswith("module.") for k in sd):
        return OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return sd


def check_state_dict(model: torch.nn.Module, sd: dict, source: str) -> None:
    """Raise :class:`EngineMismatchError` listing missing / unexpected keys and shape differences by name."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} (model expects {tuple(own[k].shape)})" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes)):
            if items:
                more = f" … (+{len(items) - 6} more)" if len(items) > 6 else ""
                parts.append(f"{label}: {', '.join(items[:6])}{more}")
        raise EngineMismatchError(f"{source}: weights do not match the model — " + "; ".join(parts))


def load_model(path: str | os.PathLike, sensor_size: tuple[int, int], config: NERNetConfig | None = None) -> NERNet:
    """Build a :class:`NERNet` for ``sensor_size`` (width, height) from any accepted checkpoint format."""
    return model_from_checkpoint(read_checkpoint(path), sensor_size, Path(path), config)


def model_from_checkpoint(ck: dict, sensor_size: tuple[int, int], path: str | os.PathLike = "checkpoint",
                          config: NERNetConfig | None = None) -> NERNet:
    """:func:`load_model` for a checkpoint dict already read with :func:`read_checkpoint`."""
    if ck.get("livenight_format") is not None:
        if ck["livenight_format"] != LIVENIGHT_FORMAT:
            raise EngineMismatchError(f"{path}: livenight checkpoint format {ck['livenight_format']} is not supported "
                                      f"(this version reads format {LIVENIGHT_FORMAT})")
        cfg = NERNetConfig.from_dict({**ck["model"], "sensor_size": tuple(sensor_size)})
        sd = ck["state_dict"]
    elif "config" in ck and "state_dict" in ck:
        conf = ck["config"]
        arch = conf.config.get("arch") if isinstance(conf, ConfigStandIn) else (conf or {}).get("arch")
        if not isinstance(arch, dict):
            raise SourceError(f"{path}: the checkpoint's 'config' has no 'arch' block")
        cfg = config_from_official(arch, sensor_size)
        sd = ck["state_dict"]
    else:
        sd = ck.get("state_dict", ck)
        if not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise SourceError(f"{path}: not a NER-Net checkpoint (no 'state_dict' of tensors; top-level keys: "
                              f"{', '.join(map(str, list(ck)[:8]))})")
        cfg = config or NERNetConfig(sensor_size=tuple(sensor_size))
    sd = _strip_module(dict(sd))
    model = NERNet(cfg)
    check_state_dict(model, sd, str(path))
    model.load_state_dict(sd, strict=True)
    return model.eval()


def load_letc(model: NERNet, path: str | os.PathLike, freeze: bool = False) -> None:
    """Load the official ``letc.pth`` (keys without ``representation.``) into ``model.representation``."""
    ck = read_checkpoint(path)
    sd = _strip_module(dict(ck.get("state_dict", ck)))
    sd = OrderedDict((k[len("representation."):] if k.startswith("representation.") else k, v) for k, v in sd.items())
    check_state_dict(model.representation, sd, str(path))
    model.representation.load_state_dict(sd, strict=True)
    if freeze:
        for p in model.representation.parameters():
            p.requires_grad_(False)


def save_model(model: NERNet, path: str | os.PathLike, **extra) -> None:
    """Write livenight's format: weights plus the JSON-compatible model description (loads with weights_only)."""
    cfg = model.cfg.to_dict()
    cfg.pop("sensor_size")  # weights are size-independent; the size comes from the source at load time
    torch.save({"livenight_format": LIVENIGHT_FORMAT, "model": cfg, "state_dict": model.state_dict(), **extra}, path)
