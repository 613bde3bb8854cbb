"""The NumPy/CuPy compat layer."""

import numpy as np

from tinyllm import backend


def test_scatter_add_fast_path_equals_add_at():
    rng = np.random.default_rng(0)
    for index in (rng.integers(0, 7, 50), rng.integers(-7, 7, 50), np.array([3, 3, 3])):
        values = rng.standard_normal((len(index), 4))
        got = np.zeros((7, 4))
        backend.scatter_add(got, index, values)
        want = np.zeros((7, 4))
        np.add.at(want, index, values)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    got = np.zeros((3, 4))
    backend.scatter_add(got, (np.array([0, 2, 0]), np.array([1, 1, 1])), np.ones(3))
    np.testing.assert_array_equal(got[:, 1], [2, 0, 1])  # other index forms: np.add.at
