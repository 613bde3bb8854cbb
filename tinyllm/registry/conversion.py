"""Registry entries for the copies and conversions that stay on the graph: clone,
contiguous, cast, to_device, and autocast's rounding to float16 values (``round_to``).

Their gradient is the identity (moved back to the input's dtype or device), so the generic
checks test the wrappers, the recorded graph and the un-broadcast-free identity backward.
``to_device`` is sampled on the CPU, to "cpu" (a GPU is optional); ``cast`` to the sample's
own dtype (the float32 run must stay float32): tests/test_registry.py checks a cast between
float32 and float64 and its gradient's dtype separately.

``round_to`` is straight-through: its backward rounds dy the same way instead of
differentiating the rounding (whose derivative is 0 almost everywhere), so finite
differences do not apply and its input is sampled without grad (``differentiable=False``):
the registry checks its forward against NumPy's float16 round trip, and
tests/amp/test_autocast.py checks the straight-through gradient.
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.amp.low_precision import round_to
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


def _round_samples(rng, dtype):
    big = np.array([1.0, -3.0e4, 7.0e4, 65519.0, 65520.0], dtype=dtype)  # float16 overflow
    return [
        SampleInput((s.args[0] * 100, "float16"), name=s.name, no_grad=(0,))
        for s in _copy_samples(rng, dtype)
    ] + [SampleInput((big, "float16"), name="overflow to inf", no_grad=(0,))]


def _round_reference(x, dtype):
    with np.errstate(over="ignore"):
        return np.asarray(x).astype(np.float16).astype(np.asarray(x).dtype)


register(
    OpInfo(
        "round_to",
        round_to,
        _round_samples,
        _round_reference,
        family="conversion",
        differentiable=False,
    )
)
