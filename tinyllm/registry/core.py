"""Registry entries for the engine's primitive ops (arithmetic, pointwise, reductions, shape,
indexing, matmul, softmax, cross-entropy).

Samples avoid kinks and ties: |x| and relu get inputs away from 0, max/min get distinct
values, log/sqrt positive inputs, clamp inputs away from its bounds.
"""

from __future__ import annotations

import numpy as np
import scipy.special

import tinyllm.functional as F
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import away_from, distinct, positive, probabilities, randn


def _binary_samples(rng, dtype, positive_b=False):
    b = positive if positive_b else randn
    return [
        SampleInput((randn(rng, dtype, 3, 4), b(rng, dtype, 3, 4)), name="same shape"),
        SampleInput((randn(rng, dtype, 2, 3, 4), b(rng, dtype, 4)), name="broadcast row"),
        SampleInput((randn(rng, dtype, 3, 1), b(rng, dtype, 1, 5)), name="outer broadcast"),
        SampleInput((randn(rng, dtype), b(rng, dtype, 2, 3)), name="0-d with matrix"),
        SampleInput((randn(rng, dtype, 1), b(rng, dtype, 1)), name="size 1"),
        SampleInput((randn(rng, dtype, 2, 3), 1.5), name="python scalar"),
    ]


def _unary_samples(make):
    def samples(rng, dtype):
        return [
            SampleInput((make(rng, dtype, 3, 4),), name="matrix"),
            SampleInput((make(rng, dtype),), name="0-d"),
            SampleInput((make(rng, dtype, 1),), name="size 1"),
            SampleInput((make(rng, dtype, 2, 3, 5).transpose(2, 0, 1),), name="non-contiguous"),
        ]

    return samples


# ---------------------------------------------------------------- arithmetic
register(OpInfo("add", F.add, lambda r, d: _binary_samples(r, d), np.add, family="arithmetic"))
register(OpInfo("sub", F.sub, lambda r, d: _binary_samples(r, d), np.subtract, family="arithmetic"))
register(OpInfo("mul", F.mul, lambda r, d: _binary_samples(r, d), np.multiply, family="arithmetic"))
register(
    OpInfo("div", F.div, lambda r, d: _binary_samples(r, d, True), np.divide, family="arithmetic")
)
register(OpInfo("neg", F.neg, _unary_samples(randn), np.negative, family="arithmetic"))


def _pow_samples(rng, dtype):
    return [
        SampleInput((positive(rng, dtype, 3, 4), 2.5), name="scalar exponent"),
        SampleInput((positive(rng, dtype, 3, 4), randn(rng, dtype, 3, 4)), name="tensor exp"),
        SampleInput((positive(rng, dtype, 2, 3), randn(rng, dtype, 3)), name="broadcast"),
        SampleInput((randn(rng, dtype, 3), 2), name="integer exponent, negative base"),
    ]


register(OpInfo("pow", F.pow, _pow_samples, np.power, family="arithmetic"))

# ---------------------------------------------------------------- pointwise
register(OpInfo("exp", F.exp, _unary_samples(randn), np.exp, family="pointwise"))
register(OpInfo("log", F.log, _unary_samples(positive), np.log, family="pointwise"))
register(OpInfo("sqrt", F.sqrt, _unary_samples(positive), np.sqrt, family="pointwise"))
register(
    OpInfo("rsqrt", F.rsqrt, _unary_samples(positive), lambda x: 1 / np.sqrt(x), family="pointwise")
)
register(OpInfo("tanh", F.tanh, _unary_samples(randn), np.tanh, family="pointwise"))
register(
    OpInfo("sigmoid", F.sigmoid, _unary_samples(randn), scipy.special.expit, family="pointwise")
)
register(
    OpInfo(
        "relu", F.relu, _unary_samples(away_from), lambda x: np.maximum(x, 0), family="pointwise"
    )
)
register(OpInfo("abs", F.abs, _unary_samples(away_from), np.abs, family="pointwise"))
register(OpInfo("sin", F.sin, _unary_samples(randn), np.sin, family="pointwise"))
register(OpInfo("cos", F.cos, _unary_samples(randn), np.cos, family="pointwise"))


def _clamp_samples(rng, dtype):
    x = away_from(rng, dtype, 4, 5, points=(-0.5, 0.5))
    return [
        SampleInput((x, -0.5, 0.5), name="both bounds"),
        SampleInput((x, None, 0.5), name="max only"),
        SampleInput((x, -0.5, None), name="min only"),
    ]


register(OpInfo("clamp", F.clamp, _clamp_samples, np.clip, family="pointwise", aliases=("clip",)))


def _minmax_pair(rng, dtype):
    a = distinct(rng, dtype, 3, 4)
    b = a + away_from(rng, dtype, 3, 4)
    return [
        SampleInput((a, b), name="no ties"),
        SampleInput((a, 0.25), name="scalar"),
        SampleInput((a[:, :1], b), name="broadcast"),
    ]


register(OpInfo("maximum", F.maximum, _minmax_pair, np.maximum, family="pointwise"))
register(OpInfo("minimum", F.minimum, _minmax_pair, np.minimum, family="pointwise"))


def _where_samples(rng, dtype):
    cond = rng.random((3, 4)) > 0.5
    return [
        SampleInput((cond, randn(rng, dtype, 3, 4), randn(rng, dtype, 3, 4)), name="same"),
        SampleInput((cond, randn(rng, dtype, 4), 0.5), name="broadcast and scalar"),
    ]


register(OpInfo("where", F.where, _where_samples, np.where, family="pointwise"))


# ---------------------------------------------------------------- reductions
def _reduce_samples(make=randn):
    def samples(rng, dtype):
        return [
            SampleInput((make(rng, dtype, 3, 4, 5),), name="all"),
            SampleInput((make(rng, dtype, 3, 4, 5), 1), name="dim 1"),
            SampleInput((make(rng, dtype, 3, 4, 5), -1, True), name="dim -1 keepdim"),
            SampleInput((make(rng, dtype, 3, 4, 5), (0, 2)), name="dims (0, 2)"),
            SampleInput((make(rng, dtype),), name="0-d"),
            SampleInput((make(rng, dtype, 1, 4), 0), name="size-1 dim"),
        ]

    return samples


def _np_reduce(fn):
    def ref(x, dim=None, keepdim=False):
        return fn(x, axis=dim, keepdims=keepdim)

    return ref


register(OpInfo("sum", F.sum, _reduce_samples(), _np_reduce(np.sum), family="reduction"))
register(OpInfo("mean", F.mean, _reduce_samples(), _np_reduce(np.mean), family="reduction"))


def _var_samples(rng, dtype):
    return [
        SampleInput((randn(rng, dtype, 3, 4, 5),), name="all"),
        SampleInput((randn(rng, dtype, 3, 4, 5), 1), name="dim 1"),
        SampleInput((randn(rng, dtype, 3, 4, 5), -1, True), {"correction": 0}, "biased"),
    ]


def _var_ref(x, dim=None, keepdim=False, correction=1):
    return np.var(x, axis=dim, keepdims=keepdim, ddof=correction)


register(OpInfo("var", F.var, _var_samples, _var_ref, family="reduction"))


def _maxmin_samples(rng, dtype):
    return [
        SampleInput((distinct(rng, dtype, 3, 4, 5),), name="all"),
        SampleInput((distinct(rng, dtype, 3, 4, 5), 1), name="dim 1"),
        SampleInput((distinct(rng, dtype, 3, 4, 5), -1, True), name="dim -1 keepdim"),
        SampleInput((distinct(rng, dtype, 1, 4), 0), name="size-1 dim"),
    ]


def _values(fn):
    def op(x, dim=None, keepdim=False):
        out = fn(x, dim, keepdim)
        return out.values if dim is not None else out

    return op


register(OpInfo("max", _values(F.max), _maxmin_samples, _np_reduce(np.max), family="reduction"))
register(OpInfo("min", _values(F.min), _maxmin_samples, _np_reduce(np.min), family="reduction"))
register(OpInfo("amax", F.amax, _reduce_samples(distinct), _np_reduce(np.max), family="reduction"))
register(OpInfo("amin", F.amin, _reduce_samples(distinct), _np_reduce(np.min), family="reduction"))


def _lse_samples(rng, dtype):
    return [
        SampleInput((randn(rng, dtype, 3, 4), -1), name="last dim"),
        SampleInput((randn(rng, dtype, 3, 4, 2), (0, 2), True), name="two dims keepdim"),
        SampleInput((randn(rng, dtype, 4) * 50, 0), name="large values"),
    ]


def _lse_ref(x, dim, keepdim=False):
    return scipy.special.logsumexp(x, axis=dim, keepdims=keepdim)


register(OpInfo("logsumexp", F.logsumexp, _lse_samples, _lse_ref, family="reduction"))


# ---------------------------------------------------------------- shape
register(
    OpInfo(
        "reshape",
        F.reshape,
        lambda r, d: [
            SampleInput((randn(r, d, 3, 4), (2, 6)), name="2x6"),
            SampleInput((randn(r, d, 3, 4), (-1,)), name="flat"),
            SampleInput((randn(r, d, 2, 3, 4).transpose(1, 0, 2), (6, 4)), name="non-contiguous"),
            SampleInput((randn(r, d), (1, 1)), name="0-d"),
        ],
        lambda x, s: np.reshape(x, s),
        family="shape",
        aliases=("view",),
    )
)
register(
    OpInfo(
        "flatten",
        F.flatten,
        lambda r, d: [
            SampleInput((randn(r, d, 2, 3, 4),), name="all"),
            SampleInput((randn(r, d, 2, 3, 4), 1), name="from 1"),
        ],
        lambda x, start=0: x.reshape(x.shape[:start] + (-1,)),
        family="shape",
    )
)
register(
    OpInfo(
        "transpose",
        F.transpose,
        lambda r, d: [
            SampleInput((randn(r, d, 2, 3, 4), 0, 2), name="0,2"),
            SampleInput((randn(r, d, 3, 4), -1, -2), name="negative"),
        ],
        lambda x, a, b: np.swapaxes(x, a, b),
        family="shape",
    )
)
register(
    OpInfo(
        "permute",
        F.permute,
        lambda r, d: [SampleInput((randn(r, d, 2, 3, 4), (2, 0, 1)), name="rotate")],
        np.transpose,
        family="shape",
    )
)
register(
    OpInfo(
        "unsqueeze",
        F.unsqueeze,
        lambda r, d: [
            SampleInput((randn(r, d, 3, 4), 1), name="middle"),
            SampleInput((randn(r, d, 3, 4), -1), name="end"),
            SampleInput((randn(r, d), 0), name="0-d"),
        ],
        lambda x, dim: np.expand_dims(x, dim),
        family="shape",
    )
)
register(
    OpInfo(
        "squeeze",
        F.squeeze,
        lambda r, d: [
            SampleInput((randn(r, d, 3, 1, 4, 1),), name="all"),
            SampleInput((randn(r, d, 3, 1, 4, 1), 1), name="dim 1"),
        ],
        lambda x, dim=None: np.squeeze(x, axis=dim),
        family="shape",
    )
)
register(
    OpInfo(
        "expand",
        F.expand,
        lambda r, d: [
            SampleInput((randn(r, d, 3, 1), (2, 3, 4)), name="new and stretched dims"),
            SampleInput((randn(r, d, 1, 4), (-1, 4)), name="-1 keeps"),
        ],
        lambda x, s: np.broadcast_to(
            x, tuple(x.shape[i - len(s) + x.ndim] if v == -1 else v for i, v in enumerate(s))
        ),
        family="shape",
    )
)
register(
    OpInfo(
        "broadcast_to",
        F.broadcast_to,
        lambda r, d: [SampleInput((randn(r, d, 3, 1), (2, 3, 4)), name="stretch")],
        np.broadcast_to,
        family="shape",
    )
)


def _cat_op(a, b, c, dim=0):
    return F.cat([a, b, c], dim)


def _cat_ref(a, b, c, dim=0):
    return np.concatenate([a, b, c], axis=dim)


register(
    OpInfo(
        "cat",
        _cat_op,
        lambda r, d: [
            SampleInput((randn(r, d, 2, 3), randn(r, d, 1, 3), randn(r, d, 4, 3)), name="dim 0"),
            SampleInput(
                (randn(r, d, 2, 1), randn(r, d, 2, 3), randn(r, d, 2, 2), -1), name="dim -1"
            ),
        ],
        _cat_ref,
        family="shape",
        aliases=("concat",),
    )
)


def _stack_op(a, b, dim=0):
    return F.stack([a, b], dim)


register(
    OpInfo(
        "stack",
        _stack_op,
        lambda r, d: [
            SampleInput((randn(r, d, 2, 3), randn(r, d, 2, 3)), name="dim 0"),
            SampleInput((randn(r, d, 2, 3), randn(r, d, 2, 3), 2), name="dim 2"),
        ],
        lambda a, b, dim=0: np.stack([a, b], axis=dim),
        family="shape",
    )
)


def _split_op(x, sizes, dim=0):
    return F.split(x, sizes, dim)


def _split_ref(x, sizes, dim=0):
    n = x.shape[dim]
    if isinstance(sizes, int):
        sizes = [sizes] * (n // sizes) + ([n % sizes] if n % sizes else [])
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=dim))


register(
    OpInfo(
        "split",
        _split_op,
        lambda r, d: [
            SampleInput((randn(r, d, 5, 3), 2), name="size 2 (uneven)"),
            SampleInput((randn(r, d, 3, 6), [1, 2, 3], 1), name="sections"),
        ],
        _split_ref,
        family="shape",
    )
)
register(
    OpInfo(
        "chunk",
        F.chunk,
        lambda r, d: [SampleInput((randn(r, d, 7, 2), 3), name="3 chunks of 7")],
        lambda x, n, dim=0: _split_ref(x, -(-x.shape[dim] // n), dim),
        family="shape",
    )
)


# ---------------------------------------------------------------- indexing
def _index_samples(rng, dtype):
    x = randn(rng, dtype, 4, 5)
    return [
        SampleInput((x, (slice(1, 3), slice(None, None, 2))), name="slices"),
        SampleInput((x, (1,)), name="int"),
        SampleInput((x, (Ellipsis, None, 2)), name="ellipsis and None"),
        SampleInput((x, (np.array([0, 2, 2, 3]),)), name="repeated rows"),
        SampleInput((x, (np.array([0, 1]), np.array([4, 4]))), name="point pairs, repeated"),
        SampleInput((x, x > 0), name="boolean mask"),
    ]


register(
    OpInfo(
        "index",
        lambda x, idx: x[idx],
        _index_samples,
        lambda x, idx: x[idx],
        family="indexing",
    )
)


def _gather_samples(rng, dtype):
    x = randn(rng, dtype, 3, 4)
    return [
        SampleInput((x, 1, rng.integers(0, 4, (3, 6))), name="dim 1, repeats"),
        SampleInput((x, 0, rng.integers(0, 3, (2, 4))), name="dim 0, smaller index"),
    ]


def _gather_ref(x, dim, index):
    corner = tuple(slice(None) if d == dim else slice(0, index.shape[d]) for d in range(x.ndim))
    return np.take_along_axis(x[corner], index, axis=dim)


register(OpInfo("gather", F.gather, _gather_samples, _gather_ref, family="indexing"))


def _masked_fill_samples(rng, dtype):
    x = randn(rng, dtype, 3, 4)
    return [
        SampleInput((x, rng.random((3, 4)) > 0.5, -1.5), name="same shape"),
        SampleInput((x, rng.random((1, 4)) > 0.5, 0.0), name="broadcast mask"),
    ]


register(
    OpInfo(
        "masked_fill",
        F.masked_fill,
        _masked_fill_samples,
        lambda x, m, v: np.where(m, v, x),
        family="indexing",
    )
)
register(
    OpInfo(
        "tril",
        F.tril,
        lambda r, d: [
            SampleInput((randn(r, d, 4, 4),), name="square"),
            SampleInput((randn(r, d, 2, 3, 5), 1), name="batched, k=1"),
        ],
        np.tril,
        family="indexing",
    )
)
register(
    OpInfo(
        "triu",
        F.triu,
        lambda r, d: [
            SampleInput((randn(r, d, 4, 4),), name="square"),
            SampleInput((randn(r, d, 2, 3, 5), -1), name="batched, k=-1"),
        ],
        np.triu,
        family="indexing",
    )
)


# ---------------------------------------------------------------- linear algebra
def _matmul_samples(rng, dtype):
    return [
        SampleInput((randn(rng, dtype, 3, 4), randn(rng, dtype, 4, 5)), name="matrix"),
        SampleInput((randn(rng, dtype, 2, 3, 4), randn(rng, dtype, 4, 5)), name="batched @ matrix"),
        SampleInput(
            (randn(rng, dtype, 2, 1, 3, 4), randn(rng, dtype, 3, 4, 2)), name="batch bcast"
        ),
        SampleInput((randn(rng, dtype, 4), randn(rng, dtype, 4, 3)), name="vector @ matrix"),
        SampleInput((randn(rng, dtype, 2, 3, 4), randn(rng, dtype, 4)), name="batched @ vector"),
        SampleInput((randn(rng, dtype, 4), randn(rng, dtype, 4)), name="dot"),
        SampleInput((randn(rng, dtype, 5, 3).T, randn(rng, dtype, 5, 2)), name="non-contiguous"),
    ]


register(
    OpInfo(
        "matmul",
        F.matmul,
        _matmul_samples,
        np.matmul,
        family="linalg",
        forward_atol32=1e-4,
    )
)


# ---------------------------------------------------------------- softmax and losses
def _softmax_samples(rng, dtype):
    return [
        SampleInput((randn(rng, dtype, 3, 5), -1), name="last dim"),
        SampleInput((randn(rng, dtype, 3, 5, 2), 1), name="middle dim"),
        SampleInput((randn(rng, dtype, 2, 4) * 1e4, -1), name="logits of magnitude 1e4"),
        SampleInput((randn(rng, dtype, 1), 0), name="one class"),
    ]


def _softmax_composite(x, dim):
    e = (x - x.amax(dim, keepdim=True).detach()).exp()
    return e / e.sum(dim, keepdim=True)


def _log_softmax_composite(x, dim):
    return x - x.logsumexp(dim, keepdim=True)


register(
    OpInfo(
        "softmax",
        F.softmax,
        _softmax_samples,
        lambda x, dim: scipy.special.softmax(x, axis=dim),
        composite=_softmax_composite,
        family="softmax",
        kernels=("softmax_forward", "softmax_backward"),
    )
)
register(
    OpInfo(
        "log_softmax",
        F.log_softmax,
        _softmax_samples,
        lambda x, dim: scipy.special.log_softmax(x, axis=dim),
        composite=_log_softmax_composite,
        family="softmax",
        kernels=("log_softmax_forward", "log_softmax_backward"),
        forward_atol32=1e-3,  # values of magnitude 1e4: float32 spacing there is ~1e-3
    )
)


def _ce_samples(rng, dtype):
    N, C = 6, 5
    target = rng.integers(0, C, N)
    ignored = target.copy()
    ignored[[1, 4]] = -100
    probs = probabilities(rng, dtype, N, C)
    return [
        SampleInput((randn(rng, dtype, N, C), target), name="mean"),
        SampleInput((randn(rng, dtype, N, C), target), {"reduction": "sum"}, "sum"),
        SampleInput((randn(rng, dtype, N, C), target), {"reduction": "none"}, "none"),
        SampleInput((randn(rng, dtype, N, C), ignored), name="ignore_index"),
        SampleInput((randn(rng, dtype, N, C), target), {"label_smoothing": 0.1}, "smoothing"),
        SampleInput((randn(rng, dtype, N, C) * 1e4, target), name="logits of magnitude 1e4"),
        SampleInput((randn(rng, dtype, 2, C, 3), rng.integers(0, C, (2, 3))), name="[N, C, d]"),
        SampleInput(
            (randn(rng, dtype, C), np.array(2)), {"reduction": "none"}, "1-d input, 0-d target"
        ),
        # class probabilities: the target is differentiable too (gradchecked here)
        SampleInput((randn(rng, dtype, N, C), probs), name="probabilities"),
        SampleInput(
            (randn(rng, dtype, N, C), probs),
            {"label_smoothing": 0.2, "reduction": "sum"},
            "probabilities, smoothing, sum",
        ),  # fmt: skip
        SampleInput(
            (randn(rng, dtype, N, C), positive(rng, dtype, N, C)),
            {"reduction": "none"},
            "unnormalized soft target, none",
        ),  # fmt: skip
        SampleInput(
            (randn(rng, dtype, 2, C, 3), probabilities(rng, dtype, 2, C, 3, axis=1)),
            {"label_smoothing": 0.1},
            "probabilities [N, C, d]",
        ),  # fmt: skip
        SampleInput(
            (randn(rng, dtype, C), probabilities(rng, dtype, C)),
            {"reduction": "none"},
            "probabilities, 1-d input",
        ),  # fmt: skip
        SampleInput(
            (randn(rng, dtype, N, C) * 1e4, probs), name="probabilities, logits of magnitude 1e4"
        ),
    ]


def _ce_ref(logits, target, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """-sum_c q_c log_softmax(x)_c per row, q the smoothed one-hot or probability target."""
    C = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    x = np.moveaxis(logits.astype(np.float64), 0 if logits.ndim == 1 else 1, -1)  # classes last
    logp = scipy.special.log_softmax(x, axis=-1)
    if target.dtype.kind == "f":  # probabilities [..., C]
        t = np.moveaxis(target, 0 if target.ndim == 1 else 1, -1)
        q = (1 - label_smoothing) * t + label_smoothing / C
        loss = -(q * logp).sum(axis=-1)
        valid_rows = loss.size
    else:
        valid = target != ignore_index
        onehot = np.eye(C)[np.where(valid, target, 0)]
        q = (1 - label_smoothing) * onehot + label_smoothing / C
        loss = np.where(valid, -(q * logp).sum(axis=-1), 0.0)
        valid_rows = max(int(valid.sum()), 1)
    if reduction == "none":
        return loss
    return loss.sum() / (valid_rows if reduction == "mean" else 1)


def _ce_composite(logits, target, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """The same loss from permute, logsumexp, *, sum (and the target's autograd if soft)."""
    from tinyllm.tensor import Tensor

    if logits.ndim > 1:
        logits = logits.permute(0, *range(2, logits.ndim), 1)  # classes last
    C = logits.shape[-1]
    logp = logits - logits.logsumexp(-1, keepdim=True)
    if target.is_floating_point():
        if target.ndim > 1:
            target = target.permute(0, *range(2, target.ndim), 1)
        loss = -((target * (1 - label_smoothing) + label_smoothing / C) * logp).sum(-1)
        count = float(loss.numel())
    else:
        t = target.data
        valid = Tensor((t != ignore_index).astype(logp.dtype))
        onehot = np.eye(C, dtype=logp.dtype)[np.where(t != ignore_index, t, 0)]
        q = Tensor(onehot * (1 - label_smoothing) + label_smoothing / C)
        loss = -(q * logp).sum(-1) * valid
        count = max(float(valid.data.sum()), 1.0)
    if reduction == "none":
        return loss
    return loss.sum() / (count if reduction == "mean" else 1.0)


register(
    OpInfo(
        "cross_entropy",
        F.cross_entropy,
        _ce_samples,
        _ce_ref,
        composite=_ce_composite,
        family="losses",
        kernels=(
            "cross_entropy_forward",
            "cross_entropy_backward",
            "cross_entropy_soft_forward",
            "cross_entropy_soft_backward",
        ),  # fmt: skip
        forward_atol32=1e-2,  # logits of 1e4 in float32: lse's spacing is ~1e-3
    )
)
register(
    OpInfo(
        "mse_loss",
        F.mse_loss,
        lambda r, d: [SampleInput((randn(r, d, 3, 4), randn(r, d, 3, 4)), name="pair")],
        lambda a, b: np.mean((a - b) ** 2),
        family="losses",
    )
)
