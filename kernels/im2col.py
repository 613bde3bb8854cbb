"""im2col and col2im: the patches of an image batch as columns, and their transpose.

For x [N, C, H, W], a kernel kh x kw, stride (sh, sw), dilation (dh, dw) and padding
(top, bottom, left, right) with value ``pad_value`` (0 for convolution, -inf for max-pool),

    Ho = (H + top + bottom - dh (kh - 1) - 1) // sh + 1       (Wo likewise)
    cols[n, c, i, j, p, q] = xpad[n, c, p sh + i dh, q sw + j dw]

so that a convolution is one GEMM over (c, i, j). col2im is the adjoint (transpose) of
im2col with zero padding: every column entry is added back into the pixel it was read from,

    dx[n, c, h, w] = sum over (i, j, p, q) with p sh + i dh - top = h, q sw + j dw - left = w
                     of dcols[n, c, i, j, p, q]

(entries that fell on the padding are dropped). Shapes: cols [N, C, kh, kw, Ho, Wo].

Tiers: reference (below: a loop over the kh kw kernel offsets, each one strided slice of
the padded image), numba (``im2col_numba.py``: (n, c) planes in ``prange``, explicit
loops; col2im's planes are disjoint, so no two tasks write the same pixel) and cuda
(``im2col.cu``: one thread per column entry for im2col; one thread per pixel for col2im,
gathering its kh kw candidate entries, so no atomics and a deterministic sum).
"""

from __future__ import annotations

import functools

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, check_float, contiguous
from tinyllm.kernels.cuda_loader import function, scalar, with_cuda

__all__ = ["col2im", "conv_output_size", "im2col"]


@functools.cache
def _numba():
    from tinyllm.kernels import im2col_numba

    return im2col_numba


def conv_output_size(size: int, k: int, stride: int, dilation: int, pad_lo: int, pad_hi: int):
    """floor((size + pads - dilation (k - 1) - 1) / stride) + 1 (may be <= 0: no output)."""
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


# ---------------------------------------------------------------- bodies
def _im2col_reference(x, kh, kw, stride, dilation, pads, pad_value):
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, pads
    Ho = conv_output_size(H, kh, sh, dh, top, bottom)
    Wo = conv_output_size(W, kw, sw, dw, left, right)
    xpad = xp.full((N, C, H + top + bottom, W + left + right), pad_value, dtype=x.dtype)
    xpad[:, :, top : top + H, left : left + W] = x
    cols = xp.empty((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            cols[:, :, i, j] = xpad[:, :, r0 : r0 + sh * (Ho - 1) + 1 : sh,
                                    c0 : c0 + sw * (Wo - 1) + 1 : sw]  # fmt: skip
    return cols


def _col2im_reference(cols, H, W, stride, dilation, pads):
    xp = get_array_module(cols)
    N, C, kh, kw, Ho, Wo = cols.shape
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, pads
    dpad = xp.zeros((N, C, H + top + bottom, W + left + right), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            dpad[:, :, r0 : r0 + sh * (Ho - 1) + 1 : sh,
                 c0 : c0 + sw * (Wo - 1) + 1 : sw] += cols[:, :, i, j]  # fmt: skip
    return dpad[:, :, top : top + H, left : left + W]


def _im2col_numba(x, kh, kw, stride, dilation, pads, pad_value):
    x = contiguous(x)
    N, C, H, W = x.shape
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, pads
    Ho = conv_output_size(H, kh, sh, dh, top, bottom)
    Wo = conv_output_size(W, kw, sw, dw, left, right)
    cols = np.empty((N * C, kh, kw, Ho, Wo), dtype=x.dtype)
    kernel = dispatch.numba_for_work(_numba().im2col_planes, cols.size)
    kernel(x.reshape(N * C, H, W), sh, sw, dh, dw, top, left, x.dtype.type(pad_value), cols)
    return cols.reshape(N, C, kh, kw, Ho, Wo)


def _col2im_numba(cols, H, W, stride, dilation, pads):
    cols = contiguous(cols)
    N, C, kh, kw, Ho, Wo = cols.shape
    (sh, sw), (dh, dw), (top, _, left, _) = stride, dilation, pads
    dx = np.zeros((N * C, H, W), dtype=cols.dtype)
    kernel = dispatch.numba_for_work(_numba().col2im_planes, cols.size)
    kernel(cols.reshape(N * C, kh, kw, Ho, Wo), sh, sw, dh, dw, top, left, dx)
    return dx.reshape(N, C, H, W)


_CU = "im2col.cu"
_THREADS = 256


def _geometry(kh, kw, stride, dilation, pads, Ho, Wo):
    """The int32 launch arguments kh, kw, Ho, Wo, sh, sw, dh, dw, top, left."""
    (sh, sw), (dh, dw), (top, _, left, _) = stride, dilation, pads
    return tuple(np.int32(v) for v in (kh, kw, Ho, Wo, sh, sw, dh, dw, top, left))


def _im2col_cuda(x, kh, kw, stride, dilation, pads, pad_value):
    import cupy

    x = cupy.ascontiguousarray(x)
    N, C, H, W = x.shape
    Ho = conv_output_size(H, kh, stride[0], dilation[0], pads[0], pads[1])
    Wo = conv_output_size(W, kw, stride[1], dilation[1], pads[2], pads[3])
    cols = cupy.empty((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
    if cols.size:
        args = (x, cols, np.int64(N * C), np.int32(H), np.int32(W))
        args += _geometry(kh, kw, stride, dilation, pads, Ho, Wo)
        kernel = function(_CU, "im2col", x.dtype)
        kernel(((cols.size + _THREADS - 1) // _THREADS,), (_THREADS,),
               args + (scalar(pad_value, x.dtype),))  # fmt: skip
    return cols


def _col2im_cuda(cols, H, W, stride, dilation, pads):
    import cupy

    cols = cupy.ascontiguousarray(cols)
    N, C, kh, kw, Ho, Wo = cols.shape
    dx = cupy.empty((N, C, H, W), dtype=cols.dtype)
    if dx.size:
        args = (cols, dx, np.int64(N * C), np.int32(H), np.int32(W))
        args += _geometry(kh, kw, stride, dilation, pads, Ho, Wo)
        kernel = function(_CU, "col2im", cols.dtype)
        kernel(((dx.size + _THREADS - 1) // _THREADS,), (_THREADS,), args)
    return dx


_IM2COL = dispatch.declare(
    with_cuda({"reference": _im2col_reference, "numba": _im2col_numba, "cuda": _im2col_cuda}, _CU),
    "im2col",
)
_COL2IM = dispatch.declare(
    with_cuda({"reference": _col2im_reference, "numba": _col2im_numba, "cuda": _col2im_cuda}, _CU),
    "col2im",
)


# ---------------------------------------------------------------- public functions
def _pairs(op, kh, kw, stride, dilation, pads):
    stride, dilation, pads = tuple(stride), tuple(dilation), tuple(pads)
    if kh < 1 or kw < 1 or min(stride) < 1 or min(dilation) < 1 or min(pads) < 0:
        raise ValueError(
            f"{op}: need kernel >= 1, stride >= 1, dilation >= 1, padding >= 0; got kernel "
            f"({kh}, {kw}), stride {stride}, dilation {dilation}, padding {pads}"
        )
    return stride, dilation, pads


def im2col(
    x: Array, kh: int, kw: int, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
    pad_value: float = 0.0,
) -> Array:  # fmt: skip
    """cols [N, C, kh, kw, Ho, Wo] of x [N, C, H, W] (module docstring); pads = (top,
    bottom, left, right)."""
    check_float("im2col", "x", x)
    if x.ndim != 4:
        raise ValueError(f"im2col: x must be [N, C, H, W], got {tuple(x.shape)}")
    stride, dilation, pads = _pairs("im2col", kh, kw, stride, dilation, pads)
    Ho = conv_output_size(x.shape[2], kh, stride[0], dilation[0], pads[0], pads[1])
    Wo = conv_output_size(x.shape[3], kw, stride[1], dilation[1], pads[2], pads[3])
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"im2col: the kernel ({kh}, {kw}) with dilation {dilation} does not fit the padded "
            f"input {tuple(x.shape[2:])} + padding {pads} (output {Ho} x {Wo})"
        )
    xp = get_array_module(x)
    return dispatch.run("im2col", xp, x.dtype, _IM2COL, x, kh, kw, stride, dilation, pads,
                        pad_value)  # fmt: skip


def col2im(cols: Array, H: int, W: int, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0)) -> Array:
    """dx [N, C, H, W]: the adjoint of ``im2col`` with zero padding (module docstring)."""
    check_float("col2im", "cols", cols)
    if cols.ndim != 6:
        raise ValueError(f"col2im: cols must be [N, C, kh, kw, Ho, Wo], got {tuple(cols.shape)}")
    kh, kw = cols.shape[2:4]
    stride, dilation, pads = _pairs("col2im", kh, kw, stride, dilation, pads)
    Ho = conv_output_size(H, kh, stride[0], dilation[0], pads[0], pads[1])
    Wo = conv_output_size(W, kw, stride[1], dilation[1], pads[2], pads[3])
    if (Ho, Wo) != tuple(cols.shape[4:]):
        raise ValueError(
            f"col2im: cols {tuple(cols.shape)} do not match an image {H} x {W} (expected "
            f"Ho, Wo = {Ho}, {Wo})"
        )
    xp = get_array_module(cols)
    return dispatch.run("col2im", xp, cols.dtype, _COL2IM, cols, H, W, stride, dilation, pads)
