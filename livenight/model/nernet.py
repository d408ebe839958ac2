"""NER-Net (Liu et al., CVPR 2024), reimplemented from the architecture facts in ``shared/reference/ner-net.md``.

Module and attribute names reproduce the official ``state_dict`` keys exactly (``representation.*`` for LETC,
``unetrecurrent.*`` for the recurrent U-Net), so the official ``ner.pth`` loads strictly.

Split for engines and export: :meth:`NERNet.forward` takes the LETC *quantisation* grid ``[B, 2·C, H, W]``
(the data-dependent per-event scatter stays outside the graph; see :mod:`livenight.letc`) and runs the LETC CNN,
the zero padding to multiples of ``2**num_encoders`` and the U-Net. The recurrent state is an explicit flat tuple
``(h_0..h_{n-1}, c_0..c_{n-1}, m)`` in and out, so ONNX Runtime and TensorRT see it as named I/O.

Quirks kept on purpose (they are in the trained weights' behaviour): the forget gate goes through a sigmoid
twice; the memory upsampler's first "skip" adds the deepest memory to itself (``2·m``); every up/down conv is
followed by ReLU; there is no output activation; top/left padding gets the larger half.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvLayer, ResidualBlock, UNetPadding, UpsampleConvLayer, space_to_depth


@dataclass(frozen=True)
class NERNetConfig(UNetPadding):
    """Architecture of one NER-Net-family model; the official NER-Net is the default."""

    num_bins: int = 5
    base_channels: int = 32
    num_encoders: int = 3
    num_residual_blocks: int = 2
    kernel_size: int = 5
    mlp_layers: tuple[int, ...] = (1, 50, 50, 50, 1)
    rep_channels: int = 64
    gcb_ratio: int = 4
    sensor_size: tuple[int, int] = (346, 260)  # (width, height) of the LETC grid (unpadded)
    arch: str = field(default="NERNet")
    # Speed options (the defaults are the official architecture and keep its state_dict byte-identical):
    # stem_stride s > 1 folds each s×s block of the representation into channels (pixel unshuffle: no event is
    # dropped) before the head convolution, so the whole recurrent U-Net runs at 1/s resolution; the prediction
    # layer outputs s² channels that a pixel shuffle turns back into the full-resolution image.
    stem_stride: int = 1
    pred_kernel: int = 1  # kernel of the prediction convolution (the official network: 1×1)
    letc_cnn: bool = True  # False: no full-resolution LETC CNN (the quantised grid goes straight to the U-Net)

    def __post_init__(self) -> None:
        if not isinstance(self.letc_cnn, bool):
            raise ValueError(f"NERNetConfig.letc_cnn must be true or false (got {self.letc_cnn!r})")
        for name in ("stem_stride", "pred_kernel"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"NERNetConfig.{name} must be an integer >= 1 (got {v!r})")
        if self.pred_kernel % 2 == 0:
            raise ValueError(f"NERNetConfig.pred_kernel must be odd (got {self.pred_kernel})")

    @property
    def in_channels(self) -> int:
        return 2 * self.num_bins

    @property
    def pad_multiple(self) -> int:
        return 2 ** self.num_encoders * self.stem_stride

    def state_shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the recurrent state tensors, in the order of the state tuple."""
        wp, hp = (v // self.stem_stride for v in self.padded_size)
        hs = {f"h{i}": (batch, self.base_channels * 2 ** (i + 1), hp >> (i + 1), wp >> (i + 1))
              for i in range(self.num_encoders)}
        cs = {f"c{i}": shape for i, shape in enumerate(hs.values())}
        return {**hs, **cs, "m": (batch, self.base_channels, hp, wp)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mlp_layers"] = list(self.mlp_layers)
        d["sensor_size"] = list(self.sensor_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NERNetConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown NER-Net config keys {unknown}")
        if "mlp_layers" in known:
            known["mlp_layers"] = tuple(int(v) for v in known["mlp_layers"])
        if "sensor_size" in known:
            known["sensor_size"] = tuple(int(v) for v in known["sensor_size"])
        return cls(**known)


# ----------------------------------------------------------------------------------------------- LETC
class ValueLayer(nn.Module):
    """The scalar → scalar MLP (LeakyReLU 0.1 between layers, none after the last)."""

    def __init__(self, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(layers[:-1], layers[1:]))

    def forward(self, u: Tensor) -> Tensor:
        x = u[..., None]
        for i, lin in enumerate(self.mlp):
            x = lin(x)
            if i < len(self.mlp) - 1:
                x = F.leaky_relu(x, 0.1)
        return x[..., 0]


class QuantizationLayer(nn.Module):
    """Per-event exact LETC quantisation (the official ``QuantizationLayer_trail``): the reference path."""

    def __init__(self, cfg: NERNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.value_layer = ValueLayer(cfg.mlp_layers)

    def forward(self, x: Tensor, y: Tensor, t: Tensor, p: Tensor) -> Tensor:
        """Events of ONE window (time-sorted): x, y integer; t float32 (any unit); p ±1. Returns [1, 2C, H, W].

        t is normalised as the official code does: ``(t − t_first) / (t_last − t_first) · (C−1)`` in float32,
        left unnormalised when the window has a single timestamp.
        """
        return self.scatter(x, y, t, p, self.value_layer)

    def scatter(self, x: Tensor, y: Tensor, t: Tensor, p: Tensor, value) -> Tensor:
        """The quantisation with another value function ``value(u)`` in place of the MLP (training uses a
        differentiable table of it): each event adds ``t · value(t − i)`` to bin ``i`` of its polarity."""
        c = self.cfg.num_bins
        w, h = self.cfg.sensor_size
        grid = torch.zeros(2 * c * h * w, dtype=torch.float32, device=t.device)
        if t.numel():
            dt = t[-1] - t[0]
            if dt != 0:
                t = (t - t[0]) / dt * (c - 1)
            pol = ((p + 1) / 2).long()
            base = x.long() + w * y.long() + w * h * c * pol
            for i in range(c):
                grid.index_put_((base + w * h * i,), t * value(t - i), accumulate=True)
        v = grid.view(1, 2, c, h, w)
        return torch.cat([v[:, 1], v[:, 0]], dim=1)  # ON bins first


class RepresentationCNN(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1, bias=False), nn.ReLU(),
                                 nn.Conv2d(hidden, channels, 3, padding=1, bias=False))

    def forward(self, v: Tensor) -> Tensor:
        return self.cnn(v)


class LETC(nn.Module):
    def __init__(self, cfg: NERNetConfig) -> None:
        super().__init__()
        self.quantization_layer = QuantizationLayer(cfg)
        if cfg.letc_cnn:
            self.ConvLayer = RepresentationCNN(cfg.in_channels, cfg.rep_channels)


# ----------------------------------------------------------------------------------------------- U-Net parts
class ContextBlock(nn.Module):
    """GCNet global-context block: attention pooling + channel-add fusion."""

    def __init__(self, c: int, ratio: int) -> None:
        super().__init__()
        planes = c // ratio
        self.conv_mask = nn.Conv2d(c, 1, 1)
        self.channel_add_conv = nn.Sequential(nn.Conv2d(c, planes, 1), nn.LayerNorm([planes, 1, 1]), nn.PReLU(),
                                              nn.Conv2d(planes, c, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        attn = torch.softmax(self.conv_mask(x).view(b, 1, h * w), dim=2)  # [B,1,HW]
        ctx = torch.matmul(x.view(b, c, h * w), attn.transpose(1, 2)).view(b, c, 1, 1)
        return x + self.channel_add_conv(ctx)


class STCell(nn.Module):
    """PredRNN-style spatiotemporal LSTM with a local adaptation gate (the official ``NAM_withoutGCB``)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.conv_x = nn.Sequential(nn.Conv2d(n, 7 * n, 3, 1, 1, bias=False))
        self.conv_h = nn.Sequential(nn.Conv2d(n, 4 * n, 3, 1, 1, bias=False))
        self.conv_m = nn.Sequential(nn.Conv2d(n, 3 * n, 3, 1, 1, bias=False))
        self.conv_o = nn.Sequential(nn.Conv2d(2 * n, n, 3, 1, 1, bias=False))
        self.conv_last = nn.Conv2d(2 * n, n, 1, bias=False)
        self.LAG_conv = nn.Conv2d(n, n, 1, bias=False)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = self.n
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = torch.split(self.conv_x(x), n, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), n, dim=1)
        i_m, f_m, g_m = torch.split(self.conv_m(m), n, dim=1)
        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(f_x + f_h + 1.0)
        alpha = torch.exp(torch.sigmoid(self.LAG_conv(x)))
        f = torch.sigmoid(f - alpha * i)
        c_new = f * c + i * torch.tanh(g_x + g_h)
        m_new = torch.sigmoid(f_xp + f_m + 1.0) * m + torch.sigmoid(i_xp + i_m) * torch.tanh(g_xp + g_m)
        mem = torch.cat([c_new, m_new], dim=1)
        o = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new


class EncoderLevel(nn.Module):
    """Global context → stride-2 conv → ST-LSTM; the memory is downsampled alongside."""

    def __init__(self, cin: int, cout: int, k: int, ratio: int) -> None:
        super().__init__()
        self.conv_1x1 = nn.Conv2d(cin, cin, 1, bias=True)
        self.GCB = ContextBlock(cin, ratio)
        self.conv = ConvLayer(cin, cout, k, 2, k // 2)
        self.conv_mem = ConvLayer(cin, cout, k, 2, k // 2)
        self.recurrent_block = STCell(cout)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = x + self.GCB(self.conv_1x1(x))
        return self.recurrent_block(self.conv(x), h, c, self.conv_mem(m))


class RecurrentUNet(nn.Module):
    def __init__(self, cfg: NERNetConfig) -> None:
        super().__init__()
        b, k, n_enc = cfg.base_channels, cfg.kernel_size, cfg.num_encoders
        self.num_encoders = n_enc
        self.stem_stride = s = cfg.stem_stride
        self.head = ConvLayer(cfg.in_channels * s * s, b, k, 1, k // 2)
        self.encoders = nn.ModuleList(EncoderLevel(b * 2 ** i, b * 2 ** (i + 1), k, cfg.gcb_ratio)
                                      for i in range(n_enc))
        deep = b * 2 ** n_enc
        self.resblocks = nn.ModuleList(ResidualBlock(deep) for _ in range(cfg.num_residual_blocks))
        self.decoders = nn.ModuleList(UpsampleConvLayer(deep >> j, deep >> (j + 1), k) for j in range(n_enc))
        self.m_t_UpsampleLayer = nn.ModuleList(UpsampleConvLayer(deep >> j, deep >> (j + 1), k)
                                               for j in range(n_enc))
        self.pred = ConvLayer(b, s * s, cfg.pred_kernel, padding=cfg.pred_kernel // 2, relu=False)

    def forward(self, v: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        n = self.num_encoders
        hs, cs, m = list(state[:n]), list(state[n:2 * n]), state[2 * n]
        if self.stem_stride > 1:
            v = space_to_depth(v, self.stem_stride)
        head = self.head(v)
        x = head
        ms = []
        for i, enc in enumerate(self.encoders):
            hs[i], cs[i], m = enc(x, hs[i], cs[i], m)
            ms.append(m)
            x = hs[i]
        mm = ms[-1]
        for j, up in enumerate(self.m_t_UpsampleLayer):
            mm = up(mm + ms[n - 1 - j])  # j = 0 adds the deepest memory to itself: the official 2·m quirk
        x = hs[-1]
        for rb in self.resblocks:
            x = rb(x)
        for j, dec in enumerate(self.decoders):
            x = dec(x + hs[n - 1 - j])
        img = self.pred(x + head)
        if self.stem_stride > 1:
            img = F.pixel_shuffle(img, self.stem_stride)
        return img, (*hs, *cs, mm)


class NERNet(nn.Module):
    """LETC + recurrent U-Net. ``forward(grid, state) -> (image, state)``.

    Args:
        cfg: the architecture (official NER-Net by default; widths and depth are free).

    Example:
        >>> cfg = NERNetConfig(sensor_size=(64, 48), base_channels=8)
        >>> net = NERNet(cfg)
        >>> img, state = net(torch.zeros(1, 10, 48, 64), net.initial_state())
        >>> tuple(img.shape)
        (1, 1, 48, 64)
    """

    def __init__(self, cfg: NERNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or NERNetConfig()
        self.representation = LETC(self.cfg)
        self.unetrecurrent = RecurrentUNet(self.cfg)

    @property
    def state_names(self) -> list[str]:
        return list(self.cfg.state_shapes())

    def initial_state(self, batch: int = 1, device=None, dtype=torch.float32) -> tuple[Tensor, ...]:
        """Zeros for every state tensor (the official first-frame state)."""
        return tuple(torch.zeros(s, device=device, dtype=dtype) for s in self.cfg.state_shapes(batch).values())

    def quantize(self, x: Tensor, y: Tensor, t: Tensor, p: Tensor) -> Tensor:
        """Exact per-event LETC quantisation of one window → ``[1, 2C, H, W]`` (training / reference path)."""
        return self.representation.quantization_layer(x, y, t, p)

    def forward(self, grid: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        v = self.representation.ConvLayer(grid) if self.cfg.letc_cnn else grid
        v = F.pad(v, self.cfg.padding())
        return self.unetrecurrent(v, tuple(state))
