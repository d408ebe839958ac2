"""The Python API: livenight.reconstruct in one call, and the pieces for one's own loop."""

from __future__ import annotations

import numpy as np
import pytest

import livenight
from livenight.simulate import write_night

SIZE = (48, 40)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "night.h5"
    sim = write_night(path, seconds=0.5, size=SIZE, seed=11)
    return path, sim


def test_reconstruct_yields_frames_with_their_time_span_and_reference(night):
    path, sim = night
    frames = list(livenight.reconstruct(path, backend="complementary"))
    t0 = int(sim.events["t"][0])
    assert len(frames) == (int(sim.events["t"][-1]) - t0) // 40_000  # contiguous 40 ms windows, complete ones
    for k, f in enumerate(frames):
        assert f.image.shape == (SIZE[1], SIZE[0]) and f.image.dtype == np.uint8
        assert (f.t0_us, f.t1_us) == (t0 + 40_000 * k, t0 + 40_000 * (k + 1))
        # the reference is the ground-truth image exposed last before the window's end
        i = int(np.searchsorted(sim.frame_end_us, f.t1_us, side="right")) - 1
        np.testing.assert_array_equal(f.reference, sim.frames[i])
    assert np.mean([f.image.std() for f in frames]) > 0


def test_reconstruct_takes_a_model_windows_and_a_frame_limit(night):
    path, _ = night
    frames = list(livenight.reconstruct(path, windows={"kind": "time", "window_us": 20_000, "stride_us": 20_000},
                                        max_frames=5))  # the bundled model
    assert len(frames) == 5 and all(f.t1_us - f.t0_us == 20_000 for f in frames)
    assert [f.number for f in frames] == list(range(5))


def test_leaving_the_loop_early_stops_the_pipeline(night):
    path, _ = night
    gen = livenight.reconstruct(path, backend="complementary")
    first = next(gen)
    gen.close()  # what a `break` does: the source and the engine are closed, nothing more is read
    assert first.number == 0
    with pytest.raises(StopIteration):
        next(gen)


def test_bad_arguments_fail_with_one_line(night):
    path, _ = night
    with pytest.raises(ValueError, match="speed must be finite"):
        next(livenight.reconstruct(path, speed=float("inf")))
    with pytest.raises(livenight.LivenightError, match="unknown engine 'gpu'"):
        next(livenight.reconstruct(path, backend="gpu"))
