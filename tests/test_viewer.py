"""The live viewer: display mapping, MP4 output, the display check, and the Qt window on a simulated recording.

Qt tests (``@pytest.mark.qt``) run off screen (``QT_QPA_PLATFORM=offscreen``, set before Qt is imported). They
replay a simulated night recording at real speed through the complementary filter, so frames really arrive from
the reconstruction thread while the test presses keys.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from livenight._optional import has  # noqa: E402
from livenight.errors import SourceError  # noqa: E402
from livenight.events import EVENT_DTYPE  # noqa: E402
from livenight.events import make_events as pack_events  # noqa: E402
from livenight.render import event_frame, to_uint8  # noqa: E402
from livenight.sinks import Frame  # noqa: E402
from livenight.viewer import platform_check  # noqa: E402
from livenight.viewer.display import DisplayMapper, event_rgb, percentile_u8  # noqa: E402
from livenight.viewer.health import Health, LatencyWindow, RateMeter, window_label  # noqa: E402
from livenight.viewer.mailbox import NewestMailbox  # noqa: E402
from livenight.windowing import CountWindows, RledWindows, TimeWindows  # noqa: E402

SIZE = (128, 96)  # (width, height) of the simulated recording used by the Qt tests
needs_av = pytest.mark.skipif(not has("av"), reason="PyAV (av) is not installed")


# ---------------------------------------------------------------------------- display.py
def test_fixed_mode_with_gamma_one_shows_exactly_what_the_files_hold():
    rng = np.random.default_rng(0)
    out = rng.uniform(-0.2, 1.2, size=(26, 34)).astype(np.float32)
    files = to_uint8(out)
    m = DisplayMapper("fixed", gamma=1.0)
    np.testing.assert_array_equal(m(out), files)
    assert m(files) is files  # uint8 input: returned untouched


def test_gamma_lifts_shadows_by_the_documented_curve():
    m = DisplayMapper("fixed", gamma=2.2)
    img = np.array([[0, 64, 128, 255]], np.uint8)
    expected = np.rint(255 * (img / 255.0) ** (1 / 2.2)).astype(np.uint8)
    np.testing.assert_array_equal(m(img), expected)
    assert m(img)[0, 1] > 64
    with pytest.raises(ValueError, match="gamma"):
        DisplayMapper(gamma=0)


def test_percentile_u8_matches_numpy_lower():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(60, 70), dtype=np.uint8)
    for q in (0, 1, 37.5, 50, 99, 100):
        assert percentile_u8(img, q) == int(np.percentile(img, q, method="lower"))


def test_auto_exposure_stretches_robust_percentiles_and_ignores_hot_pixels():
    rng = np.random.default_rng(2)
    img = rng.integers(50, 101, size=(100, 100), dtype=np.uint8)
    img.ravel()[rng.choice(img.size, 30, replace=False)] = 255  # 0.3 % hot pixels
    m = DisplayMapper("auto", low_percentile=1, high_percentile=99)
    out = m(img)
    assert m.low == pytest.approx(50 / 255, abs=1 / 255) and m.high == pytest.approx(100 / 255, abs=1 / 255)
    assert np.percentile(out, 1) <= 8 and np.percentile(out, 99) >= 247
    assert out[img == 75].mean() == pytest.approx(127.5, abs=8)  # the middle of the range lands mid-grey
    assert img.max() == 255 and img.min() >= 50  # input untouched


def test_auto_exposure_is_median_smoothed_over_history():
    dark = np.tile(np.arange(50, 101, dtype=np.uint8), (20, 1))
    bright = dark + 100
    m = DisplayMapper("auto", low_percentile=0, high_percentile=100, history=5)
    for _ in range(5):
        m(dark)
    m(bright)  # one bright frame: the median of the last five bounds is still the dark one
    assert m.low == pytest.approx(50 / 255) and m.high == pytest.approx(100 / 255)
    for _ in range(2):
        m(bright)
    assert m.low == pytest.approx(150 / 255) and m.high == pytest.approx(200 / 255)  # 3 of 5 are bright
    m.reset()
    assert (m.low, m.high) == (0.0, 1.0)


def test_auto_exposure_keeps_a_minimum_range_on_flat_frames():
    m = DisplayMapper("auto", min_range=0.1)
    out = m(np.full((8, 8), 3, np.uint8))
    assert m.high - m.low == pytest.approx(0.1) and m.low >= 0.0
    assert out.dtype == np.uint8 and np.isfinite(out).all()
    assert "auto" in m.label() and DisplayMapper("fixed", gamma=1.5).label() == "fixed [0,1] γ1.5"


def test_event_rgb_agrees_with_the_png_event_frames_where_pixels_have_one_event():
    rng = np.random.default_rng(3)
    pix = rng.choice(40 * 30, 300, replace=False)
    ev = pack_events(np.arange(300), pix % 40, pix // 40, rng.integers(0, 2, 300))
    np.testing.assert_array_equal(event_rgb(ev, (40, 30)), event_frame(ev, (40, 30)))


def test_event_rgb_colours_by_majority_and_ignores_events_outside_the_sensor():
    ev = pack_events([0, 1, 2, 3, 4, 5], [1, 1, 1, 2, 2, 50], [0, 0, 0, 1, 1, 50], [1, 1, 0, 0, 1, 1])
    img = event_rgb(ev, (4, 3))
    assert tuple(img[0, 1]) == (255, 0, 0)  # 2 ON vs 1 OFF
    assert tuple(img[1, 2]) == (255, 0, 0)  # a tie shows ON
    assert tuple(img[2, 3]) == (255, 255, 255)
    assert img.shape == (3, 4, 3)


# ---------------------------------------------------------------------------- mailbox.py, health.py
def test_mailbox_keeps_only_the_newest_and_wakes_once_per_take():
    box = NewestMailbox()
    assert box.take() is None
    assert box.put(1) is True
    assert box.put(2) is False and box.put(3) is False  # a wake-up is already pending
    assert box.take() == 3 and box.replaced_count == 2
    assert box.take() is None
    assert box.put(4) is True


def test_mailbox_under_a_fast_producer_ends_with_the_last_item():
    box, n = NewestMailbox(), 20_000
    taken = []

    def produce():
        for i in range(n):
            box.put(i)

    t = threading.Thread(target=produce)
    t.start()
    while t.is_alive():
        item = box.take()
        if item is not None:
            taken.append(item)
    t.join()
    last = box.take()
    taken += [] if last is None else [last]
    assert taken[-1] == n - 1 and taken == sorted(taken)
    assert box.put_count == n and box.taken_count + box.replaced_count == n


def test_health_text_and_meters():
    meter = RateMeter(span_s=1.0)
    assert meter.update(0, now=10.0) == 0.0
    assert meter.update(50, now=10.5) == pytest.approx(100.0)
    lat = LatencyWindow(size=100)
    for v in range(1, 101):
        lat.add(v / 1000)
    assert lat.percentile_ms(50) == pytest.approx(50.5)
    h = Health(events_per_s=820_000, frames_per_s=25, shown_per_s=24.5, latency_p50_ms=12, latency_p99_ms=31,
               dropped_events=7, skipped_windows=3, engine="numba/cpu float32", model="complementary",
               window="40 ms", notes=("PAUSED",))
    text = h.text()
    for part in ("in 0.82 Mev/s", "out 25.0 fps (shown 24.5)", "p50 12 ms p99 31 ms", "dropped 7 ev",
                 "skipped 3 win", "complementary numba/cpu float32", "window 40 ms", "PAUSED"):
        assert part in text
    assert window_label(TimeWindows(20_000, 40_000)) == "20 ms every 40 ms"
    assert window_label(CountWindows(5000)) == "5000 events"
    assert window_label(RledWindows(np.zeros((2, 2), np.int64))).startswith("RLED")


def test_pipeline_status_gives_the_same_line_without_a_window(make_events):
    from livenight.engines.base import EngineInfo
    from livenight.pipeline import Pipeline
    from livenight.viewer.health import PipelineStatus

    class Engine:
        info = EngineInfo("ner.pth", "torch", "cuda:0", "float16", (346, 260), "events")

    pipe = Pipeline([], (346, 260), Engine(), TimeWindows(40_000, 40_000))
    status = PipelineStatus(pipe, notes=("headless",))
    pipe.stats.events_in, pipe.stats.frames = 1000, 1
    status(_frame(0, np.zeros((4, 4), np.uint8)))
    pipe.stats.events_in, pipe.stats.frames = 401_000, 11
    time.sleep(0.05)
    text = status(Frame(1, np.zeros((4, 4), np.uint8), 1, 0, 40_000, make_events(10), (346, 260),
                        host_time_s=time.monotonic() - 0.02))
    assert "ner.pth torch/cuda:0 float16" in text and "window 40 ms" in text and "headless" in text
    assert "shown" not in text and "latency p50" in text and "Mev/s" in text


# ---------------------------------------------------------------------------- video.py
def _frame(i, image, t_us=None):
    t1 = (i + 1) * 40_000 if t_us is None else t_us
    h, w = image.shape
    return Frame(i, image, i, t1 - 40_000, t1, np.empty(0, EVENT_DTYPE), (w, h))


def _read_video(path):
    av = pytest.importorskip("av")
    with av.open(str(path)) as c:
        frames = [(f.to_ndarray(format="gray"), f.time) for f in c.decode(video=0)]
    return frames


@needs_av
@pytest.mark.parametrize("threaded", [False, True])
def test_video_sink_writes_every_frame_readable_by_pyav(tmp_path, threaded):
    from livenight.sinks.video import VideoSink

    levels = [20 * i + 10 for i in range(12)]
    sink = VideoSink(tmp_path / "out.mp4", fps=25, threaded=threaded, max_queue=64)
    for i, v in enumerate(levels):
        sink.write(_frame(i, np.full((260, 346), v, np.uint8)))
    sink.close()
    sink.close()  # idempotent
    frames = _read_video(tmp_path / "out.mp4")
    assert len(frames) == 12 == sink.frames_written and sink.dropped_frames == 0
    assert frames[0][0].shape == (260, 346) and sink.size == (346, 260)
    means = [float(f.mean()) for f, _ in frames]
    np.testing.assert_allclose(means, levels, atol=3)
    assert frames[-1][1] == pytest.approx(11 / 25, abs=0.002)


@needs_av
def test_video_sink_pads_odd_sizes_adds_an_overlay_bar_and_follows_stream_time(tmp_path):
    from livenight.sinks.video import VideoSink

    sink = VideoSink(tmp_path / "odd.mp4", overlay=True, timing="stream")
    for i in range(5):
        sink.write(_frame(i, np.full((27, 35), 200, np.uint8), t_us=1_000_000 + i * 100_000))
    sink.close()
    frames = _read_video(tmp_path / "odd.mp4")
    width, height = sink.size
    assert width == 36 and height % 2 == 0 and height > 27  # even, with the status bar below
    assert frames[0][0].shape == (height, width) and len(frames) == 5
    assert float(frames[0][0][:27, :35].mean()) == pytest.approx(200, abs=4)  # picture above the bar
    assert frames[0][0][28:, :].max() > 128  # white text on the black bar
    assert [round(t, 2) for _, t in frames] == [0.0, 0.1, 0.2, 0.3, 0.4]


@needs_av
def test_video_sink_rejects_a_size_change_and_writes_nothing_without_frames(tmp_path):
    from livenight.sinks.video import VideoSink

    sink = VideoSink(tmp_path / "a.mp4")
    sink.write_image(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="size changed"):
        sink.write_image(np.zeros((22, 20), np.uint8))
    sink.close()
    empty = VideoSink(tmp_path / "none.mp4")
    empty.close()
    assert not (tmp_path / "none.mp4").exists()


# ---------------------------------------------------------------------------- platform_check.py
LDD_SAMPLE = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt5XcbQpa.so.5 => /x/PyQt5/Qt5/lib/libQt5XcbQpa.so.5 (0x00007f38)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-xinerama.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibwhatever.so.9 => not found
"""


def test_parse_ldd_maps_missing_libraries_to_debian_packages():
    missing = platform_check.parse_ldd(LDD_SAMPLE)
    assert missing == ["libxcb-icccm.so.4", "libxcb-xinerama.so.0", "libwhatever.so.9"]
    assert platform_check.packages_for(missing) == ["libxcb-icccm4", "libxcb-xinerama0", "libwhatever.so.9"]


def test_check_display_without_any_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(sys, "platform", "linux")
    ok, message = platform_check.check_display()
    assert not ok and "DISPLAY" in message
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    ok, message = platform_check.check_display()
    assert not ok and "QT_QPA_PLATFORM=wayland" in message


def test_check_display_names_the_missing_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform_check, "plugin_path", lambda name="xcb": tmp_path / "libqxcb.so")
    monkeypatch.setattr(platform_check, "missing_libraries",
                        lambda lib: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    ok, message = platform_check.check_display()
    assert not ok
    assert "libxcb-icccm.so.4 (libxcb-icccm4)" in message
    assert "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1" in message


def test_check_display_notices_an_x_server_that_does_not_answer(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":917")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform_check, "missing_libraries", lambda lib: [])
    ok, message = platform_check.check_display()
    assert not ok and "DISPLAY=:917" in message


def test_check_display_accepts_offscreen(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    if not platform_check.importlib.util.find_spec("PyQt5"):
        pytest.skip("PyQt5 not installed")
    ok, message = platform_check.check_display()
    assert ok and "offscreen" in message


def test_viewer_package_and_display_check_import_no_qt():
    code = ("import sys, livenight.viewer, livenight.viewer.display, livenight.sinks.video, "
            "livenight.viewer.health, livenight.viewer.mailbox\n"
            "from livenight.viewer import check_display, doctor_lines\n"
            "check_display(); doctor_lines(probe=False)\n"
            "print(','.join(m for m in ('PyQt5', 'pyqtgraph') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == ""


def test_doctor_lines_report_packages_and_display():
    ok, lines = platform_check.doctor_lines(probe=False)
    assert lines[0].startswith("PyQt5") and lines[-1].startswith("display")
    assert ("ok" in lines[-1]) == ok


# ---------------------------------------------------------------------------- Qt: the window on a live replay
@pytest.fixture(scope="module")
def night_h5(tmp_path_factory):
    from livenight.simulate import write_night

    path = tmp_path_factory.mktemp("viewer") / "night.h5"
    write_night(path, seconds=3.0, size=SIZE, seed=1)
    return path


@pytest.fixture
def viewer_app():
    pytest.importorskip("PyQt5")
    pytest.importorskip("pyqtgraph")
    from livenight.viewer import app

    return app


def _open_pipeline(stack, path, window_us=40_000, speed=1.0, wrap=None, live=True):
    from livenight.drivers.pacing import paced
    from livenight.drivers.rled import RledSource
    from livenight.engines.complementary import ComplementaryFilterEngine
    from livenight.pipeline import Pipeline

    src = stack.enter_context(RledSource(path))
    eng = stack.enter_context(ComplementaryFilterEngine(src.sensor_size))
    packets = paced(src, speed)
    if wrap is not None:
        packets = wrap(packets)
    return Pipeline(packets, src.sensor_size, eng, TimeWindows(window_us, window_us), live=live, reference=src.frames)


@pytest.fixture
def make_viewer(qtbot, viewer_app, night_h5, tmp_path):
    stack = ExitStack()
    viewers = []

    def _make(window_us=40_000, **options):
        pipe = _open_pipeline(stack, night_h5, window_us)
        options.setdefault("screenshot_dir", tmp_path)
        v = viewer_app.LiveViewer(pipe, **options)
        qtbot.addWidget(v.window)
        viewers.append(v)
        v.start()
        qtbot.waitExposed(v.window)
        return v

    yield _make
    for v in viewers:  # threads stop before the source and engine close
        v.shutdown()
    stack.close()


def _grab_png(widget, path, rect=None):
    """Grab a widget (or a rectangle of it) to a PNG file and read it back as (H, W, 3) uint8."""
    from PIL import Image

    pixmap = widget.grab(rect) if rect is not None else widget.grab()
    assert pixmap.save(str(path), "PNG")
    return np.asarray(Image.open(path).convert("RGB"))


def _panel_rect(window, vb):
    return window.view.mapFromScene(vb.sceneBoundingRect()).boundingRect()


@pytest.mark.qt
def test_window_shows_reconstructions_events_and_reference_that_change(make_viewer, qtbot, tmp_path):
    v = make_viewer()
    qtbot.waitUntil(lambda: v.shown_frames >= 3, timeout=5000)
    w = v.window
    first = _grab_png(w.view, tmp_path / "a.png", _panel_rect(w, w.recon_vb))
    events = _grab_png(w.view, tmp_path / "ev.png", _panel_rect(w, w.event_vb))
    reference = _grab_png(w.view, tmp_path / "ref.png", _panel_rect(w, w.ref_vb))
    shown = v.shown_frames
    qtbot.waitUntil(lambda: v.shown_frames >= shown + 6, timeout=5000)
    later = _grab_png(w.view, tmp_path / "b.png", _panel_rect(w, w.recon_vb))
    whole = _grab_png(w, tmp_path / "whole.png")

    assert first.shape[0] > 100 and first.shape[1] > 100
    assert first.std() > 15  # a textured night scene, not a blank panel
    assert np.abs(first.astype(int) - later.astype(int)).mean() > 2  # the picture moves
    red = (events[..., 0] > 200) & (events[..., 1] < 60) & (events[..., 2] < 60)
    blue = (events[..., 2] > 200) & (events[..., 0] < 60) & (events[..., 1] < 60)
    assert red.sum() > 50 and blue.sum() > 50  # ON and OFF events
    assert reference.std() > 15
    assert whole.shape[:2] == (w.height(), w.width())
    assert "fps" in w.status.text() and "latency p50" in w.status.text() and "complementary" in w.status.text()


@pytest.mark.qt
def test_pause_freezes_the_display_while_reconstruction_continues(make_viewer, qtbot, tmp_path):
    from PyQt5.QtCore import Qt

    v = make_viewer()
    qtbot.waitUntil(lambda: v.shown_frames >= 2, timeout=5000)
    qtbot.keyClick(v.window, Qt.Key_Space)
    assert v.paused
    qtbot.wait(100)
    shown, made = v.shown_frames, v.pipeline.stats.frames
    before = _grab_png(v.window.view, tmp_path / "p1.png", _panel_rect(v.window, v.window.recon_vb))
    qtbot.waitUntil(lambda: v.pipeline.stats.frames >= made + 8, timeout=5000)
    after = _grab_png(v.window.view, tmp_path / "p2.png", _panel_rect(v.window, v.window.recon_vb))
    assert v.shown_frames == shown
    np.testing.assert_array_equal(before, after)
    assert "PAUSED" in v.health().text()
    qtbot.keyClick(v.window, Qt.Key_Space)
    assert not v.paused
    qtbot.waitUntil(lambda: v.shown_frames >= shown + 3, timeout=5000)


@pytest.mark.qt
def test_a_slow_display_costs_shown_frames_not_reconstruction(make_viewer, qtbot):
    v = make_viewer()
    qtbot.waitUntil(lambda: v.shown_frames >= 1, timeout=5000)
    draw = v.window.show_images

    def slow_draw(*args):
        time.sleep(0.2)  # a display 5x slower than the 25 frames/s stream
        draw(*args)

    v.window.show_images = slow_draw
    frames, shown, t0 = v.pipeline.stats.frames, v.shown_frames, time.monotonic()
    qtbot.wait(1500)
    made = v.pipeline.stats.frames - frames
    assert made >= 0.7 * 25 * (time.monotonic() - t0)  # reconstruction kept its pace
    assert v.shown_frames - shown <= 8  # the display showed what it could, the newest each time
    assert v.mailbox.replaced_count >= made - 10


@pytest.mark.qt
def test_r_resets_the_recurrent_state_on_the_reconstruction_thread(make_viewer, qtbot):
    from PyQt5.QtCore import Qt

    v = make_viewer()
    engine = v.pipeline.engine
    calls = []
    original = engine._reset_impl

    def spy():
        calls.append(threading.current_thread().name)
        original()

    engine._reset_impl = spy
    qtbot.waitUntil(lambda: v.shown_frames >= 2, timeout=5000)
    resets, before = v.pipeline.stats.resets, len(calls)  # the first window's reset happened already
    qtbot.keyClick(v.window, Qt.Key_R)
    qtbot.waitUntil(lambda: v.pipeline.stats.resets == resets + 1, timeout=3000)
    assert calls[before:] == ["livenight-reconstruct"]


@pytest.mark.qt
def test_plus_and_minus_change_the_window_length(make_viewer, qtbot):
    from PyQt5.QtCore import Qt

    v = make_viewer(window_us=20_000)
    qtbot.waitUntil(lambda: v.shown_frames >= 2, timeout=5000)
    qtbot.keyClick(v.window, Qt.Key_Plus)
    qtbot.waitUntil(lambda: v.pipeline.windower.policy.window_us == 40_000, timeout=3000)
    made = v.pipeline.stats.frames
    qtbot.waitUntil(lambda: v.pipeline.stats.frames >= made + 3, timeout=3000)  # frames keep coming
    qtbot.keyClick(v.window, Qt.Key_Minus)
    qtbot.keyClick(v.window, Qt.Key_Minus)
    qtbot.waitUntil(lambda: v.pipeline.windower.policy.window_us == 10_000, timeout=3000)
    assert "window 10 ms" in v.health().text()


@pytest.mark.qt
@needs_av
def test_s_saves_a_screenshot_and_v_records_the_shown_video(make_viewer, qtbot, tmp_path):
    from PIL import Image
    from PyQt5.QtCore import Qt

    v = make_viewer(screenshot_dir=tmp_path / "shots")
    qtbot.waitUntil(lambda: v.shown_frames >= 2, timeout=5000)
    qtbot.keyClick(v.window, Qt.Key_S)
    assert len(v.screenshots) == 1
    shot = np.asarray(Image.open(v.screenshots[0]).convert("RGB"))
    assert shot.shape[:2] == (v.window.height(), v.window.width()) and shot.std() > 15

    qtbot.keyClick(v.window, Qt.Key_V)
    assert v.recorder is not None and "REC" in v.health().text()
    shown = v.shown_frames
    qtbot.waitUntil(lambda: v.shown_frames >= shown + 8, timeout=5000)
    qtbot.keyClick(v.window, Qt.Key_V)
    assert v.recorder is None
    frames = _read_video(v.recordings[0])
    assert len(frames) >= 8
    h, w = frames[0][0].shape
    assert w == SIZE[0] and h > SIZE[1]  # the status bar sits under the picture


@pytest.mark.qt
def test_help_fullscreen_and_display_keys(make_viewer, qtbot):
    from PyQt5.QtCore import Qt

    from livenight.viewer.window import KEY_HELP

    v = make_viewer()
    assert not v.window.help.isVisible()
    qtbot.keyClick(v.window, Qt.Key_H)
    assert v.window.help.isVisible()
    for keys, _ in KEY_HELP:
        assert keys.split(" ")[0] in v.window.help.text()
    qtbot.keyClick(v.window, Qt.Key_H)
    assert not v.window.help.isVisible()
    qtbot.keyClick(v.window, Qt.Key_F)
    assert v.window.isFullScreen()
    qtbot.keyClick(v.window, Qt.Key_F)
    assert not v.window.isFullScreen()
    assert v.display.mode == "fixed"  # the files' scale unless asked otherwise
    qtbot.keyClick(v.window, Qt.Key_A)
    assert v.display.mode == "auto" and "display auto" in v.health().text()
    qtbot.keyClick(v.window, Qt.Key_G)
    assert v.display.gamma == 1.5


@pytest.mark.qt
@needs_av
def test_closing_the_window_stops_every_thread_and_closes_the_recording(make_viewer, qtbot):
    from PyQt5.QtCore import Qt

    v = make_viewer(record_on_start=True)
    qtbot.waitUntil(lambda: v.shown_frames >= 3, timeout=5000)
    assert set(v.threads_alive) >= {"livenight-source", "livenight-reconstruct", "livenight-video"}
    qtbot.keyClick(v.window, Qt.Key_Q)
    assert not v.window.isVisible()
    assert v.threads_alive == []
    assert v.pipeline.stop_event.is_set()
    assert len(_read_video(v.recordings[0])) >= 3  # the MP4 was finalised


@pytest.mark.qt
def test_change_window_continues_where_the_next_window_would_start(viewer_app, make_events):
    from livenight.ring import EventRing
    from livenight.windowing import Windower

    # GIVEN a windower that produced windows 0..2 of 20 ms
    ev = make_events(20_000, rate_ev_per_s=100_000)  # 0.2 s
    cut = int(np.searchsorted(ev["t"], 70_000))
    ring = EventRing(1 << 16)
    ring.push(ev[:cut], 70_000)
    w = Windower(TimeWindows(20_000, 20_000), ring)
    first = w.poll()
    assert len(first) == 3
    # WHEN the window is doubled, THEN the next window starts where window 3 would have started
    assert viewer_app.change_window(w, longer=True) == "window 40 ms"
    ring.push(ev[cut:], int(ev["t"][-1]) + 1)
    nxt = w.poll()[0]
    assert nxt.t0_us == first[2].t1_us and nxt.t1_us - nxt.t0_us == 40_000

    ring2 = EventRing(1 << 16)
    ring2.push(ev[:10_500], int(ev["t"][10_500]))
    cw = Windower(CountWindows(2_000), ring2)
    assert len(cw.poll()) == 5
    assert viewer_app.change_window(cw, longer=False) == "window 1000 events"
    ring2.push(ev[10_500:], int(ev["t"][-1]) + 1)
    nxt = cw.poll()[0]
    assert (nxt.i0, nxt.i1) == (10_000, 11_000)
    assert "RLED" in viewer_app.change_window(Windower(RledWindows(np.array([[0, 10], [10, 20]])), ring), True)


@pytest.mark.qt
def test_run_viewer_returns_the_statistics_when_the_stream_ends(viewer_app, qapp, night_h5):
    with ExitStack() as stack:
        pipe = _open_pipeline(stack, night_h5, speed=3.0)
        stats = viewer_app.run_viewer(pipe, exit_on_end=True)
    assert stats.frames > 10 and stats.events_in > 0
    assert [t.name for t in threading.enumerate() if t.name.startswith("livenight-")] == []


@pytest.mark.qt
def test_ctrl_c_closes_the_viewer_cleanly(viewer_app, qapp, night_h5):
    import signal

    from PyQt5.QtCore import QTimer

    previous = signal.getsignal(signal.SIGINT)
    with ExitStack() as stack:
        pipe = _open_pipeline(stack, night_h5)
        QTimer.singleShot(700, lambda: os.kill(os.getpid(), signal.SIGINT))
        t0 = time.monotonic()
        stats = viewer_app.run_viewer(pipe)
    assert time.monotonic() - t0 < 2.5  # stopped long before the 3 s recording ended
    assert 0 < stats.frames < 70
    assert [t.name for t in threading.enumerate() if t.name.startswith("livenight-")] == []
    assert signal.getsignal(signal.SIGINT) is previous


@pytest.mark.qt
def test_a_pipeline_error_is_reraised_after_everything_stopped(viewer_app, qapp, night_h5):
    def failing(packets):
        for i, pkt in enumerate(packets):
            if i == 30:
                raise SourceError("cable unplugged (test)")
            yield pkt

    with ExitStack() as stack:
        pipe = _open_pipeline(stack, night_h5, wrap=failing)
        with pytest.raises(SourceError, match="cable unplugged"):
            viewer_app.run_viewer(pipe, exit_on_end=True)
    assert [t.name for t in threading.enumerate() if t.name.startswith("livenight-")] == []


@pytest.mark.qt
def test_run_viewer_carries_on_headless_when_no_window_can_open(viewer_app, monkeypatch, night_h5, capsys):
    monkeypatch.setattr(viewer_app, "check_display", lambda probe=False: (False, "no display (test)"))
    with ExitStack() as stack:
        pipe = _open_pipeline(stack, night_h5, speed=0.0, live=False)
        stats = viewer_app.run_viewer(pipe)
    assert stats.frames > 50
    assert "no display (test)" in capsys.readouterr().err


@pytest.mark.qt
def test_bench_viewer_script_runs(viewer_app, qapp, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_viewer.py"
    spec = importlib.util.spec_from_file_location("bench_viewer", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(bench.parse_args(["--sizes", "64x48", "--frames", "3", "--warmup", "1"]))
    assert [r["path"] for r in rows] == ["ImageView (baseline)", "window recon", "window full", "prep only (numpy)"]
    assert all(r["ms_per_frame"] > 0 for r in rows) and rows[0]["vs_baseline"] == 1.0
    assert "vs ImageView" in capsys.readouterr().out
    out = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "ImageView" in out.stdout
