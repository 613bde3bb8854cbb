"""Registry entries for the copies and conversions that stay on the graph: clone,
contiguous, cast and to_device.

Their gradient is the identity (moved back to the input's dtype or device), so the generic
checks test the wrappers, the recorded graph and the un-broadcast-free identity backward.
``to_device`` is sampled on the CPU, to "cpu" (a GPU is optional); ``cast`` to the sample's
own dtype (the float32 run must stay float32): tests/test_registry.py checks a cast between
float32 and float64 and its gradient's dtype separately.
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import randn


def _copy_samples(rng, dtype):
    return [
        SampleInput((randn(rng, dtype, 3, 4),), name="matrix"),
        SampleInput((randn(rng, dtype),), name="0-d"),
        SampleInput((randn(rng, dtype, 1),), name="size 1"),
        SampleInput((randn(rng, dtype, 2, 3, 5).transpose(2, 0, 1),), name="non-contiguous"),
    ]


def _with(extra):
    def samples(rng, dtype):
        return [
            SampleInput(s.args + (extra(dtype),), s.kwargs, s.name)
            for s in _copy_samples(rng, dtype)
        ]

    return samples


register(OpInfo("clone", F.clone, _copy_samples, np.copy, family="conversion"))
register(
    OpInfo("contiguous", F.contiguous, _copy_samples, np.ascontiguousarray, family="conversion")
)
register(
    OpInfo(
        "cast",
        F.cast,
        _with(lambda dtype: dtype),
        lambda x, dtype: x.astype(dtype),
        family="conversion",
    )
)
register(
    OpInfo(
        "to_device",
        F.to_device,
        _with(lambda dtype: "cpu"),
        lambda x, device: x.copy(),
        family="conversion",
    )
)
