"""Sampling filters, batching, and checkpoint files."""

import numpy as np
import pytest

from tinyllm.data import default_corpus_bytes, random_windows, sequential_windows, split_bytes
from tinyllm.generation import sample_next, top_k_filter, top_p_filter
from tinyllm.io import CheckpointError, load_checkpoint, save_checkpoint


def test_default_corpus_is_pydoc_topics_joined_in_key_order():
    from pydoc_data.topics import topics

    data = default_corpus_bytes()
    expected = "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
    assert data.tobytes() == expected
    train, val = split_bytes(data)
    assert len(train) == int(len(data) * 0.9) and len(train) + len(val) == len(data)


def test_random_windows_are_shifted_by_one_and_seeded():
    data = np.arange(1000, dtype=np.int32)
    x, y = random_windows(data, 4, 16, np.random.default_rng(0))
    np.testing.assert_array_equal(y, x + 1)
    x2, _ = random_windows(data, 4, 16, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)
    assert x.dtype == np.int64 and x.shape == (4, 16)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        random_windows(data[:10], 1, 16, np.random.default_rng(0))


def test_sequential_windows_cover_in_order():
    data = np.arange(101)
    batches = list(sequential_windows(data, 3, 10))
    xs = np.concatenate([x for x, _ in batches])
    assert xs.shape == (10, 10)
    np.testing.assert_array_equal(xs.reshape(-1), np.arange(100))


def test_top_k_and_top_p_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert (
        np.isinf(top_k_filter(logits, 2)[0, 2:]).all()
        and np.isfinite(top_k_filter(logits, 2)[0, :2]).all()
    )
    kept = np.isfinite(top_p_filter(logits, 0.7))[0]
    np.testing.assert_array_equal(kept, [True, True, False, False])  # 0.5 < 0.7, 0.8 crosses
    kept = np.isfinite(top_p_filter(logits, 0.5))[0]
    np.testing.assert_array_equal(kept, [True, False, False, False])


def test_sample_next_matches_the_distribution():
    probs = np.array([0.1, 0.6, 0.3])
    rng = np.random.default_rng(0)
    draws = np.concatenate([sample_next(np.log(probs)[None], rng) for _ in range(6000)])
    freq = np.bincount(draws, minlength=3) / len(draws)
    # binomial standard error at n = 6000 is at most 0.0065: 4 sigma
    np.testing.assert_allclose(freq, probs, atol=0.026)
    assert sample_next(np.log(probs)[None], rng, temperature=0)[0] == 1


def test_checkpoint_atomic_round_trip_and_refusals(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": np.arange(6.0).reshape(2, 3)}, {"step": 7, "nested": {"a": [1]}})
    arrays, meta = load_checkpoint(path)
    np.testing.assert_array_equal(arrays["w"], np.arange(6.0).reshape(2, 3))
    assert meta == {"step": 7, "nested": {"a": [1]}}
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_checkpoints_get_the_mode_a_plain_open_would_give(tmp_path):
    """0o666 & ~umask for a new file (not mkstemp's 0o600), the old mode when replacing."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path / "c.safetensors", {"w": np.zeros(2)}, {})
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        os.chmod(path, 0o604)
        save_checkpoint(path, {"w": np.ones(2)}, {})
        assert stat.S_IMODE(path.stat().st_mode) == 0o604
    finally:
        os.umask(old)


def test_sequential_windows_whole_split_includes_the_tail():
    """drop_last=False: every token after the first is a target exactly once, the r leftover
    targets in a final [1, r] batch; max_batches still stops early."""
    data = np.arange(108)
    batches = list(sequential_windows(data, 3, 10, drop_last=False))
    assert [x.shape for x, _ in batches] == [(3, 10), (3, 10), (3, 10), (1, 10), (1, 7)]
    ys = np.concatenate([y.reshape(-1) for _, y in batches])
    np.testing.assert_array_equal(ys, np.arange(1, 108))
    assert len(list(sequential_windows(data, 3, 10, max_batches=2, drop_last=False))) == 2
    with pytest.raises(ValueError, match="batch_size and seq_len must be positive, got 0"):
        list(sequential_windows(data, 0, 10))
