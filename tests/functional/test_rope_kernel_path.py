"""F.rotary_embedding has one home for its arithmetic: tinyllm.kernels.rope_forward/backward.

Every call goes through the kernel layer -- one [T, D/2] table, per-sequence positions
(tables [B, 1, T, D/2]), 16-bit floats -- so the kernels' reference tier (the readable math)
and the Numba/CUDA tiers tested against it are the only RoPE arithmetic the op runs.
"""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import kernels


def _rope_complex(x, positions, base=10000.0):
    """Half layout as a complex rotation: (a + ib) e^{i m theta}, float64."""
    D = x.shape[-1]
    theta = base ** (-2.0 * np.arange(D // 2) / D)
    z = (x[..., : D // 2] + 1j * x[..., D // 2 :]) * np.exp(1j * positions[..., None] * theta)
    return np.concatenate([z.real, z.imag], axis=-1)


CALLS = {
    "one table [T, D/2]": (None, np.float64, "numba"),
    "explicit positions [T]": (np.array([3, 0, 7, 2, 9]), np.float64, "numba"),
    "per-sequence positions [B, 1, T]": (
        np.array([[[0, 1, 2, 3, 4]], [[9, 8, 7, 6, 5]]]),
        np.float64,
        "numba",
    ),
    "per-sequence positions, float16": (
        np.array([[[0, 1, 2, 3, 4]], [[4, 5, 6, 7, 8]]]),
        np.float16,
        "reference",
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_rotary_embedding_runs_the_kernel_layer_in_both_directions(name):
    positions, dtype, tier = CALLS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 8))
    dy = rng.standard_normal((2, 3, 5, 8))
    xt = tinyllm.tensor(x.astype(dtype), requires_grad=True)
    kernels.reset_counts()
    y = F.rotary_embedding(xt, positions)
    y.backward(dy.astype(dtype))
    counts = kernels.tier_counts()
    assert counts.get(("rope_forward", tier)) == 1 and counts.get(("rope_backward", tier)) == 1
    assert y.dtype == dtype and xt.grad.dtype == dtype
    pos = np.broadcast_to(np.arange(5) if positions is None else positions, (2, 3, 5)).astype(float)
    x, dy = (a.astype(dtype).astype(np.float64) for a in (x, dy))  # the values stored
    # float64: rounding only. float16: the cos/sin tables are float16 too (2^-11 relative
    # each), so a' = a cos - b sin is off by up to 2^-11 (|a| + |b|), plus its own rounding
    for got, value, angle in ((y.detach(), x, pos), (xt.grad, dy, -pos)):
        atol = 1e-14 if dtype == np.float64 else 3 * 2.0**-11 * np.abs(value).max()
        # backward = rotation by the negative angle (the transpose of an orthogonal map)
        np.testing.assert_allclose(got.numpy(), _rope_complex(value, angle), rtol=0, atol=atol)
