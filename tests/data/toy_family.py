"""A toy model family, as a user would add one: this file plus one row in livenight.families._FAMILIES.

Input: per-pixel ON and OFF event counts (2 channels). Network: one 3x3 convolution mixing the input with a
4-channel recurrent state, then a 1x1 convolution to the image; no padding.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from livenight.families.base import ModelFamily


@dataclass(frozen=True)
class ToyConfig:
    hidden: int = 4
    sensor_size: tuple = (32, 24)
    in_channels = 2
    padded_size = property(lambda self: tuple(self.sensor_size))

    def padding(self):
        return 0, 0, 0, 0

    def state_shapes(self, batch=1):
        w, h = self.sensor_size
        return {"h": (batch, self.hidden, h, w)}

    def to_dict(self):
        return {**asdict(self), "sensor_size": list(self.sensor_size)}


class ToyNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.mix = nn.Conv2d(2 + cfg.hidden, cfg.hidden, 3, padding=1)
        self.out = nn.Conv2d(cfg.hidden, 1, 1)

    state_names = property(lambda self: list(self.cfg.state_shapes()))

    def initial_state(self, batch=1, device=None, dtype=torch.float32):
        return tuple(torch.zeros(s, device=device, dtype=dtype) for s in self.cfg.state_shapes(batch).values())

    def forward(self, x, state):
        h = torch.tanh(self.mix(torch.cat([x, state[0]], 1)))
        return torch.sigmoid(self.out(h)), (h,)


class Counts:
    channels = 2

    def __call__(self, events, sensor_size, out):
        w, h = sensor_size
        out.fill(0)
        np.add.at(out, (events["p"].astype(np.int64), events["y"].astype(np.int64), events["x"].astype(np.int64)), 1.0)
        return out

    def to_json(self):
        return {"kind": "counts"}


class ToyFamily(ModelFamily):
    name = "toy"
    title = "Toy"
    crop_by_default = True

    def owns(self, model):
        return isinstance(model, ToyNet)

    def from_config(self, config, sensor_size):
        return ToyNet(ToyConfig(**{k: v for k, v in config.items() if k != "sensor_size"},
                                sensor_size=tuple(sensor_size)))

    def representation(self, model, **_):
        return Counts()

    def representation_from_json(self, d):
        return Counts()


FAMILY = ToyFamily()
