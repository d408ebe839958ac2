"""doctor, devices and record."""

from __future__ import annotations

import numpy as np
import pytest

from livenight.cli import main
from livenight.drivers.rled import RledFile
from livenight.simulate import write_night


def test_doctor_lists_every_component_with_a_reason(capsys):
    import importlib.util

    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = " ".join(lines)
    for part in ("torch engine", "onnxruntime engine", "tensorrt engine", "dv-processing", "Prophesee live",
                 "display for the viewer", "PyQt5"):
        assert part in names
    # whatever this machine has: the TensorRT line says ok exactly when the package imports, else why not
    trt = [ln for ln in lines if "tensorrt engine" in ln][0].strip()
    if importlib.util.find_spec("tensorrt") is None:
        assert trt.startswith("no") and "NVIDIA" in trt
    else:
        assert trt.startswith("ok") and "tensorrt " in trt
    assert [ln for ln in lines if "torch engine" in ln][0].strip().startswith("ok")


def test_devices_lists_what_the_backends_find(capsys, monkeypatch):
    import livenight.doctor as doctor

    # GIVEN no camera (whatever is plugged into this machine)
    monkeypatch.setattr(doctor, "devices", lambda: [])
    assert main(["devices"]) == 0
    assert "no event camera found" in capsys.readouterr().out
    # GIVEN two cameras
    monkeypatch.setattr(doctor, "devices", lambda: [("dv-processing", "davis://00000042 DAVIS346"),
                                                    ("metavision", "prophesee://00050423 EVK4")])
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "no event camera found" not in out
    assert "davis://00000042 DAVIS346" in out and "prophesee://00050423 EVK4" in out


def test_record_converts_a_recording_and_cuts_at_seconds(tmp_path, capsys):
    src = tmp_path / "in.h5"
    sim = write_night(src, seconds=0.4, size=(40, 30), seed=2)
    out = tmp_path / "rec.h5"
    assert main(["record", "--replay", str(src), "--out", str(out), "--seconds", "0.2"]) == 0
    with RledFile(out) as f:
        t0 = int(sim.events["t"][0])
        keep = sim.events[sim.events["t"] < t0 + 200_000]
        assert f.num_events == keep.size
        np.testing.assert_array_equal(f.read_events(0, f.num_events), keep)
        assert f.num_images == int(np.count_nonzero(sim.frame_end_us < t0 + 200_000))
        assert f.event_indices is not None and f.event_indices.shape == (f.num_images, 2)
    assert "wrote" in capsys.readouterr().out


def test_info_on_shared_recordings(capsys, shared_data):
    assert main(["info", str(shared_data("davis346.aedat4"))]) == 0
    out = capsys.readouterr().out
    assert "346x260" in out and "78830 over 2.360 s" in out and "frames         59" in out
    assert main(["info", str(shared_data("gen4_pointsource.dat"))]) == 0
    out = capsys.readouterr().out
    assert "1280x720" in out and "1218618 over 10.768 s" in out and "5856 .. 10773853 µs" in out


@pytest.mark.parametrize("kind", ["header_only", "random_payload"])
def test_info_and_replay_refuse_the_same_garbage(tmp_path, capsys, shared_data, kind):
    from livenight.drivers.prophesee_raw import read_raw_header

    src = shared_data("evt3_sample.raw")
    offset = read_raw_header(src).payload_offset
    data = src.read_bytes()[:offset]
    if kind == "random_payload":
        data += np.random.default_rng(0).bytes(20_000)
    bad = tmp_path / f"{kind}.raw"
    bad.write_bytes(data)
    assert main(["info", str(bad)]) == 2
    info_err = capsys.readouterr().err.strip().splitlines()[-1]
    out = tmp_path / "out"
    assert main(["--replay", str(bad), "--no-gui", "--max-frames", "5", "--out", str(out), "--engine",
                 "complementary"]) == 2
    replay_err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info_err == replay_err and info_err.startswith(f"livenight: error: {bad}: ")
    assert not list(out.glob("frame_*.png"))


def test_ets_command_writes_a_valid_rled_file(tmp_path, capsys):
    src = tmp_path / "in.h5"
    write_night(src, seconds=0.3, size=(40, 30), seed=4)
    out = tmp_path / "ets.h5"
    assert main(["ets", str(src), str(out)]) == 0
    with RledFile(src) as a, RledFile(out) as b:
        assert b.num_events == a.num_events and b.num_images == a.num_images
        ea, eb = a.read_events(0, a.num_events), b.read_events(0, b.num_events)
        assert np.all(np.diff(eb["t"]) >= 0)
        assert np.count_nonzero(ea["t"] != np.sort(eb["t"])) > 0  # trails were collapsed
        assert sorted(zip(ea["x"], ea["y"], ea["p"])) == sorted(zip(eb["x"], eb["y"], eb["p"]))
        assert b.event_indices is not None and b.event_indices.shape == (b.num_images, 2)
    assert main(["ets", str(src), str(src)]) == 2  # never overwrites its input


def test_record_keeps_the_reference_images_of_an_rled_replay(tmp_path, capsys):
    """record --replay x.h5 is the pipeline with an RLED sink: every event and every image, bit for bit."""
    src = tmp_path / "in.h5"
    write_night(src, seconds=0.3, size=(40, 30), seed=5)
    out = tmp_path / "copy.h5"
    assert main(["record", "--replay", str(src), "--out", str(out)]) == 0
    assert "reference images" in capsys.readouterr().out
    with RledFile(src) as a, RledFile(out) as b:
        assert b.num_events == a.num_events and b.num_images == a.num_images > 0
        np.testing.assert_array_equal(b.read_events(0, b.num_events), a.read_events(0, a.num_events))
        np.testing.assert_array_equal(b.image_timestamps_us(), a.image_timestamps_us())
        for i in range(a.num_images):
            np.testing.assert_array_equal(b.image(i), a.image(i))


# ---------------------------------------------------------------------------- one-line errors and warnings
@pytest.mark.parametrize("argv, message", [
    ([], "one of the arguments --replay --camera is required (see 'livenight --help')"),
    (["info"], "the following arguments are required: file (see 'livenight info --help')"),
    (["--replay", "x.h5", "--windows", "bogus"], "argument --windows: invalid choice: 'bogus'"),
])
def test_argparse_errors_are_one_line_without_the_usage_block(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("livenight: error: ") and message in err
    assert "usage:" not in err


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("option, value, message", [
    ("--device", "tpu:7", "--device 'tpu:7' is not a device livenight can use"),
    ("--device", "cuda:99", "--device cuda:99"),
    ("--speed", "nan", "--speed must be a finite number >= 0"),
    ("--speed", "inf", "--speed must be a finite number >= 0"),
    ("--speed", "-1", "--speed must be a finite number >= 0"),
    ("--dtype", "float16", "--dtype float16 needs a GPU"),
])
def test_bad_run_options_fail_before_the_recording_is_opened(tmp_path, capsys, option, value, message):
    # the recording does not exist: the option must be refused first, in one line
    rc = main(["--replay", str(tmp_path / "missing.h5"), "--no-gui", option, value])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("livenight: error: ") and message in err[0], err
    assert "missing.h5" not in err[0]


def test_cuda_device_without_cuda_is_one_line(tmp_path, capsys):
    if _has_cuda():
        pytest.skip("this machine has CUDA")
    rc = main(["--replay", str(tmp_path / "missing.h5"), "--no-gui", "--device", "cuda"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and "--device cuda: this torch" in err[0] and "--device cpu" in err[0]


@pytest.mark.parametrize("option, make, message", [
    ("--out", lambda d: d / "file.txt", "exists and is not a folder"),
    ("--out", lambda d: d / "file.txt" / "sub", "is a file, so the folder cannot be created"),
    ("--video", lambda d: d / "nowhere" / "v.mp4", "does not exist"),
    ("--video", lambda d: d, "is a folder, expected a file name"),
])
def test_unwritable_outputs_fail_before_the_run(tmp_path, capsys, option, make, message):
    (tmp_path / "file.txt").write_text("x")
    src = tmp_path / "in.h5"
    write_night(src, seconds=0.2, size=(40, 30), seed=1)
    rc = main(["--replay", str(src), "--no-gui", "--engine", "complementary", option, str(make(tmp_path))])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


def test_warnings_are_one_livenight_line_naming_the_cli_option(tmp_path, capsys, shared_data):
    # evt3_sample.raw has no geometry in its header: the size comes from the plugin name, with a warning
    out = tmp_path / "o"
    assert main(["--replay", str(shared_data("evt3_sample.raw")), "--no-gui", "--engine", "complementary",
                 "--max-frames", "2", "--out", str(out)]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(err) == 1 and err[0].startswith("livenight: warning: ") and "--sensor-size WxH" in err[0]
    assert ".py:" not in err[0] and "GeometryWarning" not in err[0]
