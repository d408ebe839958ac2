"""LETC on absolute device clocks: DAVIS / aedat4 timestamps are Unix-epoch µs (~1.7e15), where float32 seconds are
128 s apart. The grid must not depend on the clock's origin (it did: every event got one time, grids of 1e18)."""

from __future__ import annotations

import numpy as np

from livenight.letc import REBASE_ABOVE_US, LetcTable, official_times
from livenight.synthetic import random_events


def _table():
    rng = np.random.default_rng(0)
    sizes = [1, 50, 50, 50, 1]
    weights = [rng.normal(0, 0.3, (b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0, 0.1, b) for b in sizes[1:]]
    return LetcTable(weights, biases, num_bins=5)


def test_grid_is_the_same_on_an_epoch_clock_and_on_a_small_one():
    table = _table()
    small = random_events(20_000, (64, 48), rate_ev_per_s=5e5, seed=1, t0_us=1_000_000)
    epoch = small.copy()
    epoch["t"] += 1_733_300_000_000_000 - 1_000_000  # a DAVIS346 clock: Unix time in µs
    a = table.grid(small, (64, 48))
    b = table.grid(epoch, (64, 48))
    assert np.abs(a).max() < 100  # sane values (the unrebased epoch path gave ~1e18)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    t = official_times(epoch["t"])
    assert t[0] == 0 and np.unique(t).size > 1000  # distinct times survive the float32 conversion


def test_small_clocks_keep_the_official_conversion_bit_for_bit():
    t_us = np.array([3_000_000, 3_000_450, 3_012_345], dtype=np.int64)
    assert t_us[0] < REBASE_ABOVE_US
    np.testing.assert_array_equal(official_times(t_us), (t_us.astype(np.float64) / 1e6).astype(np.float32))
