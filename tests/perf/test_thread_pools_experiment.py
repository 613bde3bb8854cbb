"""``experiments/thread_pools.py``: its "one pool" products (row blocks and batch entries in a
parallel Numba kernel over single-threaded SciPy BLAS) are the step's products, checked
against ``np.matmul`` in a child process of their own (the child changes BLAS pools)."""

import pytest

pytest.importorskip("numba")
pytest.importorskip("scipy")
pytest.importorskip("threadpoolctl")


def test_one_pool_products_equal_numpys(load_experiment):
    experiment = load_experiment("thread_pools")
    spec = {"config": experiment._config(quick=True), "batch": 2, "seq_len": 32, "warmup": 0,
            "steps": 1, "mode": "gemms", "pool": "onepool"}  # fmt: skip
    result = experiment.run_child(spec)
    # float32 products of up to 256 terms, each block through the same BLAS kernels
    assert result["worst_relative_difference"] <= 1e-5
    assert result["ms"] > 0
