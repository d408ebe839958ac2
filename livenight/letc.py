"""LETC (NER-Net's learned event representation): official time conversion, exact path and a lookup-table path.

Why a table: the LETC value MLP maps one scalar to one scalar, so ``t·MLP(t − i)`` can be tabulated once per
checkpoint over ``u = t − i ∈ [−(C−1), C−1]`` and applied per event with linear interpolation. The MLP is piecewise
linear (LeakyReLU), so a dense table is near exact, and the per-event work drops from ~5,000 multiply-adds to a
dozen. The exact per-event MLP path (:meth:`livenight.model.nernet.NERNet.quantize`) stays the reference and the
training path.

Time handling replicates the official inference bit for bit: timestamps become float32 *seconds*
(``np.float32(t_us / 1e6)`` when the window spans more than 1000 µs), then are normalised in float32 to
``[0, C−1]`` by the window's first and last event. Absolute device clocks (DAVIS / aedat4 timestamps are Unix-epoch
µs) are first rebased to the window's first event: float32 seconds cannot tell their events apart. Windows whose events share one timestamp are left
unnormalised (as officially) and fall back to the exact MLP, since their ``u`` may leave the table.
"""

from __future__ import annotations

import numpy as np

from ._optional import require
from .errors import SourceError
from .events import EVENT_DTYPE

_scatter = None


#: absolute timestamps above this (µs, about 2.4 h) are device or Unix-epoch clocks (DAVIS, aedat4: ~1.7e15 µs),
#: where float32 seconds are 128 s apart and every event of a window would get the same time; they are rebased to
#: the window's first event (in int64) first. The official loader only ever saw RLED times (seconds from the
#: recording's start, far below this), whose conversion stays bit for bit the official one.
REBASE_ABOVE_US = 1 << 33


def official_times(t_us: np.ndarray) -> np.ndarray:
    """float32 times as the official loader makes them: seconds when the window spans > 1000 µs (rebased to the
    window's first event when the clock is absolute, see :data:`REBASE_ABOVE_US`)."""
    if t_us.size and int(t_us[0]) >= REBASE_ABOVE_US:
        t_us = t_us.astype(np.int64) - np.int64(t_us[0])
    t = t_us.astype(np.float64)
    if t.size and t[-1] - t[0] > 1000:
        t = t / 1e6
    return t.astype(np.float32)


def normalised_times(t_us: np.ndarray, num_bins: int) -> tuple[np.ndarray, bool]:
    """``(t, normalised)``: official float32 normalisation to [0, C−1]; unnormalised when first == last."""
    t = official_times(t_us)
    if t.size == 0:
        return t, True
    dt = np.float32(t[-1] - t[0])
    if dt == 0:
        return t, False
    return ((t - t[0]) / dt * np.float32(num_bins - 1)).astype(np.float32), True


def _compile():
    global _scatter
    if _scatter is None:
        require("numba", "the LETC lookup-table path")
        import numba

        # the 'omp' layer's idle threads spin and steal the cores the network, capture and display need between
        # scatters; 'workqueue' threads sleep (takes effect if no parallel numba code has run yet in this process)
        numba.config.THREADING_LAYER = "workqueue"
        from ._letc_kernel import scatter

        def _scatter_fn(*args):
            return scatter(*args, numba.get_num_threads())

        _scatter = _scatter_fn
    return _scatter


class LetcTable:
    """``t·MLP(t − i)`` for every bin i, tabulated over normalised ``t ∈ [0, C−1]`` (float64 evaluation).

    One row per table position holds all C bins, so an event costs one interpolation position and C lookups
    from one cache line. The grid is produced channels-last (``[H, W, 2C]``); :meth:`grid_chw` gives the
    ``[2C, H, W]`` view the network's first convolution takes.

    Example:
        >>> table = LetcTable.from_model(model)                              # doctest: +SKIP
        >>> grid = table.grid_chw(window.events, (346, 260))                 # doctest: +SKIP
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], num_bins: int,
                 size: int = 1 << 16) -> None:
        self.weights = [np.asarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float64) for b in biases]
        self.num_bins = int(num_bins)
        t = np.linspace(0.0, num_bins - 1, size)
        self.values = np.ascontiguousarray(np.stack([t * self.mlp(t - i) for i in range(num_bins)], axis=1))
        self.inv_step = (size - 1) / (num_bins - 1)

    def mlp(self, u: np.ndarray) -> np.ndarray:
        """The LETC value MLP on scalars (LeakyReLU 0.1 between layers), evaluated in the input's precision."""
        x = u[:, None]
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w.T.astype(x.dtype) + b.astype(x.dtype)
            if k < last:
                x = np.where(x > 0, x, x * x.dtype.type(0.1))
        return x[:, 0]

    @classmethod
    def from_model(cls, model, size: int = 1 << 16) -> "LetcTable":
        """Tabulate a :class:`~livenight.model.nernet.NERNet`'s LETC MLP."""
        mlp = model.representation.quantization_layer.value_layer.mlp
        return cls([m.weight.detach().cpu().double().numpy() for m in mlp],
                   [m.bias.detach().cpu().double().numpy() for m in mlp], model.cfg.num_bins, size)

    def to_json(self) -> dict:
        """The MLP weights (for engine sidecars: ONNX / TensorRT engines start after the scatter)."""
        return {"num_bins": self.num_bins, "weights": [w.tolist() for w in self.weights],
                "biases": [b.tolist() for b in self.biases]}

    @classmethod
    def from_json(cls, d: dict, size: int = 1 << 16) -> "LetcTable":
        return cls(d["weights"], d["biases"], d["num_bins"], size)

    def grid(self, events: np.ndarray, sensor_size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        """The ``[H, W, 2C]`` float32 quantisation grid of one window (``out`` is overwritten and reused)."""
        width, height = sensor_size
        if out is None:
            out = np.empty((height, width, 2 * self.num_bins), dtype=np.float32)
        return self._fill(events, sensor_size, out, channels_last=True)

    def grid_into_chw(self, events: np.ndarray, sensor_size: tuple[int, int], out: np.ndarray) -> np.ndarray:
        """Fill a contiguous ``[2C, H, W]`` float32 buffer (an engine's bound input) directly."""
        return self._fill(events, sensor_size, out, channels_last=False)

    def _fill(self, events, sensor_size, out, channels_last: bool) -> np.ndarray:
        if events.dtype != EVENT_DTYPE:
            raise SourceError(f"LETC expects EVENT_DTYPE events (got {events.dtype})")
        width, height = sensor_size
        c = self.num_bins
        x, y = events["x"], events["y"]
        if events.size and (int(x.max()) >= width or int(y.max()) >= height):
            j = int(np.flatnonzero((x >= width) | (y >= height))[0])
            raise SourceError(f"LETC: event {j} at (x={int(x[j])}, y={int(y[j])}) lies outside the "
                              f"{width}x{height} sensor")
        t, normalised = normalised_times(events["t"], c)
        if not normalised:
            hwc = out if channels_last else np.empty((height, width, 2 * c), dtype=np.float32)
            self._exact(events, t, hwc)
            if not channels_last:
                out[...] = hwc.transpose(2, 0, 1)
            return out
        hwc = out if channels_last else out.transpose(1, 2, 0)  # the kernel indexes [H, W, 2C]; views share memory
        _compile()(hwc, np.ascontiguousarray(x), np.ascontiguousarray(y), np.ascontiguousarray(events["p"]), t,
                   self.values, self.inv_step, c)
        return out

    def grid_chw(self, events: np.ndarray, sensor_size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        """``[2C, H, W]`` view (not a copy) of :meth:`grid`."""
        return self.grid(events, sensor_size, out).transpose(2, 0, 1)

    def _exact(self, events, t, out):
        """Direct per-event evaluation (float32, like the official path) for windows the table cannot cover."""
        c = self.num_bins
        out.fill(0.0)
        on = events["p"].astype(bool)
        for i in range(c):
            vals = (t * self.mlp((t - np.float32(i)).astype(np.float32))).astype(np.float32)
            np.add.at(out[..., i], (events["y"][on], events["x"][on]), vals[on])
            np.add.at(out[..., c + i], (events["y"][~on], events["x"][~on]), vals[~on])
        return out


def exact_grid(model, events: np.ndarray, sensor_size: tuple[int, int]) -> np.ndarray:
    """The official per-event MLP quantisation of one window (reference path) as a ``[2C, H, W]`` array."""
    import torch

    t_raw = official_times(events["t"])
    with torch.no_grad():
        g = model.quantize(torch.from_numpy(events["x"].astype(np.int64)), torch.from_numpy(events["y"].astype(np.int64)),
                           torch.from_numpy(t_raw), torch.from_numpy(events["p"].astype(np.float32) * 2 - 1))
    return g[0].numpy()
