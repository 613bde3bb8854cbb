"""ZeroQuant (Yao et al., NeurIPS 2022): group-wise weights, token-wise dynamic activations.

Weights: symmetric INT8/INT4 with one scale per group of g input columns of each row
(``schemes.quantize_weight(W, bits, "group", g)``). Activations: each token (row of X) is
quantized to INT8 with its own absmax computed at run time (``activations.quantize_rows_int8``),
instead of one static per-tensor scale from calibration:

    Y = (cx cw_hat^T) * s_x,   cx = rint(x / s_x),  s_x = max_k |x_k| / 127 per token

The paper's layer-by-layer distillation (LKD) is ``tinyllm.quant.lkd.lkd_quantize``
(``quantize_model(..., "zeroquant", lkd_steps=N)``, ``tinyllm quantize --lkd-steps N``).
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm.quant.activations import quantize_rows_int8

__all__ = ["fake_quantize_tokens"]


def fake_quantize_tokens(x, per_tensor_absmax: float | None = None):
    """x [..., K] through INT8 and back: per token (dynamic) or with one static absmax.

    In float64, returned in x's dtype on x's array module (NumPy or CuPy). ``QuantLinear``'s
    activation quantization (and so LKD's student) is this with a straight-through gradient
    (``tinyllm.quant.linear``)."""
    x = backend.get_array_module(x).asarray(x)
    rows = x.reshape(-1, x.shape[-1])
    codes, s = quantize_rows_int8(rows, per_tensor_absmax)
    return (codes * s).reshape(x.shape).astype(x.dtype, copy=False)
