"""How a reconstruction is shown: fixed [0, 1] (as in the files), or auto-exposure for display only; plus gamma.

Pure numpy, no Qt: the viewer, the MP4 writer and the benchmark share it. Nothing here changes what the engine
computes or what the PNG files hold; it only maps the 8-bit frame to the 8-bit picture on screen.

Why it is like this:

* **Fixed** shows ``clip(x, 0, 1)·255`` exactly as :func:`livenight.render.to_uint8` writes it (gamma 1 returns
  the frame itself), so what you see is what the files hold.
* **Auto** follows rpg_e2vid's ``--auto_hdr``: per frame it measures the intensity bounds, and the bounds used are
  the *median* of the last ``history`` frames, so the brightness does not flicker with one noisy frame. Unlike
  e2vid (min / max, clipped to ``[0, 0.45]`` and ``[0.55, 1]``) the bounds are robust percentiles (default 1st and
  99th: a few hot pixels cannot set the scale) and only a minimum span ``min_range`` is enforced, so a dark night
  frame can be stretched to full range.
* Everything is a 256-entry lookup table applied with one ``np.take``: the percentiles come from a 256-bin
  histogram (``np.bincount``) of a ≈65k-pixel subsample, so the cost is about one pass over the uint8 frame
  (≈0.7 ms at 1280×720), whatever the settings.
* Event pictures for the screen sum ±1 per event and pixel with one ``np.bincount`` (O(n), no sort) and colour
  each pixel by its majority polarity (ties ON). :func:`livenight.render.event_frame` (the PNG files) colours by
  the *last* event, which needs a sort; the two agree wherever a pixel has one event or one polarity.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np

from livenight.render import EVENT_COLOURS, to_uint8

DisplayMode = Literal["fixed", "auto"]
DISPLAY_MODES: tuple[DisplayMode, ...] = ("fixed", "auto")


def percentile_u8(image: np.ndarray, q: float) -> int:
    """The ``q``-th percentile (0–100) of a uint8 array via a 256-bin histogram (the lower neighbour)."""
    counts = np.cumsum(np.bincount(image.ravel(), minlength=256))
    return percentiles_from_cumsum(counts, (q,))[0]


def percentiles_from_cumsum(cumulative: np.ndarray, qs: tuple[float, ...]) -> list[int]:
    n = int(cumulative[-1])
    if n == 0:
        return [0 for _ in qs]
    targets = [min(max(q, 0.0), 100.0) / 100.0 * (n - 1) for q in qs]
    return [min(255, int(np.searchsorted(cumulative, t, side="right"))) for t in targets]


def gamma_curve(gamma: float) -> np.ndarray:
    """256-entry float64 curve ``(v/255)^(1/gamma)`` in [0, 1]: gamma > 1 lifts the shadows."""
    if not gamma > 0:
        raise ValueError(f"gamma must be positive (got {gamma!r})")
    return (np.arange(256, dtype=np.float64) / 255.0) ** (1.0 / gamma)


class DisplayMapper:
    """Map 8-bit reconstructions to 8-bit display pictures.

    Args:
        mode: ``"fixed"`` (the file's [0, 1] scale) or ``"auto"`` (auto-exposure for display only).
        gamma: display gamma; output = input^(1/gamma) after exposure (1 = unchanged, 2.2 lifts shadows).
        low_percentile, high_percentile: auto mode: the intensities mapped to black and white.
        history: auto mode: frames over which the bounds are median-filtered (rpg_e2vid's
            ``auto_hdr_median_filter_size``, default 10).
        min_range: auto mode: the smallest span of input, as a fraction of full scale, stretched to full range
            (keeps a flat frame from turning noise into full contrast).

    Example:
        >>> import numpy as np
        >>> m = DisplayMapper("auto", gamma=1.0)
        >>> out = m(np.full((4, 4), 60, np.uint8))   # a flat dark frame is not stretched beyond min_range
        >>> out.dtype, out.shape
        (dtype('uint8'), (4, 4))
    """

    def __init__(self, mode: DisplayMode = "fixed", gamma: float = 1.0, low_percentile: float = 1.0,
                 high_percentile: float = 99.0, history: int = 10, min_range: float = 0.1) -> None:
        if mode not in DISPLAY_MODES:
            raise ValueError(f"display mode must be one of {', '.join(DISPLAY_MODES)} (got {mode!r})")
        if not 0.0 <= low_percentile < high_percentile <= 100.0:
            raise ValueError(f"need 0 <= low_percentile < high_percentile <= 100 "
                             f"(got {low_percentile}, {high_percentile})")
        if history < 1:
            raise ValueError(f"history must be >= 1 frame (got {history})")
        if not 0.0 < min_range <= 1.0:
            raise ValueError(f"min_range must be in (0, 1] (got {min_range})")
        self.mode: DisplayMode = mode
        self.low_percentile = float(low_percentile)
        self.high_percentile = float(high_percentile)
        self.min_range = float(min_range)
        self._bounds: deque[tuple[float, float]] = deque(maxlen=int(history))
        self._gamma_curve = gamma_curve(gamma)
        self.gamma = float(gamma)
        self.low, self.high = 0.0, 1.0  # bounds used for the last frame, as fractions of full scale

    # ------------------------------------------------------------------ settings
    def set_gamma(self, gamma: float) -> None:
        self._gamma_curve = gamma_curve(gamma)
        self.gamma = float(gamma)

    def set_mode(self, mode: DisplayMode) -> None:
        if mode not in DISPLAY_MODES:
            raise ValueError(f"display mode must be one of {', '.join(DISPLAY_MODES)} (got {mode!r})")
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        """Forget the auto-exposure history (e.g. after a scene change)."""
        self._bounds.clear()
        self.low, self.high = 0.0, 1.0

    def label(self) -> str:
        """Short description for the status line, e.g. ``auto 2–87% γ2.2``."""
        text = "fixed [0,1]" if self.mode == "fixed" else f"auto {100 * self.low:.0f}–{100 * self.high:.0f}%"
        return text + ("" if self.gamma == 1.0 else f" γ{self.gamma:g}")

    # ------------------------------------------------------------------ mapping
    def measure(self, image: np.ndarray) -> tuple[float, float]:
        """This frame's robust bounds (fractions of full scale), before temporal smoothing.

        Frames above 2^16 pixels are measured on a regular subsample of about 2^16 pixels (every 3rd row and
        column at 1280×720): percentiles of a smooth picture do not need every pixel.
        """
        step = max(1, int(np.sqrt(image.size / 65536.0)))
        sample = image[::step, ::step] if step > 1 else image
        cumulative = np.cumsum(np.bincount(sample.ravel(), minlength=256))
        lo, hi = percentiles_from_cumsum(cumulative, (self.low_percentile, self.high_percentile))
        return lo / 255.0, hi / 255.0

    def _update_bounds(self, image: np.ndarray) -> None:
        self._bounds.append(self.measure(image))
        lo = float(np.median([b[0] for b in self._bounds]))
        hi = float(np.median([b[1] for b in self._bounds]))
        if hi - lo < self.min_range:  # widen around the centre, staying inside [0, 1]
            centre = min(max((lo + hi) / 2.0, self.min_range / 2.0), 1.0 - self.min_range / 2.0)
            lo, hi = centre - self.min_range / 2.0, centre + self.min_range / 2.0
        self.low, self.high = lo, hi

    def lut(self) -> np.ndarray:
        """The 256-entry uint8 table for the current bounds and gamma."""
        v = np.arange(256, dtype=np.float64) / 255.0
        scaled = np.clip((v - self.low) / (self.high - self.low), 0.0, 1.0)
        idx = np.rint(scaled * 255.0).astype(np.int64)
        return np.rint(self._gamma_curve[idx] * 255.0).astype(np.uint8)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Map one (H, W) frame (uint8, or float in [0, 1] converted as the files are) to uint8.

        The input is never modified; in fixed mode with gamma 1 the (uint8) input itself is returned.
        """
        if image.dtype != np.uint8:
            image = to_uint8(image)
        if self.mode == "auto":
            self._update_bounds(image)
        elif self.gamma == 1.0:
            return image
        return np.take(self.lut(), image)


def event_rgb(events: np.ndarray, sensor_size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 picture of a window's events for the screen: each pixel coloured by its majority polarity
    (ON red, OFF blue, ties ON) on white, as :data:`livenight.render.EVENT_COLOURS`. O(n), no sort.

    Args:
        events: :data:`~livenight.events.EVENT_DTYPE` array.
        sensor_size: ``(width, height)``.
        out: optional (H, W, 3) uint8 buffer to reuse.
    """
    width, height = (int(v) for v in sensor_size)
    if out is None or out.shape != (height, width, 3) or out.dtype != np.uint8:
        out = np.empty((height, width, 3), dtype=np.uint8)
    flat_out = out.reshape(-1, 3)
    background = EVENT_COLOURS["background"]
    if len(set(background)) == 1:
        out.fill(background[0])  # 100x faster than broadcasting a colour over every pixel
    else:
        flat_out[...] = background
    if events.size and (int(events["x"].max()) >= width or int(events["y"].max()) >= height):
        events = events[(events["x"] < width) & (events["y"] < height)]  # never draw outside the sensor
    if events.size:
        pix = events["y"].astype(np.intp) * width + events["x"]
        sign = events["p"].astype(np.float64) * 2.0 - 1.0  # p is 0 / 1 (EVENT_DTYPE)
        net = np.bincount(pix, weights=sign, minlength=width * height)[pix]  # ON minus OFF, per event's pixel
        # only pixels that saw events are written; repeated indices get the same colour, so order is irrelevant
        flat_out[pix[net >= 0]] = EVENT_COLOURS["on"]
        flat_out[pix[net < 0]] = EVENT_COLOURS["off"]
    return out
