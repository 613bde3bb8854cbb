"""Registry entries for conv2d, max_pool2d and avg_pool2d.

The samples cover every option: stride, padding (int, pair, 'same', 'valid'), dilation,
groups (including depthwise), no bias, 1x1 and non-square kernels; for the pools stride
None, padding, dilation (max), count_include_pad and divisor_override (avg), 3-d input.
max_pool2d's inputs come from ``distinct`` (a shuffled grid, gaps >= 0.27): no ties, so
finite differences see the same argmax. The references are direct loops over output
pixels written without im2col; the composites are built from primitive tinyllm ops (pad
by cat, strided slices, mul, sum, max) so their autograd checks the hand-written backwards.
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.functional.conv import avg_pool2d, conv2d, max_pool2d
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import distinct, randn


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pads(padding, kh, kw, dilation):
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = _pair(padding)
    return ph, ph, pw, pw


# ---------------------------------------------------------------- references (direct loops)
def conv2d_loop(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """out[n, o, p, q] = bias[o] + sum_{c in group(o), i, j} w[o, c, i, j] x[n, c, h, w],
    h = p sh + i dh - top (zero outside), one output pixel at a time."""
    N, Cin, H, W = x.shape
    Cout, Cg, kh, kw = weight.shape
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    top, bottom, left, right = _pads(padding, kh, kw, (dh, dw))
    Ho = (H + top + bottom - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + left + right - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((N, Cout, Ho, Wo))
    per = Cout // groups
    for o in range(Cout):
        c0 = (o // per) * Cg
        for p in range(Ho):
            for q in range(Wo):
                acc = np.zeros(N) if bias is None else np.full(N, float(bias[o]))
                for c in range(Cg):
                    for i in range(kh):
                        for j in range(kw):
                            h, w = p * sh + i * dh - top, q * sw + j * dw - left
                            if 0 <= h < H and 0 <= w < W:
                                acc = acc + weight[o, c, i, j] * x[:, c0 + c, h, w]
                out[:, o, p, q] = acc
    return out.astype(x.dtype)


def _windows(x, kh, kw, stride, padding, dilation):
    """Yield (p, q, list of (h, w) real pixels, number of window entries) per output pixel."""
    H, W = x.shape[-2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    for p in range(Ho):
        for q in range(Wo):
            pix = [
                (p * sh + i * dh - ph, q * sw + j * dw - pw) for i in range(kh) for j in range(kw)
            ]
            yield p, q, Ho, Wo, [(h, w) for h, w in pix if 0 <= h < H and 0 <= w < W]


def max_pool2d_loop(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                    return_indices=False):  # fmt: skip
    kh, kw = _pair(kernel_size)
    stride = (kh, kw) if stride is None else _pair(stride)
    out = idx = None
    for p, q, Ho, Wo, pix in _windows(x, kh, kw, stride, _pair(padding), _pair(dilation)):
        if out is None:
            out = np.zeros(x.shape[:-2] + (Ho, Wo))
            idx = np.zeros(x.shape[:-2] + (Ho, Wo), dtype=np.int64)
        vals = np.stack([x[..., h, w] for h, w in pix], axis=-1)
        k = vals.argmax(axis=-1)
        out[..., p, q] = vals.max(axis=-1)
        flat = np.array([h * x.shape[-1] + w for h, w in pix])
        idx[..., p, q] = flat[k]
    out = out.astype(x.dtype)
    return (out, idx) if return_indices else out


def avg_pool2d_loop(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                    count_include_pad=True, divisor_override=None):  # fmt: skip
    kh, kw = _pair(kernel_size)
    stride = (kh, kw) if stride is None else _pair(stride)
    out = None
    for p, q, Ho, Wo, pix in _windows(x, kh, kw, stride, _pair(padding), (1, 1)):
        if out is None:
            out = np.zeros(x.shape[:-2] + (Ho, Wo))
        s = sum(x[..., h, w] for h, w in pix)
        div = divisor_override or (kh * kw if count_include_pad else len(pix))
        out[..., p, q] = s / div
    return out.astype(x.dtype)


# ---------------------------------------------------------------- composites (primitive ops)
def _pad_zero(x, top, bottom, left, right):
    """x [N, C, H, W] zero-padded by cat of zero slices built from x (stays in the graph)."""
    N, C, H, W = x.shape
    z = x[:, :, :1, :1] * 0
    if left or right:
        zc = F.cat([z] * H, dim=2)
        x = F.cat([zc] * left + [x] + [zc] * right, dim=3)
    Wp = x.shape[3]
    if top or bottom:
        zr = F.cat([z] * Wp, dim=3)
        x = F.cat([zr] * top + [x] + [zr] * bottom, dim=2)
    return x


def _conv_composite(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    Cout, Cg, kh, kw = weight.shape
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    top, bottom, left, right = _pads(padding, kh, kw, (dh, dw))
    xp = _pad_zero(x, top, bottom, left, right)
    Hp, Wp = xp.shape[2:]
    Ho, Wo = (Hp - dh * (kh - 1) - 1) // sh + 1, (Wp - dw * (kw - 1) - 1) // sw + 1
    per = Cout // groups
    outs = []
    for g in range(groups):
        xg = xp[:, g * Cg : (g + 1) * Cg]  # [N, Cg, Hp, Wp]
        wg = weight[g * per : (g + 1) * per]  # [per, Cg, kh, kw]
        acc = None
        for i in range(kh):
            for j in range(kw):
                sl = xg[:, :, i * dh : i * dh + sh * (Ho - 1) + 1 : sh,
                        j * dw : j * dw + sw * (Wo - 1) + 1 : sw]  # fmt: skip
                # [N, 1, Cg, Ho, Wo] * [1, per, Cg, 1, 1], summed over Cg
                term = (sl.unsqueeze(1) * wg[:, :, i, j].reshape(1, per, Cg, 1, 1)).sum(2)
                acc = term if acc is None else acc + term
        outs.append(acc)
    out = F.cat(outs, dim=1)
    return out if bias is None else out + bias.reshape(1, Cout, 1, 1)


register(
    OpInfo(
        "conv2d",
        conv2d,
        lambda rng, dt: [
            SampleInput(
                (randn(rng, dt, 2, 3, 6, 5), randn(rng, dt, 4, 3, 3, 3), randn(rng, dt, 4)),
                name="3x3 bias",
            ),  # fmt: skip
            SampleInput(
                (randn(rng, dt, 1, 2, 5, 5), randn(rng, dt, 3, 2, 3, 2)),
                {"stride": 2, "padding": 1},
                "stride 2 pad 1, non-square, no bias",
            ),
            SampleInput(
                (randn(rng, dt, 1, 2, 7, 6), randn(rng, dt, 2, 2, 2, 3), randn(rng, dt, 2)),
                {"stride": (2, 1), "padding": (2, 0), "dilation": (2, 1)},
                "pairs, dilation",
            ),
            SampleInput(
                (randn(rng, dt, 2, 4, 5, 5), randn(rng, dt, 6, 2, 3, 3), randn(rng, dt, 6)),
                {"groups": 2, "padding": 1},
                "groups 2",
            ),
            SampleInput(
                (randn(rng, dt, 1, 3, 5, 4), randn(rng, dt, 3, 1, 3, 3)),
                {"groups": 3, "padding": "same"},
                "depthwise, same",
            ),
            SampleInput(
                (randn(rng, dt, 1, 2, 6, 6), randn(rng, dt, 2, 2, 2, 2)),
                {"padding": "same", "dilation": 2},
                "same, even kernel, dilation",
            ),
            SampleInput(
                (randn(rng, dt, 2, 3, 4, 4), randn(rng, dt, 5, 3, 1, 1), randn(rng, dt, 5)),
                {"padding": "valid"},
                "1x1 valid",
            ),
            SampleInput(
                (randn(rng, dt, 1, 1, 3, 3), randn(rng, dt, 1, 1, 3, 3)),
                name="kernel = image, 1x1 output",
            ),
            SampleInput(
                (randn(rng, dt, 2, 3, 8, 8), randn(rng, dt, 4, 3, 4, 4), randn(rng, dt, 4)),
                {"stride": 4},
                "patch embedding",
            ),
        ],
        conv2d_loop,
        composite=_conv_composite,
        family="conv",
        kernels=("im2col", "col2im"),
    )
)


def _max_composite(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False):  # fmt: skip
    # padding with a very negative constant instead of -inf (finite values for the graph)
    kh, kw = _pair(kernel_size)
    (sh, sw) = (kh, kw) if stride is None else _pair(stride)
    (ph, pw), (dh, dw) = _pair(padding), _pair(dilation)
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    xp = _pad_zero(x, ph, ph, pw, pw)
    if ph or pw:  # padded entries: -1e6, far below any sample value
        N, C, H, W = x.shape
        mask = np.full((1, 1) + tuple(xp.shape[2:]), -1e6)
        mask[:, :, ph : ph + H, pw : pw + W] = 0
        import tinyllm

        xp = xp + tinyllm.tensor(mask.astype(np.dtype(str(x.dtype))))
    Hp, Wp = xp.shape[2:]
    Ho, Wo = (Hp - dh * (kh - 1) - 1) // sh + 1, (Wp - dw * (kw - 1) - 1) // sw + 1
    sl = [
        xp[:, :, i * dh : i * dh + sh * (Ho - 1) + 1 : sh, j * dw : j * dw + sw * (Wo - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    out = F.stack(sl, dim=-1).max(dim=-1)
    out = out[0] if isinstance(out, tuple) else getattr(out, "values", out)
    return out.squeeze(0) if squeeze else out


register(
    OpInfo(
        "max_pool2d",
        max_pool2d,
        lambda rng, dt: [
            SampleInput((distinct(rng, dt, 2, 3, 6, 6), 2), name="2x2"),
            SampleInput(
                (distinct(rng, dt, 1, 2, 7, 6), 3),
                {"stride": 2, "padding": 1},
                "3x3 stride 2 pad 1",
            ),
            SampleInput(
                (distinct(rng, dt, 1, 2, 7, 7), (3, 2)),
                {"stride": (1, 2), "dilation": (2, 1), "padding": (1, 1)},
                "pairs, dilation",
            ),
            SampleInput((distinct(rng, dt, 2, 5, 5), 2), {"stride": 1}, "3-d input, overlap"),
        ],
        max_pool2d_loop,
        composite=_max_composite,
        family="conv",
        kernels=("im2col", "col2im"),
    )
)


def _avg_composite(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True, divisor_override=None):  # fmt: skip
    kh, kw = _pair(kernel_size)
    (sh, sw) = (kh, kw) if stride is None else _pair(stride)
    ph, pw = _pair(padding)
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    N, C, H, W = x.shape
    xp = _pad_zero(x, ph, ph, pw, pw)
    Hp, Wp = xp.shape[2:]
    Ho, Wo = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    acc = None
    for i in range(kh):
        for j in range(kw):
            s = xp[:, :, i : i + sh * (Ho - 1) + 1 : sh, j : j + sw * (Wo - 1) + 1 : sw]
            acc = s if acc is None else acc + s
    if divisor_override:
        out = acc / divisor_override
    elif count_include_pad:
        out = acc / (kh * kw)
    else:
        ones = np.zeros((Hp, Wp))
        ones[ph : ph + H, pw : pw + W] = 1
        cnt = sum(
            ones[i : i + sh * (Ho - 1) + 1 : sh, j : j + sw * (Wo - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        )
        import tinyllm

        out = acc / tinyllm.tensor(cnt.astype(np.dtype(str(x.dtype))))
    return out.squeeze(0) if squeeze else out


register(
    OpInfo(
        "avg_pool2d",
        avg_pool2d,
        lambda rng, dt: [
            SampleInput((randn(rng, dt, 2, 3, 6, 6), 2), name="2x2"),
            SampleInput(
                (randn(rng, dt, 1, 2, 7, 6), 3),
                {"stride": 2, "padding": 1},
                "3x3 stride 2 pad 1, count pad",
            ),
            SampleInput(
                (randn(rng, dt, 1, 2, 7, 6), 3),
                {"stride": 2, "padding": 1, "count_include_pad": False},
                "count_include_pad False",
            ),
            SampleInput(
                (randn(rng, dt, 1, 2, 5, 5), (2, 3)),
                {"stride": (1, 2), "padding": (1, 1), "divisor_override": 5},
                "pairs, divisor_override",
            ),
            SampleInput((randn(rng, dt, 2, 5, 5), 2), {"stride": 1}, "3-d input"),
        ],
        avg_pool2d_loop,
        composite=_avg_composite,
        family="conv",
        kernels=("im2col", "col2im"),
    )
)
