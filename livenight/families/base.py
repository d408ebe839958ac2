"""What a model family is: everything about a network that is not its weights or the backend that runs it.

Why it is like this: a backend (torch, ONNX Runtime, TensorRT) only turns an input array plus a recurrent state
into an output array. Everything family-specific sits here, once: recognising a checkpoint from its content,
building the network for a sensor size, the input representation (pure numpy/numba, so every backend shares it),
the post-processing, the description written into exported engines' sidecars, and the default window policy.

A family is one module with a ``FAMILY`` object (a :class:`ModelFamily`) plus one row in
:data:`livenight.families._FAMILIES`. Its network must follow the model contract: ``forward(x, state) ->
(image, state)`` with ``x`` of shape ``[1, C, H, W]`` at the sensor size and ``image`` ``[1, 1, Hp, Wp]`` at the
padded size; ``state_names``, ``initial_state(batch, device, dtype)``; and a ``cfg`` with ``sensor_size``,
``padded_size``, ``padding()`` (left, right, top, bottom), ``state_shapes()``, ``in_channels`` and ``to_dict()``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from livenight.windowing import RledWindows, TimeWindows, WindowPolicy, windows_from_meta


class Representation(Protocol):
    """Events of one window → the network input ``[C, H, W]`` float32 (written into ``out``, which is returned)."""

    channels: int

    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int], out: np.ndarray) -> np.ndarray: ...

    def to_json(self) -> dict: ...


class Postprocess:
    """Padded network output ``[Hp, Wp]`` float32 → the frame (float32, nominally in [0, 1]).

    The default crops to the sensor (``crop`` is ``(left, top, width, height)`` or None) and does nothing else.
    Families with stateful post-processing (E2VID's auto-HDR) override :meth:`reset` too.
    """

    def __call__(self, img: np.ndarray, crop: tuple[int, int, int, int] | None) -> np.ndarray:
        return crop_to(img, crop)

    def reset(self) -> None:
        pass

    def to_json(self) -> dict:
        return {}


def crop_to(img: np.ndarray, crop: tuple[int, int, int, int] | None) -> np.ndarray:
    if crop is None:
        return img
    left, top, w, h = crop
    return img[top:top + h, left:left + w]


class ModelFamily:
    """Base class of model families (override what differs; see the module docstring)."""

    name: str = ""
    #: what ``livenight doctor`` and errors show
    title: str = ""
    #: whether engines crop the padded output to the sensor unless told otherwise (the family's official frames)
    crop_by_default: bool = False

    def owns(self, model) -> bool:
        """Whether a built network belongs to this family."""
        return False

    def check(self, model) -> None:
        """Refuse a network this family cannot run (raise :class:`~livenight.errors.EngineMismatchError`)."""

    def variant(self, model_or_config) -> str:
        """The label engines show (e.g. ``FireNet+`` within the E2VID family)."""
        return self.title or self.name

    # --- recognising and building -----------------------------------------------------------------------
    def detect(self, checkpoint: dict) -> int:
        """2: this checkpoint is surely ours; 1: ours if no family is sure (a fallback); 0: not ours."""
        return 2 if checkpoint.get("family") == self.name else 0

    def from_checkpoint(self, checkpoint: dict, sensor_size: tuple[int, int], source: str):
        """Build the network for ``sensor_size`` and load the checkpoint's weights strictly (eval mode)."""
        from livenight.model.checkpoint import check_state_dict

        model = self.from_config(checkpoint.get("model", {}), sensor_size)
        sd = checkpoint["state_dict"]
        check_state_dict(model, sd, source)
        model.load_state_dict(sd, strict=True)
        return model.eval()

    def from_config(self, config: dict, sensor_size: tuple[int, int]):
        """A freshly initialised network from a config dict (training, tests)."""
        raise NotImplementedError

    def config_of(self, model) -> dict:
        """The size-independent config dict of a built network (what checkpoints and sidecars store)."""
        cfg = dict(model.cfg.to_dict())
        cfg.pop("sensor_size", None)
        return cfg

    # --- input and output ---------------------------------------------------------------------------------
    def representation(self, model, **options) -> Representation:
        raise NotImplementedError

    def representation_from_json(self, d: dict) -> Representation:
        raise NotImplementedError

    def postprocess(self, config: dict, **options) -> Postprocess:
        return Postprocess()

    #: the windows this family was trained with, when a model's metadata names none: ``(window_us, stride_us)``
    default_window_us: tuple[int, int] = (40_000, 40_000)
    #: on a recording with RLED ``event_indices``, use them (the official NER-Net / E2VID protocol)
    rled_by_default: bool = False

    def default_windows(self, meta: dict | None = None, event_indices=None) -> WindowPolicy:
        """The window policy a model of this family was trained with: its metadata's ``windows`` when it names
        them, else the recording's RLED ``event_indices`` (families that use them), else time windows."""
        named = windows_from_meta(meta)
        if named is not None:
            return named
        if self.rled_by_default and event_indices is not None:
            return RledWindows(event_indices)
        return TimeWindows(*self.default_window_us)

    # --- export -------------------------------------------------------------------------------------------
    def describe(self, model, **post_options) -> dict[str, Any]:
        """The family block of an export sidecar: enough to rebuild representation and post-processing."""
        config = self.config_of(model)
        return {"name": self.name, "config": config, "representation": self.representation(model).to_json(),
                "postprocess": self.postprocess(config, **post_options).to_json()}

    def postprocess_from_json(self, config: dict, d: dict) -> Postprocess:
        return self.postprocess(config, **d)

    # --- training (livenight.training builds any registered family through these) ----------------------------
    def training_events(self, x, y, t_us, p) -> tuple:
        """What a training sequence keeps for one window (numpy arrays; the trainer moves them to the device as
        tensors). Default: the events themselves, for :meth:`training_input`."""
        return (np.asarray(x, np.int64), np.asarray(y, np.int64), np.asarray(t_us, np.int64),
                np.asarray(p, np.uint8))

    def training_input(self, model, events: tuple):
        """The network input ``[1, C, h, w]`` of one window during training, from :meth:`training_events`' arrays
        as tensors. Default: the inference representation (numpy), so training sees what inference feeds;
        families with a trainable representation (NER-Net's LETC) differentiate through theirs instead."""
        import torch

        from livenight.events import make_events

        x, y, t, p = (a.detach().cpu().numpy() for a in events)
        rep = getattr(model, "_livenight_training_rep", None)
        if rep is None:
            rep = self.representation(model)
            object.__setattr__(model, "_livenight_training_rep", rep)
        w, h = model.cfg.sensor_size
        out = np.zeros((rep.channels, h, w), dtype=np.float32)
        rep(make_events(t, x, y, p), (w, h), out)
        return torch.from_numpy(out)[None].to(next(model.parameters()).device)

    # --- livenight's own checkpoint format ------------------------------------------------------------------
    def save(self, model, path, **extra) -> None:
        """Weights + the size-independent config + the family name (loads with ``weights_only``)."""
        import torch

        from livenight.model.checkpoint import LIVENIGHT_FORMAT

        torch.save({"livenight_format": LIVENIGHT_FORMAT, "family": self.name, "model": self.config_of(model),
                    "state_dict": model.state_dict(), **extra}, path)
