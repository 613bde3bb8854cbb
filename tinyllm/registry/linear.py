"""Registry entry for ``F.linear`` (y = x W^T + b, batch dims flattened into one GEMM)."""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import randn


# ---------------------------------------------------------------- linear
def _linear_samples(rng, dtype):
    return [
        SampleInput(
            (randn(rng, dtype, 3, 4), randn(rng, dtype, 5, 4), randn(rng, dtype, 5)),
            name="matrix with bias",
        ),
        SampleInput((randn(rng, dtype, 2, 3, 4), randn(rng, dtype, 6, 4)), name="batched"),
        SampleInput(
            (randn(rng, dtype, 4), randn(rng, dtype, 3, 4), randn(rng, dtype, 3)),
            name="1-d input",
        ),
        SampleInput(
            (randn(rng, dtype, 3, 4), randn(rng, dtype, 1, 4), randn(rng, dtype, 1)),
            name="one output",
        ),
        SampleInput(
            (randn(rng, dtype, 1, 1, 3), randn(rng, dtype, 2, 3), randn(rng, dtype, 2)),
            name="size-1 batch dims",
        ),
        SampleInput(
            (randn(rng, dtype, 2, 3, 1, 7), randn(rng, dtype, 5, 7), randn(rng, dtype, 5)),
            name="4-d, odd sizes",
        ),
        SampleInput(
            (
                randn(rng, dtype, 5, 3).T,
                randn(rng, dtype, 5, 4).T,
                randn(rng, dtype, 4),
            ),
            name="non-contiguous input and weight",
        ),
    ]


def _linear_ref(x, weight, bias=None):
    y = np.einsum("...i,oi->...o", x, weight)
    return y + bias if bias is not None else y


def _linear_composite(x, weight, bias=None):
    y = x @ weight.T
    return y + bias if bias is not None else y


register(
    OpInfo(
        "linear",
        F.linear,
        _linear_samples,
        _linear_ref,
        composite=_linear_composite,
        family="linear",
    )
)
