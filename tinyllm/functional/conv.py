"""2-D convolution and pooling (``torch.nn.functional.conv2d``, ``max_pool2d``,
``avg_pool2d``), as im2col + GEMM with hand-written backwards.

conv2d. x [N, Cin, H, W], weight [Cout, Cin/g, kh, kw], bias [Cout], g groups. With
cols = im2col(x) [N, Cin, kh, kw, Ho, Wo] viewed as X [N, g, K, L] (K = Cin/g kh kw,
L = Ho Wo) and weight viewed as Wm [g, Cout/g, K]:

    out[n, g] = Wm[g] @ X[n, g] + bias                         [N, g, Cout/g, L]

Backward, with dY = dout viewed as [N, g, Cout/g, L]:

    dWm[g] = sum_n dY[n, g] @ X[n, g]^T       dbias = sum_{n, h, w} dout
    dX[n, g] = Wm[g]^T @ dY[n, g]             dx = col2im(dX)   (the adjoint of im2col)

max_pool2d. cols = im2col(x) padded with -inf; out = max over the kh kw window entries,
a = argmax (first index on ties, as torch). Backward: the window's gradient goes to its
argmax entry only, dcols = onehot(a) dout, dx = col2im(dcols). PyTorch requires padding
<= kernel / 2, so every window holds a real pixel; so does this.

avg_pool2d. out = sum of the window / divisor, divisor = kh kw (count_include_pad=True),
the number of real pixels in the window (False) or ``divisor_override``. Backward:
dcols = dout / divisor on every entry, dx = col2im(dcols).

Not supported (a clear error): ceil_mode=True, padding_mode other than zeros. The patch
loops run ``tinyllm.kernels`` im2col / col2im (reference, Numba and CUDA tiers).
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import check_float
from tinyllm.kernels import im2col as K

__all__ = ["avg_pool2d", "conv2d", "max_pool2d"]


def _shape(t) -> tuple:
    return tuple(t.shape)


def _pair(op: str, name: str, v) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}") from None
    if not all(isinstance(u, int) and not isinstance(u, bool) for u in (a, b)):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return (a, b)


# ---------------------------------------------------------------- conv2d
class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, dilation, pads, groups):
        xp = get_array_module(x)
        N, Cin, H, W = x.shape
        Cout, Cg, kh, kw = weight.shape
        cols = K.im2col(x, kh, kw, stride, dilation, pads)  # [N, Cin, kh, kw, Ho, Wo]
        Ho, Wo = cols.shape[4:]
        X = cols.reshape(N, groups, Cg * kh * kw, Ho * Wo)
        Wm = weight.reshape(groups, Cout // groups, Cg * kh * kw)
        out = xp.matmul(Wm[None], X).reshape(N, Cout, Ho, Wo)  # out[n, g] = Wm[g] @ X[n, g]
        if bias is not None:
            out = out + bias.reshape(1, Cout, 1, 1)
        # the columns X are saved with the weights, so release() frees them after backward
        ctx.save_for_backward(weight, bias, X)
        ctx.geom = (H, W, stride, dilation, pads, groups)
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dout):
        weight, bias, X = ctx.saved_tensors
        H, W, stride, dilation, pads, groups = ctx.geom
        xp = get_array_module(dout)
        Cout, Cg, kh, kw = weight.shape
        N, _, Ho, Wo = dout.shape
        dY = dout.reshape(N, groups, Cout // groups, Ho * Wo)
        needs = ctx.needs_input_grad
        dx = dweight = dbias = None
        if needs[0]:  # dX[n, g] = Wm[g]^T @ dY[n, g];  dx = col2im(dX)
            Wm = weight.reshape(groups, Cout // groups, Cg * kh * kw)
            dX = xp.matmul(xp.swapaxes(Wm, 1, 2)[None], dY)
            dx = K.col2im(dX.reshape(N, groups * Cg, kh, kw, Ho, Wo), H, W, stride, dilation, pads)
        if needs[1]:  # dWm[g] = sum_n dY[n, g] @ X[n, g]^T
            dWm = xp.matmul(dY, xp.swapaxes(X, 2, 3)).sum(axis=0)
            dweight = dWm.reshape(weight.shape).astype(weight.dtype, copy=False)
        if bias is not None and needs[2]:
            dbias = dout.sum(axis=(0, 2, 3)).astype(bias.dtype, copy=False)
        return dx, dweight, dbias, None, None, None, None


def _conv_padding(op, padding, kh, kw, stride, dilation):
    """(top, bottom, left, right) from an int, a pair, 'valid' or 'same' (torch's split:
    total = dilation (k - 1), left = total // 2, the extra one on the right/bottom)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
            th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(
            f"{op}: padding must be an int, a pair, 'valid' or 'same'; got {padding!r}"
        )
    ph, pw = _pair(op, "padding", padding)
    if ph < 0 or pw < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding!r}")
    return (ph, ph, pw, pw)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (math in the module
    docstring): input [N, Cin, H, W], weight [Cout, Cin/groups, kh, kw], bias [Cout];
    stride, dilation: int or pair; padding: int, pair, 'valid' or 'same' (zeros).
    Returns [N, Cout, Ho, Wo], Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1.

    >>> import tinyllm, tinyllm.functional as F
    >>> x = tinyllm.arange(9.0).reshape(1, 1, 3, 3)
    >>> F.conv2d(x, tinyllm.ones(1, 1, 2, 2))
    tensor([[[[ 8., 12.],
       [20., 24.]]]])
    """
    op = "conv2d"
    check_float(f"{op}: input", input)
    check_float(f"{op}: weight", weight)
    if input.ndim != 4:
        raise ValueError(f"{op}: input must be [N, C, H, W], got {_shape(input)}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be [Cout, Cin/groups, kh, kw], got {_shape(weight)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    Cin, Cout = input.shape[1], weight.shape[0]
    if Cin % groups or Cout % groups or weight.shape[1] * groups != Cin:
        raise ValueError(
            f"{op}: input {_shape(input)} and weight {_shape(weight)} do not fit groups={groups}: "
            f"need Cin ({Cin}) = weight.shape[1] * groups and Cout ({Cout}) divisible by groups"
        )
    if bias is not None and _shape(bias) != (Cout,):
        raise ValueError(f"{op}: bias must have shape ({Cout},), got {_shape(bias)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but input has {input.dtype}")
    stride, dilation = _pair(op, "stride", stride), _pair(op, "dilation", dilation)
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"{op}: stride and dilation must be >= 1, got {stride}, {dilation}")
    kh, kw = weight.shape[2:]
    pads = _conv_padding(op, padding, kh, kw, stride, dilation)
    Ho = K.conv_output_size(input.shape[2], kh, stride[0], dilation[0], pads[0], pads[1])
    Wo = K.conv_output_size(input.shape[3], kw, stride[1], dilation[1], pads[2], pads[3])
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{op}: kernel ({kh}, {kw}) with dilation {dilation} is larger than the padded "
            f"input {_shape(input)[2:]} (padding {pads})"
        )
    return Conv2d.apply(input, weight, bias, stride, dilation, pads, groups)


# ---------------------------------------------------------------- pooling
def _pool_args(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    check_float(f"{op}: input", x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be [N, C, H, W] or [C, H, W], got {_shape(x)}")
    kh, kw = _pair(op, "kernel_size", kernel_size)
    stride = (kh, kw) if stride is None or stride == () else _pair(op, "stride", stride)
    ph, pw = _pair(op, "padding", padding)
    dilation = _pair(op, "dilation", dilation)
    if min(kh, kw) < 1 or min(stride) < 1 or min(dilation) < 1 or min(ph, pw) < 0:
        raise ValueError(
            f"{op}: need kernel_size, stride, dilation >= 1 and padding >= 0; got "
            f"{(kh, kw)}, {stride}, {dilation}, {(ph, pw)}"
        )
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
    if ceil_mode:
        raise NotImplementedError(f"{op}: ceil_mode=True is not supported")
    H, W = x.shape[-2:]
    Ho = K.conv_output_size(H, kh, stride[0], dilation[0], ph, ph)
    Wo = K.conv_output_size(W, kw, stride[1], dilation[1], pw, pw)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{op}: kernel {(kh, kw)} does not fit the padded input {_shape(x)}")
    return kh, kw, stride, (ph, ph, pw, pw), dilation


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, kh, kw, stride, pads, dilation, return_indices):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        cols = K.im2col(x, kh, kw, stride, dilation, pads, pad_value=-xp.inf)
        Ho, Wo = cols.shape[4:]
        flat = cols.reshape(N, C, kh * kw, Ho, Wo)
        a = flat.argmax(axis=2)  # [N, C, Ho, Wo], first maximum on ties
        out = xp.take_along_axis(flat, a[:, :, None], axis=2)[:, :, 0]
        ctx.save_for_backward(a)  # argmax per window [N, C, Ho, Wo]
        ctx.geom = (N, C, H, W, kh, kw, stride, pads, dilation)
        if not return_indices:
            return out
        # torch's indices: the flat position h W + w in the input plane
        i, j = a // kw, a % kw
        p = xp.arange(Ho).reshape(1, 1, Ho, 1)
        q = xp.arange(Wo).reshape(1, 1, 1, Wo)
        h = p * stride[0] + i * dilation[0] - pads[0]
        w = q * stride[1] + j * dilation[1] - pads[2]
        idx = (h * W + w).astype(xp.int64)
        ctx.mark_non_differentiable(idx)
        return out, idx

    @staticmethod
    def backward(ctx, dout, didx=None):
        N, C, H, W, kh, kw, stride, pads, dilation = ctx.geom
        xp = get_array_module(dout)
        (a,) = ctx.saved_tensors
        Ho, Wo = a.shape[2:]
        dflat = xp.zeros((N, C, kh * kw, Ho, Wo), dtype=dout.dtype)
        xp.put_along_axis(dflat, a[:, :, None], dout[:, :, None], axis=2)  # to the argmax
        dcols = dflat.reshape(N, C, kh, kw, Ho, Wo)
        return K.col2im(dcols, H, W, stride, dilation, pads), None, None, None, None, None, None


def max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
    return_indices: bool = False,
):  # fmt: skip
    """Max over each kh x kw window (``torch.nn.functional.max_pool2d``); stride defaults to
    kernel_size; padding (<= kernel / 2) is -inf. With ``return_indices`` also the flat
    index h W + w of each maximum in its input plane (int64, as torch).

    >>> import tinyllm, tinyllm.functional as F
    >>> F.max_pool2d(tinyllm.arange(16.0).reshape(1, 1, 4, 4), 2)
    tensor([[[[ 5.,  7.],
       [13., 15.]]]])
    """
    op = "max_pool2d"
    kh, kw, stride, pads, dilation = _pool_args(
        op, input, kernel_size, stride, padding, dilation, ceil_mode
    )
    x = input if input.ndim == 4 else input.unsqueeze(0)
    out = MaxPool2d.apply(x, kh, kw, stride, pads, dilation, bool(return_indices))
    if input.ndim == 3:
        return (out[0].squeeze(0), out[1].squeeze(0)) if return_indices else out.squeeze(0)
    return out


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, kh, kw, stride, pads, count_include_pad, divisor_override):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        cols = K.im2col(x, kh, kw, stride, (1, 1), pads)
        Ho, Wo = cols.shape[4:]
        if divisor_override is not None:
            div = xp.asarray(float(divisor_override), dtype=x.dtype)
        elif count_include_pad:
            div = xp.asarray(float(kh * kw), dtype=x.dtype)
        else:  # the real pixels in each window: im2col of ones, zero-padded
            ones = xp.ones((1, 1, H, W), dtype=x.dtype)
            div = K.im2col(ones, kh, kw, stride, (1, 1), pads).sum(axis=(2, 3))  # [1,1,Ho,Wo]
        ctx.div, ctx.geom = div, (H, W, kh, kw, stride, pads)
        return (cols.sum(axis=(2, 3)) / div).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dout):
        H, W, kh, kw, stride, pads = ctx.geom
        xp = get_array_module(dout)
        g = (dout / ctx.div).astype(dout.dtype, copy=False)  # [N, C, Ho, Wo]
        dcols = xp.broadcast_to(g[:, :, None, None], g.shape[:2] + (kh, kw) + g.shape[2:])
        return K.col2im(dcols, H, W, stride, (1, 1), pads), None, None, None, None, None, None


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
    count_include_pad: bool = True, divisor_override: int | None = None,
):  # fmt: skip
    """Mean over each kh x kw window (``torch.nn.functional.avg_pool2d``); stride defaults
    to kernel_size; zero padding (<= kernel / 2), counted in the divisor unless
    ``count_include_pad=False``; ``divisor_override`` replaces the divisor.

    >>> import tinyllm, tinyllm.functional as F
    >>> F.avg_pool2d(tinyllm.arange(16.0).reshape(1, 1, 4, 4), 2)
    tensor([[[[ 2.5,  4.5],
       [10.5, 12.5]]]])
    """
    op = "avg_pool2d"
    kh, kw, stride, pads, _ = _pool_args(op, input, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and (
        not isinstance(divisor_override, int) or divisor_override < 1
    ):
        raise ValueError(f"{op}: divisor_override must be a positive int, got {divisor_override!r}")
    x = input if input.ndim == 4 else input.unsqueeze(0)
    out = AvgPool2d.apply(x, kh, kw, stride, pads, bool(count_include_pad), divisor_override)
    return out if input.ndim == 4 else out.squeeze(0)
