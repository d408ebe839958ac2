"""The live viewer: a Pipeline running behind a Qt window, with keys, recording and a clean shutdown.

Why it is like this (threads):

* **Capture** is the pipeline's producer thread (``livenight-source``): it only pushes packets into the ring,
  which drops the oldest events when full and never blocks.
* **Reconstruction** is ``livenight-reconstruct``, a plain thread that runs :meth:`Pipeline.run` (live mode),
  so the pipeline's consumer loop takes the newest complete window and counts the skipped ones.
* **Display** is the Qt main thread. The pipeline's ``on_frame`` (called on the reconstruction thread) puts
  the frame in a one-slot :class:`~livenight.viewer.mailbox.NewestMailbox` and, only when no wake-up is already
  pending, emits a Qt signal, which Qt queues to the GUI thread. The GUI takes the newest frame, maps it for
  display, draws it, and records it if V is on. At most one notification is ever queued and the reconstruction
  thread never waits for the GUI, so a slow display costs shown frames, never capture or inference. The GUI
  thread does share the GIL with the other two, so drawing is capped at ``max_display_fps`` (default 60) and at
  ``max_display_duty`` (default half) of wall time: a draw taking ``d`` seconds is followed by a pause of at
  least ``d`` before the next one.
* **Commands that touch the pipeline run on the reconstruction thread.** The keys R and +/− only append to a
  locked command list; ``on_frame`` applies them before returning (R: ``windower.request_reset()``, so the
  *next* window carries ``reset=True`` and ``EngineBase.step`` zeroes the state, counted in
  ``stats.resets``; +/−: ``windower.rescale(2 or 0.5)``, the policy's rescaled copy starting
  where the next window would have started). Only that thread ever touches the windower or the engine, so no
  lock is needed. RLED windows come from the file and do not change.
* **Pause** (space) freezes the display only: capture and reconstruction keep running (the recurrent state
  stays current, resume is instant), and the newest frame is still taken so nothing queues up.
* **Shutdown** (window closed, Q / Esc, Ctrl-C / SIGTERM, or the end of the stream with ``exit_on_end``):
  timers stop, ``pipeline.stop()``, the reconstruction thread is joined (it joins the producer and closes the
  pipeline's sinks), then the recorder is closed (its writer thread drained and joined). Python runs signal
  handlers only between bytecodes, so a 250 ms status timer also guarantees that Ctrl-C is noticed while Qt
  waits for events.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
import traceback
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Callable

from livenight._optional import require

from .display import DisplayMapper, event_rgb
from .health import Health, LatencyWindow, RateMeter, engine_labels, window_label
from .mailbox import NewestMailbox
from .platform_check import check_display

require("PyQt5.QtWidgets", "the live viewer")
from PyQt5 import QtCore, QtWidgets  # noqa: E402  (after the install-hint check)

from .window import ViewerWindow  # noqa: E402

#: +/− limits
GAMMAS = (1.0, 1.5, 2.2)


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _free_path(path: Path) -> Path:
    """``path``, or ``stem-2.suffix``, ``stem-3.suffix`` … if it exists."""
    if not path.exists():
        return path
    for n in range(2, 10_000):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free file name like {path}")


def change_window(windower, longer: bool) -> str:
    """Double or halve the windower's window from its next window on; returns a message (the policy decides how:
    time windows keep their stride / length ratio, count windows their stride / count ratio, RLED windows stay).
    Must run on the thread that polls ``windower`` (the reconstruction thread)."""
    return windower.rescale(2.0 if longer else 0.5)


class LiveViewer(QtCore.QObject):
    """Run ``pipeline`` on a worker thread and show its frames in a :class:`ViewerWindow`.

    Use :func:`run_viewer` for the whole life cycle; tests drive this class directly (``start()``, keys,
    ``window.close()``).

    Args:
        pipeline: a :class:`~livenight.pipeline.Pipeline`, normally ``live=True`` (camera or paced replay).
        display: display mapping (default: fixed [0, 1] as in the files, gamma 1; A toggles auto-exposure).
        title: window title.
        show_events: show the event-window panel.
        show_reference: show the reference panel (default: when the pipeline has reference frames).
        screenshot_dir: where S saves PNGs.
        record_path: file for the first V recording (later ones get ``-2``, ``-3`` …); default
            ``screenshot_dir/livenight-<time>.mp4``.
        record_on_start: start recording immediately (``--video`` with a window).
        record_overlay: put the status line under the recorded picture.
        record_fps: nominal frame rate of recordings (frames are stamped with the time they were shown).
        max_display_fps: draw at most this often (newest frame wins).
        max_display_duty: the largest share of wall time the GUI thread spends drawing frames: after a draw
            that took ``d`` seconds the next one waits at least ``d / max_display_duty`` (the GUI thread shares
            the GIL with capture and reconstruction, so an expensive draw is made rarer, never queued).
        exit_on_end: close the window when the stream ends (default: keep showing the last frame).
        join_timeout_s: how long shutdown waits for the reconstruction thread.
    """

    frame_waiting = QtCore.pyqtSignal()
    reconstruction_finished = QtCore.pyqtSignal()
    closed = QtCore.pyqtSignal()

    def __init__(self, pipeline, *, display: DisplayMapper | None = None, title: str | None = None,
                 show_events: bool = True, show_reference: bool | None = None, screenshot_dir: str | Path = ".",
                 record_path: str | Path | None = None, record_on_start: bool = False, record_overlay: bool = True,
                 record_fps: float = 25.0, max_display_fps: float = 60.0, max_display_duty: float = 0.5,
                 exit_on_end: bool = False, join_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.display = display or DisplayMapper("fixed")
        self.show_events = show_events
        self.show_reference = (pipeline.reference is not None) if show_reference is None else show_reference
        self.screenshot_dir = Path(screenshot_dir)
        self.record_path = Path(record_path) if record_path is not None else None
        self.record_on_start = record_on_start
        self.record_overlay = record_overlay
        self.record_fps = float(record_fps)
        self.min_interval_s = 1.0 / max_display_fps if max_display_fps and max_display_fps > 0 else 0.0
        if not 0.0 < max_display_duty <= 1.0:
            raise ValueError(f"max_display_duty must be in (0, 1] (got {max_display_duty!r})")
        self.max_display_duty = float(max_display_duty)
        self._last_draw_s = 0.0
        self.exit_on_end = exit_on_end
        self.join_timeout_s = float(join_timeout_s)
        self.model, self.engine_label = engine_labels(pipeline.engine)
        self.window = ViewerWindow(pipeline.sensor_size, title or f"livenight — {self.model}",
                                   show_events=show_events, show_reference=self.show_reference)
        self.window.action.connect(self._on_action)
        self.window.closed.connect(self._on_window_closed)
        self._window_closed = False

        # state shared with the reconstruction thread (mailbox and command list are locked)
        self.mailbox: NewestMailbox = NewestMailbox()
        self._commands: list[str] = []
        self._commands_lock = threading.Lock()
        self._chained_on_frame: Callable | None = None
        self._worker: threading.Thread | None = None
        self.stats = pipeline.stats
        self.error: BaseException | None = None
        self.finished = False

        # GUI-thread state
        self.paused = False
        self.shown_frames = 0
        self.last_frame = None
        self.last_image = None
        self.display_s: deque[float] = deque(maxlen=10_000)  # seconds spent drawing each shown frame
        self.latency = LatencyWindow()
        self.screenshots: list[Path] = []
        self.recordings: list[Path] = []
        self.recorder = None
        self._held = None
        self._message: tuple[str, float] = ("", 0.0)
        self._status_text = ""
        self._last_show = -math.inf
        self._record_started = 0.0
        self._record_path_used = False
        self._quit_requested = False
        self._started = False
        self._shut_down = False
        self._rates = (RateMeter(), RateMeter(), RateMeter())

        self.frame_waiting.connect(self._on_frame_waiting, QtCore.Qt.QueuedConnection)
        self.reconstruction_finished.connect(self._on_finished, QtCore.Qt.QueuedConnection)
        self._draw_timer = QtCore.QTimer(self)
        self._draw_timer.setSingleShot(True)
        self._draw_timer.setTimerType(QtCore.Qt.PreciseTimer)
        self._draw_timer.timeout.connect(self._on_frame_waiting)
        self._status_timer = QtCore.QTimer(self)
        self._status_timer.setInterval(250)
        self._status_timer.timeout.connect(self._tick)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Show the window and start the reconstruction thread (which starts the capture thread)."""
        if self._started:
            raise RuntimeError("LiveViewer.start() was already called")
        self._started = True
        self._chained_on_frame = self.pipeline.on_frame
        self.pipeline.on_frame = self._on_frame
        self.window.show()
        self._status_timer.start()
        if self.record_on_start:
            self.start_recording()
        self._worker = threading.Thread(target=self._reconstruct, name="livenight-reconstruct")
        self._worker.start()

    def _reconstruct(self) -> None:  # reconstruction thread
        try:
            self.stats = self.pipeline.run()
        except BaseException as e:  # shown in the window, re-raised by run_viewer
            self.error = e
        finally:
            self.finished = True
            self.reconstruction_finished.emit()

    def request_quit(self) -> None:
        """Ask for a clean exit from any thread or a signal handler (acted on by the GUI timer)."""
        self._quit_requested = True

    def shutdown(self) -> None:
        """Stop every thread and close every file (idempotent; called when the window closes)."""
        if self._shut_down:
            return
        self._shut_down = True
        self._status_timer.stop()
        self._draw_timer.stop()
        self.pipeline.stop()
        if self._worker is not None:
            self._worker.join(self.join_timeout_s)
            if self._worker.is_alive():
                print(f"livenight: the reconstruction thread did not stop within {self.join_timeout_s:g} s",
                      file=sys.stderr)
        try:
            self.stop_recording()
        finally:
            if self._started:
                self.pipeline.on_frame = self._chained_on_frame
            if not self._window_closed:
                self.window.close()  # → _on_window_closed → shutdown(), which returns at once
            self.closed.emit()

    def _on_window_closed(self) -> None:
        self._window_closed = True
        self.shutdown()

    @property
    def threads_alive(self) -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("livenight-") and t.is_alive()]

    # ------------------------------------------------------------------ reconstruction thread
    def _on_frame(self, frame) -> None:
        self._apply_commands()
        if self._chained_on_frame is not None:
            self._chained_on_frame(frame)
        if self.mailbox.put(frame):
            self.frame_waiting.emit()

    def _apply_commands(self) -> None:
        with self._commands_lock:
            commands, self._commands = self._commands, []
        for name in commands:
            if name == "reset":
                self.pipeline.windower.request_reset()
            elif name in ("longer", "shorter"):
                message = change_window(self.pipeline.windower, longer=name == "longer")
                self.pipeline.policy = self.pipeline.windower.policy
                self._message = (message, time.monotonic() + 3.0)

    def _command(self, name: str) -> None:
        with self._commands_lock:
            self._commands.append(name)

    # ------------------------------------------------------------------ GUI thread
    def _on_frame_waiting(self) -> None:
        if self._shut_down:
            return
        if self.paused:
            frame = self.mailbox.take()
            if frame is not None:
                self._held = frame
            return
        interval_s = max(self.min_interval_s, self._last_draw_s / self.max_display_duty)
        wait_s = self._last_show + interval_s - time.perf_counter()
        if wait_s > 0:
            if not self._draw_timer.isActive():
                self._draw_timer.start(max(1, math.ceil(wait_s * 1000)))
            return
        frame = self.mailbox.take()
        if frame is not None:
            self._show(frame)

    def _show(self, frame, count: bool = True) -> None:
        t0 = time.perf_counter()
        image = self.display(frame.image)
        events = event_rgb(frame.events, frame.sensor_size) if self.show_events else None
        reference = frame.reference if self.show_reference else None
        self.window.show_images(image, events, reference)
        self.last_frame, self.last_image = frame, image
        if not count:
            return
        self._last_show = t0
        self.shown_frames += 1
        if frame.host_time_s > 0:
            self.latency.add(time.monotonic() - frame.host_time_s)
        if self.recorder is not None:
            self.recorder.write_image(image, time_s=time.monotonic(), text=self._status_text)
        self._last_draw_s = time.perf_counter() - t0
        self.display_s.append(self._last_draw_s)

    def _on_finished(self) -> None:
        if self._shut_down:
            return
        frame = self.mailbox.take()
        if frame is not None and not self.paused:
            self._show(frame)
        self._tick()
        if self.exit_on_end:
            self.request_quit()
            QtCore.QTimer.singleShot(0, self._tick)

    def _notes(self) -> tuple[str, ...]:
        notes = [f"display {self.display.label()}"]
        if self.paused:
            notes.append("PAUSED")
        if self.recorder is not None:
            notes.append(f"● REC {time.monotonic() - self._record_started:.0f} s")
        if self.error is not None:
            notes.append(f"ERROR: {self.error}")
        elif self.finished:
            notes.append("end of stream (Q quits)")
        message, until = self._message
        if message and time.monotonic() < until:
            notes.append(message)
        notes.append("H help")
        return tuple(notes)

    def health(self) -> Health:
        p = self.pipeline
        stats = p.stats
        in_rate, out_rate, shown_rate = self._rates
        now = time.monotonic()
        return Health(events_per_s=in_rate.update(stats.events_in, now),
                      frames_per_s=out_rate.update(stats.frames, now),
                      shown_per_s=shown_rate.update(self.shown_frames, now),
                      latency_p50_ms=self.latency.percentile_ms(50), latency_p99_ms=self.latency.percentile_ms(99),
                      dropped_events=p.ring.dropped_events, skipped_windows=p.windower.skipped_windows,
                      engine=self.engine_label, model=self.model, window=window_label(p.windower.policy),
                      notes=self._notes(), filtered_events=stats.filtered_events)

    def _tick(self) -> None:
        if self._quit_requested:
            self._quit_requested = False
            self.window.close()  # → shutdown()
            return
        if self._shut_down:
            return
        self._status_text = self.health().text()
        self.window.set_status(self._status_text)

    def _flash(self, message: str, seconds: float = 3.0) -> None:
        self._message = (message, time.monotonic() + seconds)
        self._tick()

    # ------------------------------------------------------------------ actions
    def _on_action(self, name: str) -> None:
        handler = {"pause": self.toggle_pause, "reset": self.reset_state, "screenshot": self.screenshot,
                   "record": self.toggle_recording, "longer": lambda: self.change_window(True),
                   "shorter": lambda: self.change_window(False), "auto_exposure": self.toggle_auto_exposure,
                   "gamma": self.cycle_gamma}.get(name)
        if handler is not None:
            handler()

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            frame, self._held = self._held, None
            frame = self.mailbox.take() or frame
            if frame is not None:
                self._show(frame)
        self._flash("paused: capture and reconstruction continue" if self.paused else "resumed")

    def reset_state(self) -> None:
        """R: the next window resets the engine's recurrent state (applied on the reconstruction thread)."""
        self._command("reset")
        self.display.reset()
        self._flash("recurrent state reset")

    def change_window(self, longer: bool) -> None:
        """+ / −: double / halve the event window (applied on the reconstruction thread)."""
        self._command("longer" if longer else "shorter")
        self._flash("changing the window …", 1.0)

    def toggle_auto_exposure(self) -> None:
        self.display.set_mode("fixed" if self.display.mode == "auto" else "auto")
        self._redraw()
        self._flash(f"display {self.display.label()}")

    def cycle_gamma(self) -> None:
        i = GAMMAS.index(self.display.gamma) if self.display.gamma in GAMMAS else -1
        self.display.set_gamma(GAMMAS[(i + 1) % len(GAMMAS)])
        self._redraw()
        self._flash(f"display {self.display.label()}")

    def _redraw(self) -> None:
        if self.last_frame is not None:
            self._show(self.last_frame, count=False)

    def screenshot(self, path: str | Path | None = None) -> Path:
        """S: save the whole window as a PNG; returns the path."""
        target = Path(path) if path is not None else _free_path(self.screenshot_dir / f"livenight-{_stamp()}.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not self.window.grab().save(str(target), "PNG"):
            raise OSError(f"could not write the screenshot {target}")
        self.screenshots.append(target)
        self._flash(f"saved {target}")
        return target

    def start_recording(self) -> Path:
        from livenight.sinks.video import VideoSink

        if self.recorder is not None:
            return self.recordings[-1]
        if self.record_path is not None and not self._record_path_used:
            path = self.record_path
            self._record_path_used = True
        else:
            base = self.record_path.parent if self.record_path is not None else self.screenshot_dir
            path = _free_path(base / f"livenight-{_stamp()}.mp4")
        self.recorder = VideoSink(path, fps=self.record_fps, overlay=self.record_overlay, threaded=True)
        self._record_started = time.monotonic()
        self.recordings.append(path)
        self._flash(f"recording to {path}")
        return path

    def stop_recording(self) -> Path | None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return None
        recorder.close()
        if not self._shut_down:
            dropped = f", {recorder.dropped_frames} dropped" if recorder.dropped_frames else ""
            self._flash(f"saved {recorder.path} ({recorder.frames_written} frames{dropped})")
        return recorder.path

    def toggle_recording(self) -> None:
        if self.recorder is None:
            self.start_recording()
        else:
            self.stop_recording()


def run_viewer(pipeline, *, check: bool = True, headless_fallback: bool = True, **options):
    """Show a pipeline live in a window until it is closed; returns the pipeline's statistics.

    Args:
        pipeline: a :class:`~livenight.pipeline.Pipeline` (normally ``live=True``), or a zero-argument callable
            returning one (called after the display check). Source and engine stay owned by the caller: open
            them in ``with`` blocks around this call.
        check: run :func:`~livenight.viewer.platform_check.check_display` first (with a child-process probe when no
            QApplication exists yet), so a broken Qt setup cannot abort the process.
        headless_fallback: when no window can open, print why (with the apt line) to stderr and run the pipeline
            without a window in this thread; False raises ``RuntimeError`` instead.
        **options: passed to :class:`LiveViewer` (display, record_path, record_on_start, exit_on_end, …).

    Returns:
        :class:`~livenight.pipeline.PipelineStats`.

    Raises:
        Whatever the pipeline raised (after the window closed and every thread stopped).

    Example:
        >>> with open_source("night.h5") as src, ComplementaryFilterEngine(src.sensor_size) as eng:  # doctest: +SKIP
        ...     pipe = Pipeline(paced(src, 1.0), src.sensor_size, eng, TimeWindows(40_000), live=True)
        ...     stats = run_viewer(pipe)
    """
    app = QtWidgets.QApplication.instance()
    if check:
        ok, message = check_display(probe=app is None)
        if not ok:
            if not headless_fallback:
                raise RuntimeError(f"cannot open a window: {message}")
            print(f"livenight: cannot open a window: {message}", file=sys.stderr)
            print("livenight: running without a window", file=sys.stderr)
            pipe = pipeline() if callable(pipeline) else pipeline
            return pipe.run()
    pipe = pipeline() if callable(pipeline) else pipeline
    if app is None:
        app = QtWidgets.QApplication([sys.argv[0] if sys.argv and sys.argv[0] else "livenight"])
    viewer = LiveViewer(pipe, **options)
    loop = QtCore.QEventLoop()
    viewer.closed.connect(loop.quit)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: viewer.request_quit())

    def excepthook(kind, value, tb):  # PyQt5 aborts on an exception in a slot unless a hook is installed
        traceback.print_exception(kind, value, tb, file=sys.stderr)
        if viewer.error is None:
            viewer.error = value
        viewer.request_quit()

    previous_hook, sys.excepthook = sys.excepthook, excepthook
    try:
        viewer.start()
        if not viewer._shut_down:
            loop.exec_()
    finally:
        viewer.shutdown()
        sys.excepthook = previous_hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        viewer.window.deleteLater()
    if viewer.error is not None:
        raise viewer.error
    return viewer.stats
