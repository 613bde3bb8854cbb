"""NF4 (4-bit NormalFloat) with blockwise absmax and double quantization, as in QLoRA.

The 16 NF4 levels are quantiles of the standard normal, normalized to [-1, 1], with an exact
zero (8 positive levels, 7 negative). With the offset delta = (1 - 1/(2*15) + 1 - 1/(2*16)) / 2
= 0.9677083 (bitsandbytes' ``create_normal_map``):

    positive = Phi^-1(linspace(delta, 0.5, 9)[:-1])       8 values
    negative = -Phi^-1(linspace(delta, 0.5, 8)[:-1])      7 values
    levels   = sort(positive + negative + [0]) / max       16 values in [-1, 1]

Blockwise quantization of a tensor (flattened in row-major order, blocks of 64): per block
c1 = max|w|; each w / c1 in [-1, 1] takes the index of the nearest level (bucketized against
the 15 midpoints); two indices share a byte, the first in the high nibble. Dequantization:
w_hat = levels[q] * c1. Per element |w - w_hat| <= c1 * (largest gap between levels) / 2.

Double quantization (``double_quant=True``) stores the block constants c1 themselves in 8 bits:
offset = mean(c1); the centered c1 - offset are quantized blockwise (256 constants a block)
to the nearest value of bitsandbytes' signed 8-bit dynamic map scaled by the block's absmax
c2. Stored per 64 weights: 8 bits instead of 32 (0.127 bits per weight instead of 0.5).

    c1_hat = dynamic_map[code] * c2[block] + offset

The dynamic map (``create_dynamic_map(signed=True)``): for i = 0..6 the 2^i midpoints of
linspace(0.1, 1, 2^i + 1), times 10^(i - 6), with both signs; plus 0 and 1: 256 values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NF4_LEVELS",
    "NF4Weight",
    "dequantize_nf4",
    "dynamic_map",
    "nf4_levels",
    "quantize_blockwise_8bit",
    "quantize_nf4",
]

# bitsandbytes' table (functional.get_4bit_type("nf4")), the published values
NF4_LEVELS = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)  # fmt: skip


def nf4_levels(offset: float = 0.9677083) -> np.ndarray:
    """The 16 NF4 levels regenerated from the normal quantile function (float64)."""
    from scipy.stats import norm

    positive = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    negative = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    levels = np.sort(np.concatenate([positive, negative, [0.0]]))
    return levels / levels.max()


@functools.cache
def dynamic_map() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic quantization map: 256 sorted values in [-1, 1]."""
    values: list[float] = []
    exponent_bits = 7
    for i in range(exponent_bits):
        bounds = np.linspace(0.1, 1.0, 2**i + 1)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        magnitude = 10.0 ** (-(exponent_bits - 1) + i)
        values += list(magnitude * means) + list(-magnitude * means)
    values += [0.0, 1.0]
    out = np.sort(np.array(values, dtype=np.float32))
    assert out.size == 256
    return out


def _nearest(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the nearest value of the sorted ``table`` for each x (ties go up)."""
    mids = (table[:-1].astype(np.float64) + table[1:]) / 2.0
    return np.searchsorted(mids, x, side="right").astype(np.uint8)


def quantize_blockwise_8bit(x: np.ndarray, blocksize: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 [n], absmax float32 [ceil(n / blocksize)]) of a 1-D x on the dynamic map."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    nb = -(-n // blocksize)
    padded = np.pad(x, (0, nb * blocksize - n)).reshape(nb, blocksize)
    absmax = np.abs(padded).max(axis=1)
    safe = np.where(absmax > 0, absmax, 1.0)
    codes = _nearest(padded / safe[:, None], dynamic_map()).ravel()[:n]
    return codes, absmax.astype(np.float32)


def _dequantize_blockwise_8bit(codes: np.ndarray, absmax: np.ndarray, blocksize: int):
    per = np.repeat(absmax, blocksize)[: codes.size]
    return dynamic_map()[codes] * per


@dataclass
class NF4Weight:
    """A tensor in NF4: packed uint8 [ceil(n/2)] (high nibble first) and its block constants.

    Without double quantization ``absmax`` float32 [nb] holds c1. With it, ``absmax`` is
    None and ``absmax_codes`` uint8 [nb], ``absmax2`` float32 [ceil(nb / 256)] and
    ``offset`` (a float) hold c1.
    """

    packed: np.ndarray
    shape: tuple[int, ...]
    blocksize: int = 64
    absmax: np.ndarray | None = None
    absmax_codes: np.ndarray | None = None
    absmax2: np.ndarray | None = None
    offset: float = 0.0
    dq_blocksize: int = 256

    @property
    def double_quant(self) -> bool:
        return self.absmax is None

    def block_scales(self) -> np.ndarray:
        """c1 [nb] float32 (dequantized from 8 bits under double quantization)."""
        if not self.double_quant:
            return self.absmax
        c1 = _dequantize_blockwise_8bit(self.absmax_codes, self.absmax2, self.dq_blocksize)
        return (c1 + np.float32(self.offset)).astype(np.float32)

    @property
    def codes(self) -> np.ndarray:
        """The 4-bit level indices uint8, flat [n]."""
        n = int(np.prod(self.shape))
        out = np.empty(2 * self.packed.size, dtype=np.uint8)
        out[0::2] = self.packed >> 4
        out[1::2] = self.packed & 0x0F
        return out[:n]

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """w_hat = levels[q] * c1[block] in the original shape."""
        codes = self.codes
        scales = np.repeat(self.block_scales(), self.blocksize)[: codes.size]
        return (NF4_LEVELS[codes] * scales).reshape(self.shape).astype(dtype, copy=False)

    @property
    def nbytes(self) -> int:
        if self.double_quant:
            return int(self.packed.nbytes + self.absmax_codes.nbytes + self.absmax2.nbytes + 4)
        return int(self.packed.nbytes + self.absmax.nbytes)

    def arrays(self) -> dict[str, np.ndarray]:
        if self.double_quant:
            return {
                "packed": self.packed,
                "absmax_codes": self.absmax_codes,
                "absmax2": self.absmax2,
                "offset": np.array([self.offset], dtype=np.float32),
            }
        return {"packed": self.packed, "absmax": self.absmax}

    def meta(self) -> dict:
        return {
            "kind": "nf4",
            "shape": [int(s) for s in self.shape],
            "blocksize": int(self.blocksize),
            "double_quant": bool(self.double_quant),
            "dq_blocksize": int(self.dq_blocksize),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> NF4Weight:
        common = dict(
            packed=arrays["packed"].astype(np.uint8),
            shape=tuple(meta["shape"]),
            blocksize=int(meta["blocksize"]),
            dq_blocksize=int(meta["dq_blocksize"]),
        )
        if meta["double_quant"]:
            return cls(
                **common,
                absmax_codes=arrays["absmax_codes"].astype(np.uint8),
                absmax2=arrays["absmax2"].astype(np.float32),
                offset=float(arrays["offset"][0]),
            )
        return cls(**common, absmax=arrays["absmax"].astype(np.float32))


def quantize_nf4(
    w: np.ndarray, blocksize: int = 64, double_quant: bool = True, dq_blocksize: int = 256
) -> NF4Weight:
    """NF4-quantize ``w`` (any shape, flattened row-major) in blocks of ``blocksize``."""
    if blocksize < 1 or dq_blocksize < 1:
        raise ValueError(f"quantize_nf4: block sizes must be >= 1, got {blocksize}, {dq_blocksize}")
    w = np.asarray(w)
    flat = w.astype(np.float64).ravel()
    n = flat.size
    nb = -(-n // blocksize)
    padded = np.pad(flat, (0, nb * blocksize - n)).reshape(nb, blocksize)
    c1 = np.abs(padded).max(axis=1)  # [nb]
    safe = np.where(c1 > 0, c1, 1.0)
    codes = _nearest(padded / safe[:, None], NF4_LEVELS).ravel()[:n]
    if n % 2:
        codes = np.append(codes, np.uint8(7))  # pad with the code of 0
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    if not double_quant:
        return NF4Weight(packed, tuple(w.shape), blocksize, absmax=c1.astype(np.float32))
    c1_32 = c1.astype(np.float32)
    offset = float(c1_32.mean()) if nb else 0.0
    codes8, absmax2 = quantize_blockwise_8bit(c1_32 - np.float32(offset), dq_blocksize)
    return NF4Weight(
        packed,
        tuple(w.shape),
        blocksize,
        absmax_codes=codes8,
        absmax2=absmax2,
        offset=offset,
        dq_blocksize=dq_blocksize,
    )


def dequantize_nf4(q: NF4Weight, dtype=np.float32) -> np.ndarray:
    """``q.dequantize(dtype)``."""
    return q.dequantize(dtype)
