"""MP4 output with PyAV: the headless ``--video out.mp4`` sink and the viewer's V-key recorder. No Qt.

Why it is like this:

* One class, two uses. As a :class:`~livenight.sinks.FrameSink` (``write(frame)``) it encodes every
  reconstruction; the viewer calls :meth:`VideoSink.write_image` with the picture it just showed (after
  auto-exposure and gamma) and the status line.
* H.264 (``libx264``, ``yuv420p``: plays everywhere) when PyAV's FFmpeg has it, else MPEG-4 Part 2. yuv420p needs
  even sizes, so odd frames are padded with black on the right / bottom.
* Timing: ``"index"`` gives one video frame per reconstruction at ``fps`` (offline: the video is as long as the
  recording only if ``fps`` matches the window stride); ``"stream"`` stamps each frame with its window end
  ``t1_us`` (variable frame rate: skipped windows and pauses keep real time); :meth:`write_image` takes a wall
  clock time. Timestamps are milliseconds and kept strictly increasing.
* The optional overlay is drawn with Pillow (a core dependency) on a black bar *below* the picture, so it never
  hides the reconstruction; its height is fixed when the file is opened (video frames cannot change size).
* ``threaded=True`` moves encoding to a writer thread behind a bounded queue that drops the *oldest* frame when
  full (counted in ``dropped_frames``): a slow encoder then never slows the thread that calls ``write``.
  ``close()`` drains the queue, joins the thread, flushes the encoder and closes the file; an encoder error is
  re-raised by the next ``write`` or by ``close``.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from livenight._optional import require
from livenight.viewer.display import DisplayMapper

from .base import Frame

Timing = Literal["index", "stream"]
_TIME_BASE = Fraction(1, 1000)  # pts in milliseconds


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (FreeType) since Pillow 10.1
    except TypeError:  # pragma: no cover - old Pillow: fixed bitmap font
        return ImageFont.load_default()


def wrap_status(text: str, font, width_px: int) -> list[str]:
    """Break a ``" · "``-separated status line into lines no wider than ``width_px`` (long parts are cut)."""
    lines: list[str] = []
    current = ""
    for part in text.split(" · "):
        candidate = part if not current else f"{current} · {part}"
        if font.getlength(candidate) <= width_px or not current:
            current = candidate
        else:
            lines.append(current)
            current = part
    if current:
        lines.append(current)
    out = []
    for line in lines:
        while line and font.getlength(line) > width_px:
            line = line[:-1]
        out.append(line)
    return out


class TextBar:
    """Renders status text on a black bar of fixed height under an image (Pillow, no Qt)."""

    def __init__(self, width: int, lines: int | None = None, font_px: int | None = None) -> None:
        self.width = int(width)
        self.font_px = font_px or (11 if width < 500 else 14 if width < 1000 else 18)
        self.font = _font(self.font_px)
        self.line_px = self.font_px + 3
        self.lines = lines or (3 if width < 500 else 2 if width < 1000 else 1)
        self.height = self.lines * self.line_px + 4

    def render(self, text: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        bar = Image.new("L", (self.width, self.height), 0)
        draw = ImageDraw.Draw(bar)
        for i, line in enumerate(wrap_status(text, self.font, self.width - 6)[: self.lines]):
            draw.text((3, 2 + i * self.line_px), line, fill=255, font=self.font)
        return np.asarray(bar)

    def compose(self, image: np.ndarray, text: str) -> np.ndarray:
        bar = self.render(text)
        if image.ndim == 3:
            bar = np.repeat(bar[:, :, None], image.shape[2], axis=2)
        return np.concatenate([image, bar], axis=0)


class VideoSink:
    """Write reconstructions to an MP4 file with PyAV.

    Args:
        path: output file (``.mp4``; overwritten). Nothing is created until the first frame arrives.
        fps: frame rate for ``timing="index"`` and the nominal rate stored in the file.
        codec: ``"auto"`` (libx264 if available, else mpeg4) or an FFmpeg encoder name.
        crf: libx264 quality (lower = better; 18 ≈ visually lossless).
        display: how frames are mapped for viewing (default: fixed [0, 1], i.e. as in the PNG files).
        overlay: add a status bar under the picture.
        status: ``status(frame) -> str`` for the overlay (default: stream time, frame and window numbers, events).
        timing: ``"index"`` (constant ``fps``) or ``"stream"`` (each frame at its window end time).
        threaded: encode on a writer thread behind a bounded, drop-oldest queue of ``max_queue`` frames.

    Example:
        >>> sink = VideoSink("night.mp4", fps=25, overlay=True)      # doctest: +SKIP
        >>> Pipeline(source, size, engine, policy, sinks=[sink]).run()  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, codec: str = "auto", crf: int = 18,
                 display: DisplayMapper | None = None, overlay: bool = False,
                 status: Callable[[Frame], str] | None = None, timing: Timing = "index", threaded: bool = False,
                 max_queue: int = 8) -> None:
        self._av = require("av", "MP4 output (--video)")
        if not fps > 0:
            raise ValueError(f"fps must be positive (got {fps!r})")
        if timing not in ("index", "stream"):
            raise ValueError(f"timing must be 'index' or 'stream' (got {timing!r})")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1 (got {max_queue})")
        self.path = Path(path)
        self.fps = float(fps)
        self.codec = ("libx264" if "libx264" in self._av.codecs_available else "mpeg4") if codec == "auto" else codec
        self.crf = int(crf)
        self.display = display or DisplayMapper("fixed")
        self.overlay = bool(overlay)
        self.status = status or self._default_status
        self.timing: Timing = timing
        self.frames_written = 0
        self.dropped_frames = 0
        self.size: tuple[int, int] | None = None  # (width, height) of the encoded frames
        self._container = None
        self._stream = None
        self._bar: TextBar | None = None
        self._image_size: tuple[int, int] | None = None
        self._last_pts = -1
        self._first_t_us: int | None = None
        self._first_wall_s: float | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._threaded = bool(threaded)
        self._queue: deque = deque()
        self._max_queue = int(max_queue)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        if self._threaded:
            self._thread = threading.Thread(target=self._writer_loop, name="livenight-video", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ public
    def write(self, frame: Frame) -> None:
        """FrameSink: encode one reconstruction (display-mapped, optional overlay)."""
        if self.timing == "stream":
            if self._first_t_us is None:
                self._first_t_us = frame.t1_us
            pts = round((frame.t1_us - self._first_t_us) / 1000)
        else:
            pts = None
        text = self.status(frame) if self.overlay else None
        self._submit(self.display(frame.image), pts, text)

    def write_image(self, image: np.ndarray, time_s: float | None = None, text: str | None = None) -> None:
        """Encode an (H, W) or (H, W, 3) uint8 picture as it is, at wall-clock ``time_s`` (None: next frame at
        ``fps``), with ``text`` on the overlay bar when ``overlay`` is on."""
        pts = None
        if time_s is not None:
            if self._first_wall_s is None:
                self._first_wall_s = time_s
            pts = round((time_s - self._first_wall_s) * 1000)
        self._submit(image, pts, text if self.overlay else None)

    def close(self) -> None:
        """Drain the queue, join the writer thread, flush the encoder and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            with self._cond:
                self._cond.notify_all()
            self._thread.join()
        try:
            if self._container is not None and self._error is None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
        finally:
            if self._container is not None:
                self._container.close()
                self._container = None
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _default_status(self, frame: Frame) -> str:
        t_s = (frame.t1_us - (self._first_t_us if self._first_t_us is not None else frame.t0_us)) / 1e6
        return (f"t {t_s:.2f} s · frame {frame.number} · window {frame.window_index} · "
                f"{frame.events.shape[0]} events · {self.display.label()}")

    def _submit(self, image: np.ndarray, pts: int | None, text: str | None) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError(f"VideoSink({self.path}) is closed")
        if not self._threaded:
            self._encode(image, pts, text)
            return
        with self._cond:
            if len(self._queue) >= self._max_queue:
                self._queue.popleft()
                self.dropped_frames += 1
            self._queue.append((np.array(image, copy=True), pts, text))
            self._cond.notify()

    def _writer_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:  # closed and drained
                    return
                item = self._queue.popleft()
            try:
                self._encode(*item)
            except BaseException as e:  # re-raised by write() / close()
                self._error = e
                with self._cond:
                    self._queue.clear()
                return

    def _open(self, width: int, height: int) -> None:
        av = self._av
        if self.overlay:
            self._bar = TextBar(width)
            height += self._bar.height
        self.size = (width + width % 2, height + height % 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = _TIME_BASE
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        self._stream = stream

    def _encode(self, image: np.ndarray, pts: int | None, text: str | None) -> None:
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"VideoSink expects (H, W) or (H, W, 3) uint8 pictures "
                             f"(got {image.dtype} {image.shape})")
        h, w = image.shape[:2]
        if self._container is None:
            self._open(w, h)
            self._image_size = (w, h)
        elif (w, h) != self._image_size:
            raise ValueError(f"{self.path}: frame size changed from {self._image_size[0]}x{self._image_size[1]} "
                             f"to {w}x{h}; a video keeps one size")
        if self._bar is not None:
            image = self._bar.compose(image, text or "")
        width, height = self.size
        if image.shape[:2] != (height, width):  # pad to even sizes for yuv420p
            pad = ((0, height - image.shape[0]), (0, width - image.shape[1])) + (((0, 0),) if image.ndim == 3 else ())
            image = np.pad(image, pad)
        fmt = "gray" if image.ndim == 2 else "rgb24"
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        if pts is None:
            pts = round(self.frames_written * 1000 / self.fps)
        pts = max(int(pts), self._last_pts + 1)
        vf.pts = pts
        vf.time_base = _TIME_BASE
        self._last_pts = pts
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1
