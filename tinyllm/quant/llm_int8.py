"""LLM.int8() (Dettmers et al. 2022): vector-wise INT8 with a mixed-precision decomposition.

The weight is stored INT8 per output row (absmax / 127). At run time the input columns
(feature dimensions) holding any |x| >= threshold (6.0 by default, Hugging Face's
``llm_int8_threshold``) are the outliers O; they are multiplied in float with the
dequantized weight columns, the rest in INT8 with per-token scales:

    Y = X_{:, O} W_hat_{:, O}^T  +  int8(X_{:, not O}) int8(W_{:, not O})^T * s_x s_w^T

(the int8 part quantizes X with the outlier columns zeroed, as bitsandbytes does). With no
outlier the result is exactly plain vector-wise INT8; with threshold 0 every column is an
outlier and the result is X W_hat^T in float.
"""

from __future__ import annotations

import numpy as np

from tinyllm.quant.activations import int8_matmul, quantize_rows_int8

__all__ = ["Int8Weight", "llm_int8_matmul", "outlier_columns", "quantize_int8_rows"]


class Int8Weight:
    """W [N, K] as int8 codes [N, K] and float32 row scales [N, 1] (absmax / 127)."""

    def __init__(self, codes: np.ndarray, scales: np.ndarray) -> None:
        self.codes = np.ascontiguousarray(codes, dtype=np.int8)
        self.scales = np.ascontiguousarray(scales, dtype=np.float32).reshape(-1, 1)
        self.shape = tuple(self.codes.shape)

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        return (self.codes.astype(np.float32) * self.scales).astype(dtype, copy=False)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scales.nbytes)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self.codes, "scales": self.scales}

    def meta(self) -> dict:
        return {"kind": "int8_rows", "shape": [int(s) for s in self.shape]}

    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict) -> Int8Weight:
        return cls(arrays["codes"], arrays["scales"])


def quantize_int8_rows(W: np.ndarray) -> Int8Weight:
    """Row-wise absmax INT8 of W [N, K]."""
    codes, scales = quantize_rows_int8(W)
    return Int8Weight(codes, scales.astype(np.float32))


def outlier_columns(x: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the columns of x [R, K] with some |x| >= threshold (none if threshold <= 0
    is not given as 0: threshold 0 marks every column)."""
    x = np.asarray(x)
    return np.flatnonzero((np.abs(x) >= threshold).any(axis=0))


def llm_int8_matmul(x: np.ndarray, weight: Int8Weight, threshold: float = 6.0) -> np.ndarray:
    """Y [R, N] = x [R, K] W^T with LLM.int8()'s decomposition (float64 result)."""
    x = np.asarray(x, dtype=np.float64)
    cols = outlier_columns(x, threshold)
    x_int = x.copy()
    y = np.zeros((x.shape[0], weight.shape[0]))
    if cols.size:
        x_int[:, cols] = 0.0
        y += x[:, cols] @ weight.dequantize(np.float64)[:, cols].T
    cw = weight.codes.copy()
    if cols.size:
        cw[:, cols] = 0
    cx, sx = quantize_rows_int8(x_int)
    return y + int8_matmul(cx, sx, cw, weight.scales.astype(np.float64))
