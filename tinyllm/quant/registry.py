"""Registry entries of the quantization package's ops: ``dequant_linear`` and LKD's
``fake_quantize_ste`` (straight-through: ``differentiable=False``, its gradient is checked in
tests/quant/test_lkd.py).

``tinyllm/registry/__init__.py``'s ``FAMILY_MODULES`` lists this module, so the registry's
checks run on it with every other op. Samples: odd sizes, 2- and 4-bit codes, groups that do not
divide K, with and without zeros and bias; the packed weight, scales, zeros and table carry
no gradient (positions 1-4 in ``no_grad``).
"""

from __future__ import annotations

import numpy as np

from tinyllm.quant.linear import dequant_linear
from tinyllm.quant.lkd import fake_quantize_ste
from tinyllm.quant.schemes import pack_codes
from tinyllm.registry import OpInfo, SampleInput, register


def _samples(rng, dtype):
    out = []
    for bits, (R, K, N), g, zeros, bias, lead in [
        (4, (3, 10, 5), 4, True, True, ()),
        (2, (1, 12, 3), 5, False, False, ()),
        (8, (4, 7, 6), 7, True, False, (2,)),
        (4, (1, 1 * 2, 1), 2, True, True, ()),
    ]:
        G = -(-K // g)
        codes = rng.integers(0, 2**bits, (N, K)).astype(np.uint8)
        packed = pack_codes(codes, bits)
        scales = rng.uniform(0.5, 1.5, (N, G)).astype(dtype)
        z = rng.integers(0, 2**bits, (N, G)).astype(dtype) if zeros else None
        table = (
            np.arange(2**bits, dtype=dtype) if bits != 2 else rng.standard_normal(4).astype(dtype)
        )
        x = rng.standard_normal(lead + (R, K)).astype(dtype)
        b = rng.standard_normal(N).astype(dtype) if bias else None
        out.append(
            SampleInput(
                (x, packed, scales, z, table, b),
                {"bits": bits, "group_size": g},
                name=f"int{bits}_g{g}_{'zp' if zeros else 'abs'}{'_bias' if bias else ''}",
                no_grad=(1, 2, 3, 4),
            )
        )
    return out


def _reference(x, packed, scales, zeros, table, bias=None, *, bits, group_size):
    N, K = packed.shape[0], x.shape[-1]
    stream = np.unpackbits(np.ascontiguousarray(packed), axis=1)[:, : K * bits].reshape(N, K, bits)
    q = stream.astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1))
    g = np.arange(K) // group_size
    z = 0.0 if zeros is None else zeros[:, g]
    w = (table[q] - z) * scales[:, g]
    y = x @ w.T
    return y if bias is None else y + bias


register(
    OpInfo(
        "dequant_linear",
        dequant_linear,
        _samples,
        _reference,
        family="quant",
        kernels=("dequant_matmul",),
    )
)


def _ste_samples(rng, dtype):
    """Weights s (k + u) with |u| <= 0.4: no value sits near a rounding boundary, so float32
    and float64 agree on every code; k spans past the code range, so some codes clamp."""
    out = []
    cases = [((3, 10), 4, 4, True), ((2, 8), 8, 2, False), ((1, 1), 1, 8, True)]
    for (N, K), g, bits, asym in cases:
        G = -(-K // g)
        scale = rng.uniform(0.5, 1.5, (N, G)).astype(dtype)
        zero = rng.integers(0, 2**bits, (N, G)) if asym else np.full((N, G), 2 ** (bits - 1))
        k = rng.integers(-(2**bits), 2**bits, (N, K)) - 0.0
        u = rng.uniform(-0.4, 0.4, (N, K))
        s = np.repeat(scale, g, axis=1)[:, :K].astype(np.float64)
        w = ((k + u) * s).astype(dtype)
        out.append(
            SampleInput((w, scale, zero.astype(dtype)), {"bits": bits, "group_size": g},
                        name=f"int{bits}_g{g}", no_grad=(0, 1, 2))
        )  # fmt: skip
    return out


def _ste_reference(w, scale, zero, *, bits, group_size):
    K = w.shape[1]
    s = np.repeat(scale, group_size, axis=1)[:, :K]
    z = np.repeat(zero, group_size, axis=1)[:, :K]
    return (np.clip(np.rint(w / s) + z, 0, 2**bits - 1) - z) * s


register(
    OpInfo(
        "fake_quantize_ste",
        fake_quantize_ste,
        _ste_samples,
        _ste_reference,
        family="quant",
        differentiable=False,
    )
)
