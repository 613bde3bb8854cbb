"""``experiments/thread_pools.py``: its "one pool" products (row blocks and batch entries in a
parallel Numba kernel over single-threaded SciPy BLAS) are the step's products, checked
against ``np.matmul`` in a child process of their own (the child changes BLAS pools)."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("numba")
pytest.importorskip("scipy")
pytest.importorskip("threadpoolctl")

ROOT = Path(__file__).resolve().parents[2]


def _experiment():
    spec = importlib.util.spec_from_file_location(
        "thread_pools", ROOT / "experiments" / "thread_pools.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_pool_products_equal_numpys():
    experiment = _experiment()
    spec = {"config": experiment._config(quick=True), "batch": 2, "seq_len": 32, "warmup": 0,
            "steps": 1, "mode": "gemms", "pool": "onepool"}  # fmt: skip
    result = experiment.run_child(spec)
    # float32 products of up to 256 terms, each block through the same BLAS kernels
    assert result["worst_relative_difference"] <= 1e-5
    assert result["ms"] > 0
