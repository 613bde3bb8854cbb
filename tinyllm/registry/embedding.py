"""Registry entry for the embedding lookup (with and without ``padding_idx``)."""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import randn
from tinyllm.tensor import Tensor


# ---------------------------------------------------------------- embedding
def _embedding_op(idx, weight, padding_idx=None):
    """F.embedding; with padding_idx, the table's padding row is first multiplied by 0.

    The padding row gets no gradient by definition, yet the forward reads it, so finite
    differences would see a derivative there. Zeroing that row of the *input* makes the
    function truly independent of it; the op's own zeroing of that row is tested in
    tests/functional/test_norms_activations.py, and this entry still checks that the right
    row (a negative padding_idx included) is the one skipped.
    """
    if padding_idx is not None:
        keep = np.ones((weight.shape[0], 1), dtype=weight.dtype)
        keep[padding_idx] = 0
        weight = weight * Tensor(backend.to_device(keep, weight.device))
    return F.embedding(idx, weight, padding_idx)


def _embedding_ref(idx, weight, padding_idx=None):
    if padding_idx is not None:
        weight = weight.copy()
        weight[padding_idx] = 0
    return np.take(weight, idx, axis=0)


def _embedding_composite(idx, weight, padding_idx=None):
    if padding_idx is not None:
        keep = np.ones((weight.shape[0], 1), dtype=weight.dtype)
        keep[padding_idx] = 0
        weight = weight * Tensor(backend.to_device(keep, weight.device))
    return weight[idx.data]


def _embedding_samples(rng, dtype):
    padded = rng.integers(0, 6, (3, 4))
    padded[0, :2] = [0, 5]  # both padding rows of the samples below occur
    return [
        SampleInput((rng.integers(0, 7, (2, 5)), randn(rng, dtype, 7, 4)), name="repeats"),
        SampleInput((rng.integers(0, 5, 6), randn(rng, dtype, 5, 3)), name="1-d index"),
        SampleInput((np.array(2), randn(rng, dtype, 4, 3)), name="0-d index"),
        SampleInput((np.zeros(3, dtype=np.int64), randn(rng, dtype, 1, 2)), name="one row"),
        SampleInput((padded, randn(rng, dtype, 6, 3), 0), name="padding_idx 0"),
        SampleInput((padded, randn(rng, dtype, 6, 3)), {"padding_idx": -1}, "padding_idx -1"),
        SampleInput((padded.T, randn(rng, dtype, 3, 6).T), name="non-contiguous index and table"),
    ]


register(
    OpInfo(
        "embedding",
        _embedding_op,
        _embedding_samples,
        _embedding_ref,
        composite=_embedding_composite,
        family="embedding",
    )
)
