"""The NER-Net family: the official NER-Net and livenight's smaller NER-Net-family models (bundled weights).

Input: LETC's quantisation grid ``[2C, H, W]`` from a lookup table of the learned MLP (numba scatter, outside the
graph; exported sidecars carry the MLP weights) or, for ``exact=True``, the official per-event MLP on the CPU in
float32 (the reference path whose frames match the official inference bit for bit). Output: the padded image as
the official code returns it, no activation; the engine crops it when asked.
Windows: the RLED protocol (±10 ms around each reference image) when the recording has ``event_indices``, else
20 ms every 40 ms, like the official inference; a bundled model's metadata names its own (contiguous windows).
"""

from __future__ import annotations

import copy

import numpy as np

from .base import ModelFamily


class LetcRepresentation:
    """LETC by lookup table (the default)."""

    def __init__(self, table) -> None:
        self.table = table
        self.channels = 2 * table.num_bins

    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int], out: np.ndarray) -> np.ndarray:
        return self.table.grid_into_chw(events, sensor_size, out)

    def to_json(self) -> dict:
        return {"kind": "letc", **self.table.to_json()}


class ExactLetcRepresentation:
    """The official per-event MLP, on a float32 CPU copy of the model's quantisation layer (so it works whatever
    device and precision the network itself runs in)."""

    def __init__(self, model) -> None:
        import torch

        self._torch = torch
        self.layer = copy.deepcopy(model.representation.quantization_layer).float().cpu().eval()
        self.channels = model.cfg.in_channels

    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int], out: np.ndarray) -> np.ndarray:
        from livenight.letc import official_times

        torch = self._torch
        with torch.no_grad():
            g = self.layer(torch.from_numpy(events["x"].astype(np.int64)), torch.from_numpy(events["y"].astype(np.int64)),
                           torch.from_numpy(official_times(events["t"])),
                           torch.from_numpy(events["p"].astype(np.float32) * 2 - 1))
        out[...] = g[0].numpy()
        return out

    def to_json(self) -> dict:
        raise ValueError("the exact LETC path is a torch reference path; exported engines use the lookup table")


class NERNetFamily(ModelFamily):
    name = "nernet"
    title = "NER-Net"
    default_window_us = (20_000, 40_000)  # ±10 ms every 40 ms: the RLED protocol where no event_indices exist
    rled_by_default = True

    def owns(self, model) -> bool:
        from livenight.model.nernet import NERNet

        return isinstance(model, NERNet)

    def detect(self, checkpoint: dict) -> int:
        if checkpoint.get("livenight_format") is not None:
            return 2 if checkpoint.get("family", self.name) == self.name else 0
        conf = checkpoint.get("config")
        arch = getattr(conf, "config", conf if isinstance(conf, dict) else {}).get("arch") if conf is not None else None
        if isinstance(arch, dict) and arch.get("type") == "RepresentationRecurrent":
            return 2
        sd = checkpoint.get("state_dict", checkpoint)
        if isinstance(sd, dict) and any(str(k).startswith(("representation.", "module.representation.")) for k in sd):
            return 2
        return 1  # a bare state_dict: try NER-Net last, so a mismatch names the keys

    def from_checkpoint(self, checkpoint: dict, sensor_size, source: str):
        from livenight.model.checkpoint import model_from_checkpoint

        return model_from_checkpoint(checkpoint, sensor_size, source)

    def from_config(self, config: dict, sensor_size):
        from livenight.model.nernet import NERNet, NERNetConfig

        return NERNet(NERNetConfig.from_dict({**config, "sensor_size": tuple(sensor_size)}))

    def training_events(self, x, y, t_us, p) -> tuple:
        """``(x, y, t, p)`` as the differentiable LETC quantisation takes them: int64 coordinates, float32 times
        (:func:`~livenight.letc.official_times`, as inference converts them), p = ±1 float32. An empty window
        becomes the official dummy event ``(0, 0, 0, ON)``, which quantises to an all-zero grid."""
        from livenight.letc import official_times

        if len(x) == 0:
            return (np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.float32), np.ones(1, np.float32))
        return (np.asarray(x, np.int64), np.asarray(y, np.int64), official_times(np.asarray(t_us)),
                np.asarray(p).astype(np.float32) * 2 - 1)

    def training_input(self, model, events: tuple):
        """The exact, differentiable LETC quantisation (the trainer has faster variants for NER-Net too)."""
        return model.quantize(*events)

    def representation(self, model, exact: bool = False, **_):
        if exact:
            return ExactLetcRepresentation(model)
        from livenight.letc import LetcTable

        return LetcRepresentation(LetcTable.from_model(model))

    def representation_from_json(self, d: dict):
        from livenight.letc import LetcTable

        return LetcRepresentation(LetcTable.from_json(d))


FAMILY = NERNetFamily()
