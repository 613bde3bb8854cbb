"""Registry entry for dropout.

Dropout draws a random mask, so its registry op reseeds (``tinyllm.manual_seed(0)``) before
every call: gradcheck calls it many times and must see the same mask each time.
"""

from __future__ import annotations

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import randn
from tinyllm.tensor import Tensor


# ---------------------------------------------------------------- dropout
def _seeded_dropout(x, p=0.5, training=True):
    """F.dropout after ``tinyllm.manual_seed(0)``: the same mask on every call."""
    tinyllm.manual_seed(0)
    return F.dropout(x, p, training)


def _dropout_ref(x, p=0.5, training=True):
    if p == 1:
        return np.zeros_like(x)
    keep = np.random.default_rng(0).random(x.shape, dtype=np.float32) >= p
    return x * keep / (1 - p)


def _dropout_composite(x, p=0.5, training=True):
    keep = np.random.default_rng(0).random(x.shape, dtype=np.float32) >= p
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return x * Tensor((keep * scale).astype(x.dtype))


def _dropout_samples(rng, dtype):
    # p=0 and training=False return the input Tensor itself (as PyTorch), which is no op
    # output for these generic checks (it stays a leaf that requires grad even under
    # no_grad): tests/functional/test_norms_activations.py checks those two cases.
    return [
        SampleInput((randn(rng, dtype, 4, 5),), name="p=0.5"),
        SampleInput((randn(rng, dtype, 2, 3, 7), 0.2), name="p=0.2, odd sizes"),
        SampleInput((randn(rng, dtype, 3, 4), 1.0), name="p=1 zeros"),
        SampleInput((randn(rng, dtype), 0.3), name="0-d"),
        SampleInput((randn(rng, dtype, 5, 4).T, 0.4), name="non-contiguous"),
    ]


register(
    OpInfo(
        "dropout",
        _seeded_dropout,
        _dropout_samples,
        _dropout_ref,
        composite=_dropout_composite,
        family="dropout",
    )
)
