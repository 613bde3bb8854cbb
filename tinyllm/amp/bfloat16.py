"""bfloat16 rounding on float32 arrays, for NumPy and CuPy alike (CuPy has no bfloat16 dtype).

bfloat16 keeps float32's sign and 8 exponent bits and the top 7 of its 23 mantissa bits.
Rounding to nearest, ties to even, on the float32 bit pattern u (an unsigned 32-bit int):

    u <- (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000

Adding 0x7FFF carries into bit 16 exactly when the dropped 16 bits exceed one half ulp; the
extra (u >> 16) & 1 carries on an exact half only when the kept last bit is odd (ties to
even). A carry out of the mantissa bumps the exponent, which is the correct rounding too
(up to inf past bfloat16's max 3.39e38). NaNs are kept as quiet NaNs of the same sign (the
formula could turn a NaN with only low payload bits into inf).

``round_to_bfloat16`` returns float32 values that are exactly representable in bfloat16:
arithmetic then runs in float32, which is what "bf16 storage, fp32 compute" needs.
"""

from __future__ import annotations

import numpy as np

from tinyllm.backend import get_array_module


def round_to_bfloat16(x):
    """float32 array -> float32 array of the nearest bfloat16 values (ties to even)."""
    xp = get_array_module(x)
    if x.dtype != np.float32:
        raise TypeError(f"round_to_bfloat16: expected a float32 array, got dtype {x.dtype}")
    u = x.view(xp.uint32)
    rounded = (u + xp.uint32(0x7FFF) + ((u >> xp.uint32(16)) & xp.uint32(1))) & xp.uint32(
        0xFFFF0000
    )
    quiet_nan = (u | xp.uint32(0x00400000)) & xp.uint32(0xFFFF0000)
    return xp.where(xp.isnan(x), quiet_nan, rounded).view(xp.float32)
