"""The ``livenight`` command line, run in-process through ``livenight.cli.main`` (plus one real subprocess).

Recordings are written in ``tmp_path`` with :class:`RledWriter` or h5py; outputs are read back with PIL.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from livenight.cli import main
from livenight.drivers.rled import DEFAULT_CHUNK_EVENTS, RledFile, RledWriter
from livenight.events import make_events

W, H = 346, 260
T0 = 1_000_000  # µs
N_IMG = 26
IMG_TS = [T0 + 20_000 + 40_000 * k for k in range(N_IMG)]  # one image in the middle of each 40 ms window
WINDOW_US = 40_000  # the CLI default --window-ms 40
ON, OFF, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


# ---------------------------------------------------------------------------- recordings
@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """1 s of random events (20k) with 26 grey images and the writer's default event_indices."""
    path = tmp_path_factory.mktemp("cli") / "night.h5"
    rng = np.random.default_rng(0)
    n = 20_000
    t = np.sort(rng.integers(T0, T0 + 1_000_000, n))
    t[0] = T0
    ev = make_events(t, rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 2, n))
    images = [rng.integers(0, 256, (H, W), dtype=np.uint8) for _ in IMG_TS]
    with RledWriter(path, (W, H)) as w:
        w.add_events(ev)
        for img, ts in zip(images, IMG_TS):
            w.add_image(img, ts)
    return path, ev, images


def write_h5(path: Path, *, x, y, t, p, attrs=True) -> Path:
    with h5py.File(path, "w") as h:
        h["events/xs"] = np.asarray(x, np.int16)
        h["events/ys"] = np.asarray(y, np.int16)
        h["events/ts"] = np.asarray(t, np.float64)
        h["events/ps"] = np.asarray(p, bool)
        if attrs:
            h.attrs["sensor_resolution"] = [W, H]
    return path


UNSORTED_AT = 290_000


@pytest.fixture(scope="module")
def unsorted_recording(tmp_path_factory):
    """300k events over 1 s, sorted except at event 290000: the error comes after the first 2^18-event chunk,
    so frames are written before it."""
    assert DEFAULT_CHUNK_EVENTS < UNSORTED_AT
    path = tmp_path_factory.mktemp("cli") / "unsorted.h5"
    n = 300_000
    rng = np.random.default_rng(1)
    t = np.sort(rng.integers(T0, T0 + 1_000_000, n)).astype(np.float64)
    t[UNSORTED_AT] = t[UNSORTED_AT - 1] - 100
    return write_h5(path, x=rng.integers(0, W, n), y=rng.integers(0, H, n), t=t, p=rng.integers(0, 2, n))


def run_cli(capsys, argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(rc, err) -> str:
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("livenight: error: "), err
    assert "Traceback" not in err
    return lines[0]


def read_png(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


def expected_event_frame(ev: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """ON red, OFF blue, white background; the last event at a pixel wins (written independently)."""
    img = np.full((H, W, 3), 255, np.uint8)
    sel = ev[(ev["t"] >= t0) & (ev["t"] < t1)]
    for e in sel:
        img[e["y"], e["x"]] = ON if e["p"] else OFF
    return img


# ---------------------------------------------------------------------------- help
def test_help_mentions_the_main_options_with_units(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: livenight")
    for option in ("--replay FILE", "--out DIR", "--speed X", "--max-frames N", "--window-ms MS", "--no-gui",
                   "--save-gt", "--save-evframe", "--windows"):
        assert option in out
    assert "times real time" in out  # --speed's unit
    assert "milliseconds" in out  # --window-ms's unit
    for cmd in ("demo", "simulate", "info", "bench"):
        assert f"livenight {cmd}" in out


@pytest.mark.parametrize("argv, usage", [
    (["info", "--help"], "usage: livenight info"),
    (["simulate", "--help"], "usage: livenight simulate"),
    (["demo", "--help"], "usage: livenight demo"),
    (["bench", "--help"], "usage: livenight bench"),
    (["bench", "ring", "--help"], "usage: livenight bench"),
])
def test_subcommand_help(capsys, argv, usage):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(usage)
    if argv[0] in ("simulate", "demo"):
        assert "--seconds" in out and "seconds" in out and "--out" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    assert re.fullmatch(r"livenight \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_replay_or_camera_is_required(capsys):
    with pytest.raises(SystemExit) as ei:
        main([])
    assert ei.value.code == 2
    assert "--replay" in capsys.readouterr().err


# ---------------------------------------------------------------------------- replay
def test_replay_writes_frames_gt_and_event_frames(recording, tmp_path, capsys):
    path, ev, images = recording
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(capsys, ["--replay", path, "--engine", "complementary", "--no-gui", "--out", out_dir, "--save-gt", "--save-evframe",
                                    "--max-frames", 5])
    assert rc == 0, err
    assert "5 frames" in out
    assert str(out_dir.resolve()) in out
    names = [f"frame_{k:05d}.png" for k in range(5)]
    assert sorted(p.name for p in out_dir.iterdir() if p.is_file()) == names
    assert sorted(p.name for p in (out_dir / "gt").iterdir()) == names
    assert sorted(p.name for p in (out_dir / "events").iterdir()) == [f"evs_{k:05d}.png" for k in range(5)]

    origin = int(ev["t"][0])
    for k in range(5):
        frame = read_png(out_dir / names[k])
        assert frame.mode == "L" and frame.size == (W, H)  # 8-bit grey, sensor size (PIL gives (width, height))

        gt = read_png(out_dir / "gt" / names[k])
        assert gt.mode == "L" and gt.size == (W, H)
        # time windows: the last reference frame exposed before the window's end, here image k
        t1 = origin + (k + 1) * WINDOW_US
        assert int(np.searchsorted(IMG_TS, t1, side="right")) - 1 == k
        np.testing.assert_array_equal(np.asarray(gt), images[k])

        evs = read_png(out_dir / "events" / f"evs_{k:05d}.png")
        assert evs.mode == "RGB" and evs.size == (W, H)
        got = np.asarray(evs)
        want = expected_event_frame(ev, origin + k * WINDOW_US, t1)
        np.testing.assert_array_equal(got, want)
        assert np.all(got[want[..., 1] == 0][:, 1] == 0)  # coloured exactly where events were
        assert (got == ON).all(-1).sum() > 100 and (got == OFF).all(-1).sum() > 100

    # frame 0 (fresh state): pixels without events are mid-grey, ON-only pixels brighter, OFF-only darker
    frame0 = np.asarray(read_png(out_dir / names[0]))
    w0 = ev[ev["t"] < origin + WINDOW_US]
    on = np.zeros((H, W), int)
    off = np.zeros((H, W), int)
    np.add.at(on, (w0["y"][w0["p"] == 1], w0["x"][w0["p"] == 1]), 1)
    np.add.at(off, (w0["y"][w0["p"] == 0], w0["x"][w0["p"] == 0]), 1)
    assert np.all(frame0[(on == 0) & (off == 0)] == 127)
    assert np.all(frame0[(on > 0) & (off == 0)] > 127)
    assert np.all(frame0[(on == 0) & (off > 0)] < 127)


def test_replay_windows_rled_gives_num_imgs_minus_one_frames(recording, tmp_path, capsys):
    path, _, images = recording
    out_dir = tmp_path / "rled"
    rc, out, err = run_cli(capsys, ["--replay", path, "--engine", "complementary", "--no-gui", "--out", out_dir, "--windows", "rled",
                                    "--save-gt"])
    assert rc == 0, err
    with RledFile(path) as f:
        assert f.num_images == N_IMG and f.event_indices.shape == (N_IMG, 2)
    assert f"{N_IMG - 1} frames" in out
    frames = sorted(p.name for p in out_dir.glob("frame_*.png"))
    assert frames == [f"frame_{k:05d}.png" for k in range(N_IMG - 1)]
    for k in (0, 12, N_IMG - 2):  # RLED windows: frame k goes with image k
        np.testing.assert_array_equal(np.asarray(read_png(out_dir / "gt" / f"frame_{k:05d}.png")), images[k])


def test_replay_without_out_prints_a_summary(recording, capsys):
    path, _, _ = recording
    rc, out, err = run_cli(capsys, ["--replay", path, "--engine", "complementary", "--no-gui", "--max-frames", 3, "--speed", 0])
    assert rc == 0, err
    assert "3 frames" in out
    assert err == ""


def test_info(recording, capsys):
    path, ev, _ = recording
    rc, out, err = run_cli(capsys, ["info", path])
    assert rc == 0, err
    assert f"{W}x{H}" in out
    assert f"{ev.size} " in out
    assert f"frames         {N_IMG}" in out
    assert "event_indices  yes" in out
    assert f"{int(ev['t'][0])} .. {int(ev['t'][-1])} µs (events/ts stored in us)" in out


# ---------------------------------------------------------------------------- bad input
def test_error_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.h5"
    rc, _, err = run_cli(capsys, ["--replay", missing, "--no-gui"])
    line = assert_one_error_line(rc, err)
    assert str(missing) in line and "no such file" in line


def test_error_not_hdf5(tmp_path, capsys):
    path = tmp_path / "notes.h5"
    path.write_text("this is not HDF5\n")
    rc, _, err = run_cli(capsys, ["--replay", path, "--no-gui", "--out", tmp_path / "o"])
    line = assert_one_error_line(rc, err)
    assert str(path) in line and "not an HDF5 file" in line


def test_error_missing_events_ts(tmp_path, capsys):
    path = tmp_path / "nots.h5"
    with h5py.File(path, "w") as h:
        for name in ("xs", "ys", "ps"):
            h[f"events/{name}"] = np.zeros(5, np.int16)
    rc, _, err = run_cli(capsys, ["--replay", path, "--no-gui"])
    line = assert_one_error_line(rc, err)
    assert str(path) in line and "'events/ts'" in line


def test_error_unknown_extension_lists_known(tmp_path, capsys):
    path = tmp_path / "rec.xyz"
    path.write_bytes(b"\0" * 16)
    rc, _, err = run_cli(capsys, ["--replay", path, "--no-gui"])
    line = assert_one_error_line(rc, err)
    assert "'.xyz'" in line and ".h5" in line and ".hdf5" in line


def test_error_unsorted_keeps_the_frames_already_written(unsorted_recording, tmp_path, capsys):
    out_dir = tmp_path / "partial"
    rc, out, err = run_cli(capsys, ["--replay", unsorted_recording, "--engine", "complementary", "--no-gui", "--out", out_dir])
    line = assert_one_error_line(rc, err)
    assert str(unsorted_recording) in line
    assert "timestamps not sorted" in line and f"index {UNSORTED_AT}" in line
    # loses nothing: every frame written before the error is a complete PNG, numbered without gaps
    written = sorted(p.name for p in out_dir.iterdir() if p.is_file())
    assert len(written) >= 15  # the first chunk (262144 of 300000 events) covers ~21 windows of 40 ms
    assert written == [f"frame_{k:05d}.png" for k in range(len(written))]
    for name in written:
        with Image.open(out_dir / name) as im:
            im.verify()
        im = read_png(out_dir / name)
        assert im.mode == "L" and im.size == (W, H)


def test_error_windows_rled_without_event_indices(tmp_path, capsys):
    i = np.arange(1000)
    path = write_h5(tmp_path / "noidx.h5", x=i % W, y=i % H, t=T0 + 100.0 * i, p=i % 2)
    rc, _, err = run_cli(capsys, ["--replay", path, "--no-gui", "--windows", "rled"])
    line = assert_one_error_line(rc, err)
    assert "event_indices" in line and "--windows time" in line


def test_error_camera_not_available(capsys):
    rc, _, err = run_cli(capsys, ["--camera", "davis", "--no-gui"])
    line = assert_one_error_line(rc, err)
    assert "'davis'" in line and ".h5" in line


def test_error_negative_speed_is_rejected(recording, capsys):
    """``--speed -1`` must be refused like any bad value, not silently run unpaced."""
    path, _, _ = recording
    rc, _, err = run_cli(capsys, ["--replay", path, "--no-gui", "--max-frames", 1, "--speed", -1])
    line = assert_one_error_line(rc, err)
    assert "speed" in line


def test_error_events_not_a_group_is_one_line(tmp_path, capsys):
    """A malformed layout (``events`` is a dataset) is reported like the others, without a traceback."""
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as h:
        h["events"] = np.arange(10)
    rc, _, err = run_cli(capsys, ["--replay", path, "--no-gui"])
    line = assert_one_error_line(rc, err)
    assert str(path) in line


def test_error_subprocess_exit_code_and_single_line(tmp_path):
    missing = tmp_path / "gone.h5"
    proc = subprocess.run([sys.executable, "-m", "livenight", "--replay", str(missing), "--no-gui"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"livenight: error: {missing}: no such file"]
    assert proc.stdout == ""


# ---------------------------------------------------------------------------- simulate / demo
def test_simulate_writes_a_readable_recording(tmp_path, capsys):
    pytest.importorskip("livenight.simulate", reason="livenight.simulate is not written yet")
    path = tmp_path / "f.h5"
    rc, out, err = run_cli(capsys, ["simulate", "--out", path, "--seconds", 0.3])
    assert rc == 0, err
    assert f"wrote {path}" in out
    with RledFile(path) as f:
        assert f.num_events > 0
        assert f.sensor_size == (W, H)
        assert f.ts_unit == "us"
        assert f.t_last_us - f.t_first_us <= 300_000
        assert 7 <= f.num_images <= 8  # 0.3 s at 25 fps
        assert f.event_indices is not None and f.event_indices.shape == (f.num_images, 2)
        list(f.iter_chunks())  # sorted and inside the sensor


def test_simulate_same_seed_same_events(tmp_path, capsys):
    pytest.importorskip("livenight.simulate", reason="livenight.simulate is not written yet")
    paths = [tmp_path / "a.h5", tmp_path / "b.h5"]
    for p in paths:
        rc, _, err = run_cli(capsys, ["simulate", "--out", p, "--seconds", 0.2, "--seed", 3, "--size", "64x48"])
        assert rc == 0, err
    with RledFile(paths[0]) as a, RledFile(paths[1]) as b:
        assert a.sensor_size == b.sensor_size == (64, 48)
        np.testing.assert_array_equal(a.read_events(0, a.num_events), b.read_events(0, b.num_events))


def test_demo_writes_frames(tmp_path, capsys):
    pytest.importorskip("livenight.simulate", reason="livenight.simulate is not written yet")
    out_dir = tmp_path / "demo"
    rc, out, err = run_cli(capsys, ["demo", "--no-gui", "--out", out_dir, "--max-frames", 5, "--seconds", 0.5])
    assert rc == 0, err
    names = [f"frame_{k:05d}.png" for k in range(5)]
    assert sorted(p.name for p in out_dir.glob("frame_*.png")) == names
    assert sorted(p.name for p in (out_dir / "events").glob("evs_*.png")) == [f"evs_{k:05d}.png" for k in range(5)]
    assert len(list((out_dir / "gt").glob("frame_*.png"))) >= 1
    for name in names:
        im = read_png(out_dir / name)
        assert im.mode == "L" and im.size == (W, H)
    assert not (out_dir / "night.h5").exists()  # only with --keep-h5
