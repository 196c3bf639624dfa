"""Array helpers of the simulator core."""

from __future__ import annotations

import numpy as np

from gym_slaterec.core.arrays import row_count


def test_row_count_matches_count_nonzero_for_every_layout():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (7, 10), (300, 255), (5, 256), (3, 1000)):
        mask = rng.random(shape) < 0.9
        np.testing.assert_array_equal(row_count(mask), np.count_nonzero(mask, axis=1))
    mask = np.ones((4, 255), dtype=bool)  # 255 per row: the largest uint8 sum
    assert (row_count(mask) == 255).all()
    strided = (rng.random((6, 20)) < 0.5)[:, ::2]
    np.testing.assert_array_equal(row_count(strided), np.count_nonzero(strided, axis=1))
