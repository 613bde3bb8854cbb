"""Registry entry of the quantization package's differentiable op, ``dequant_linear``.

``tinyllm/registry/__init__.py``'s ``FAMILY_MODULES`` lists this module, so the registry's
checks run on it with every other op. Samples: odd sizes, 2- and 4-bit codes, groups that do not
divide K, with and without zeros and bias; the packed weight, scales, zeros and table carry
no gradient (positions 1-4 in ``no_grad``).
"""

from __future__ import annotations

import numpy as np

from tinyllm.quant.linear import dequant_linear
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
