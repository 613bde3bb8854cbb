"""Registry entries for attention and positional encodings.

``scaled_dot_product_attention`` and ``rotary_embedding`` are fused Functions: each has an
independent NumPy reference (einsum and an explicit softmax; RoPE as a complex multiplication)
and a composite of primitive ops (matmul, masked_fill, softmax; slicing, mul, cat) whose
autograd checks the hand-written backward. The table builders (frequencies, ALiBi, T5 buckets,
sinusoidal) are not differentiable; their references restate the published formulas.

Samples stay small (B <= 2, H <= 4, T <= 5, D <= 8) so the elementwise float64 gradcheck is
fast. Float attention masks are differentiable inputs (learned biases: T5 buckets, trainable
ALiBi), so their samples leave them requiring grad, broadcast ([Tq, Tk], [1, H, Tq, Tk],
[B, 1, Tq, Tk]) so that the engine's un-broadcasting of their gradient is checked too; one
constant float mask (``no_grad``) covers the case without. Attention scores are O(1)
(standard normal inputs, scale 1/sqrt(D)), so the default tolerances hold: float64 central
differences agree to ~1e-9, and float32 forwards to ~1e-6.

Dropout samples need the same keep mask in every call (gradcheck calls the op many times):
the registered op runs the function with tinyllm's CPU generator set to a fixed stream
(restored afterwards), and the reference and composite draw their masks from that stream in
the documented way, ``default_rng(seed).random([..., H, Tq, Tk]) >= p``.
"""

from __future__ import annotations

import math

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import randn
from tinyllm.tensor import Tensor

_DROPOUT_SEED = 1234


def _data(x):
    return x.data if isinstance(x, Tensor) else x


# ---------------------------------------------------------------- scaled dot-product attention
def _sdpa_op(*args, **kwargs):
    """F.scaled_dot_product_attention with the dropout streams fixed (and restored after).

    Both devices' streams: the CPU generator is set to ``default_rng(_DROPOUT_SEED)`` (the
    stream the reference and composite draw from); the device generator to the seed
    ``_DROPOUT_SEED``, epoch 0, so that repeated calls on the GPU (gradcheck) draw the same
    keep mask, too (not the CPU's: CuPy's generator has its own stream).
    """
    saved = backend.get_rng_state()
    backend.set_rng_state(
        {
            "cpu": np.random.default_rng(_DROPOUT_SEED).bit_generator.state,
            "cuda": {"seed": _DROPOUT_SEED, "epoch": 0},
        }
    )
    try:
        return F.scaled_dot_product_attention(*args, **kwargs)
    finally:
        backend.set_rng_state(saved)


def _dropout_keep(shape, p):
    """The keep mask and scale the op draws under the fixed stream."""
    keep = np.random.default_rng(_DROPOUT_SEED).random(shape) >= p
    return keep, (1.0 / (1.0 - p) if p < 1 else 0.0)


def _visible(Tq, Tk, is_causal, window):
    """[Tq, Tk] True where query i may see key j (top-left aligned), from explicit indices."""
    i, j = np.indices((Tq, Tk))
    visible = np.ones((Tq, Tk), dtype=bool)
    if is_causal or window is not None:
        visible &= j <= i
    if window is not None:
        visible &= j > i - window
    return visible


def _sdpa_samples(rng, dtype):
    def r(*shape):
        return randn(rng, dtype, *shape)

    bool_mask = rng.random((3, 5)) > 0.4
    bool_mask[:, 0] = True
    bool_mask[1] = False  # one fully masked row
    bias = r(2, 1, 4, 4)
    bias[1, 0, 2, :] = -np.inf  # a row masked by -inf in the additive mask
    bias[0, 0, 0, 3] = -np.inf
    padding = np.ones((2, 1, 1, 4), dtype=bool)
    padding[1, ..., 2:] = False  # key padding for the second sequence
    return [
        SampleInput((r(1, 2, 3, 4), r(1, 2, 5, 4), r(1, 2, 5, 4)), name="Tq != Tk"),
        SampleInput((r(2, 2, 4, 4), r(2, 2, 4, 4), r(2, 2, 4, 4)), {"is_causal": True}, "causal"),
        SampleInput(
            (r(1, 2, 5, 4), r(1, 2, 3, 4), r(1, 2, 3, 4)), {"is_causal": True}, "causal Tq > Tk"
        ),
        SampleInput(
            (r(1, 2, 3, 4), r(1, 2, 5, 4), r(1, 2, 5, 4), bool_mask),
            name="bool mask [Tq, Tk], a fully masked row",
        ),
        SampleInput(
            (r(2, 2, 4, 4), r(2, 2, 4, 4), r(2, 2, 4, 4), bias),
            name="learnable additive mask [B, 1, Tq, Tk] with -inf",
        ),
        SampleInput(
            (r(2, 2, 3, 4), r(2, 2, 5, 4), r(2, 2, 5, 4), r(3, 5)),
            name="learnable float mask [Tq, Tk], broadcast over B and H",
        ),
        SampleInput(
            (r(1, 4, 3, 4), r(1, 2, 3, 4), r(1, 2, 3, 3), r(1, 4, 3, 3)),
            {"enable_gqa": True, "window": 2},
            "learnable float mask [1, H, Tq, Tk], GQA H=4 Hkv=2, window 2, Dv != D",
        ),
        SampleInput(
            (r(1, 2, 3, 4), r(1, 2, 4, 4), r(1, 2, 4, 4), r(1, 2, 3, 4)),
            {"dropout_p": 0.3},
            "learnable float mask [1, H, Tq, Tk], dropout 0.3",
        ),
        SampleInput(
            (r(1, 2, 4, 4), r(1, 2, 4, 4), r(1, 2, 4, 4), r(4, 4)),
            no_grad=(3,),
            name="constant float mask [Tq, Tk]",
        ),
        SampleInput(
            (r(1, 4, 3, 4), r(1, 2, 3, 4), r(1, 2, 3, 4)),
            {"is_causal": True, "enable_gqa": True},
            "GQA H=4 Hkv=2 causal",
        ),
        SampleInput(
            (r(2, 3, 2, 4), r(2, 1, 4, 4), r(2, 1, 4, 4), padding),
            {"enable_gqa": True},
            "MQA H=3 Hkv=1, key padding",
        ),
        SampleInput(
            (r(1, 2, 5, 4), r(1, 2, 5, 4), r(1, 2, 5, 4)), {"window": 2}, "sliding window 2"
        ),
        SampleInput(
            (r(1, 2, 3, 4), r(1, 2, 4, 4), r(1, 2, 4, 3)), {"scale": 0.7}, "scale, Dv != D"
        ),
        SampleInput(
            (r(2, 4, 3, 4), r(2, 2, 5, 4), r(2, 2, 5, 2)),
            {"enable_gqa": True, "dropout_p": 0.0},
            "GQA H=4 Hkv=2, Dv != D, dropout 0 (off)",
        ),
        SampleInput(
            (r(1, 2, 4, 4), r(1, 2, 4, 4), r(1, 2, 4, 4)),
            {"is_causal": True, "dropout_p": 0.0},
            "causal, dropout 0 (off)",
        ),
        SampleInput((r(3, 4), r(4, 4), r(4, 4)), {"is_causal": True}, "no batch or head dims"),
        SampleInput(
            (r(1, 2, 3, 4), r(1, 2, 4, 4), r(1, 2, 4, 4)), {"dropout_p": 0.3}, "dropout 0.3"
        ),
    ]


def _sdpa_ref(
    q,
    k,
    v,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
    window=None,
):
    """Naive attention: repeat kv heads, einsum scores, explicit masked softmax."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        k = np.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
        v = np.repeat(v, q.shape[-3] // v.shape[-3], axis=-3)
    s = np.einsum("...id,...jd->...ij", q, k) * scale
    visible = _visible(s.shape[-2], s.shape[-1], is_causal, window)
    if attn_mask is not None:
        if attn_mask.dtype == bool:
            visible = visible & attn_mask
        else:
            s = s + attn_mask
    s = np.where(np.broadcast_to(visible, s.shape), s, -np.inf)
    live = np.isfinite(s).any(axis=-1, keepdims=True)
    s = np.where(live, s, 0.0)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True) * live
    if dropout_p:
        keep, factor = _dropout_keep(s.shape, dropout_p)
        p = p * keep * factor
    return np.einsum("...ij,...jd->...id", p, v)


def _sdpa_composite(
    q,
    k,
    v,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
    window=None,
):
    """The same attention from primitive ops: matmul, masked_fill, softmax, matmul."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        group = q.shape[-3] // k.shape[-3]

        def repeat_heads(t):  # [..., Hkv, T, D] -> [..., Hkv * G, T, D]
            lead, n_kv = t.shape[:-3], t.shape[-3]
            wide = t.unsqueeze(-3).expand(lead + (n_kv, group) + t.shape[-2:])
            return wide.reshape(lead + (n_kv * group,) + t.shape[-2:])

        k, v = repeat_heads(k), repeat_heads(v)
    s = F.matmul(q, k.transpose(-1, -2)) * scale
    visible = _visible(s.shape[-2], s.shape[-1], is_causal, window)
    if attn_mask is not None:
        if _data(attn_mask).dtype == bool:
            visible = visible & _data(attn_mask)
        else:
            s = s + attn_mask
    s = F.masked_fill(s, ~visible, float("-inf"))
    # a fully masked row has no distribution (F.softmax gives NaN there, as PyTorch's): give
    # it finite scores for the softmax, then zero its probabilities, as SDPA defines it
    dead = np.isneginf(s.data).all(axis=-1, keepdims=True)
    if dead.any():
        s = F.masked_fill(s, np.broadcast_to(dead, s.shape), 0.0)
    p = F.softmax(s, -1)
    if dead.any():
        p = F.masked_fill(p, np.broadcast_to(dead, p.shape), 0.0)
    if dropout_p:
        keep, factor = _dropout_keep(p.shape, dropout_p)
        p = p * Tensor((keep * factor).astype(p.dtype))
    return F.matmul(p, v)


register(
    OpInfo(
        "scaled_dot_product_attention",
        _sdpa_op,
        _sdpa_samples,
        _sdpa_ref,
        composite=_sdpa_composite,
        family="attention",
        kernels=("softmax_forward", "softmax_backward"),
    )
)


# ---------------------------------------------------------------- rotary embedding
def _rope_samples(rng, dtype):
    def r(*shape):
        return randn(rng, dtype, *shape)

    return [
        SampleInput((r(2, 3, 4),), name="half layout [B, T, D]"),
        SampleInput((r(1, 2, 5, 6),), {"layout": "interleaved", "offset": 3}, "interleaved"),
        SampleInput((r(2, 4, 4), np.array([0, 5, 9, 2])), name="explicit positions"),
        SampleInput(
            (r(2, 2, 3, 4), np.array([[[0, 1, 2]], [[7, 8, 9]]])),
            {"layout": "interleaved"},
            "per-sequence positions [B, 1, T]",
        ),
        SampleInput(
            (r(3, 8),), {"scaling": {"type": "linear", "factor": 4.0}, "base": 100.0}, "linear"
        ),
        SampleInput(
            (r(3, 8),),
            {"scaling": {"type": "ntk", "factor": 2.0}, "layout": "interleaved", "offset": 40},
            "ntk",
        ),
        # base 100, D 8, L 64: the pairs turn 10.2, 3.2, 1.0, 0.3 times over L, so beta 8 / 0.5
        # give a real ramp gamma = [0, 1/3, 2/3, 1]; output scaled by mscale = 1 + 0.1 ln 4
        SampleInput((r(2, 5, 8),), {"scaling": _YARN_SAMPLE, "base": 100.0, "offset": 3}, "yarn"),
    ]


_YARN_SAMPLE = {"type": "yarn", "factor": 4.0, "original_max_position": 64, "beta_fast": 8,
                "beta_slow": 0.5}  # fmt: skip
_YARN_HF = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256}


def _yarn_ref(D, base, scaling):
    """YaRN restated from the paper (rotation counts): (frequencies [D/2], mscale)."""
    s = scaling["factor"]
    L = scaling.get("original_max_position", scaling.get("original_max_position_embeddings"))
    fast, slow = scaling.get("beta_fast", 32), scaling.get("beta_slow", 1)

    def dim_of(turns):  # the pair index at which base^(-2i/D) turns `turns` times over L
        return D * math.log(L / (2 * math.pi * turns)) / (2 * math.log(base))

    lo, hi = max(math.floor(dim_of(fast)), 0), min(math.ceil(dim_of(slow)), D - 1)
    hi = hi + 0.001 if hi == lo else hi
    out = []
    for i in range(D // 2):
        theta = base ** (-2.0 * i / D)
        ramp = min(max((i - lo) / (hi - lo), 0.0), 1.0)  # 0: keep theta, 1: theta / s
        out.append(theta / s * ramp + theta * (1 - ramp))
    return np.array(out), (1 + 0.1 * math.log(s) if s > 1 else 1.0)


def _scaling_type(scaling):
    return None if scaling is None else scaling.get("type", scaling.get("rope_type"))


def _rope_ref(x, positions=None, *, base=10000.0, layout="half", offset=0, scaling=None):
    """RoPE as a complex multiplication: (a + ib) e^{i m theta} (times YaRN's mscale)."""
    T, D = x.shape[-2:]
    pos = (np.arange(T) if positions is None else positions).astype(np.float64) + offset
    if scaling is not None and scaling["type"] == "linear":
        pos = pos / scaling["factor"]
    if scaling is not None and scaling["type"] == "ntk":
        base = base * scaling["factor"] ** (D / (D - 2))
    theta = base ** (-2.0 * np.arange(D // 2) / D)
    mscale = 1.0
    if _scaling_type(scaling) == "yarn":
        theta, mscale = _yarn_ref(D, base, scaling)
    rotation = mscale * np.exp(1j * pos[..., None] * theta)
    if layout == "half":
        z = (x[..., : D // 2] + 1j * x[..., D // 2 :]) * rotation
        return np.concatenate([z.real, z.imag], axis=-1)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * rotation
    out = np.empty(z.shape[:-1] + (D,))
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def _rope_composite(x, positions=None, *, base=10000.0, layout="half", offset=0, scaling=None):
    """RoPE from slicing, mul, sub/add and cat (or stack) with constant cos/sin tables."""
    T, D = x.shape[-2:]
    cos, sin = F.rope_cos_sin(
        T, D, base, scaling, offset=offset, positions=positions, dtype=x.dtype
    )
    if layout == "half":
        a, b = x[..., : D // 2], x[..., D // 2 :]
        return F.cat([a * cos - b * sin, b * cos + a * sin], -1)
    a, b = x[..., 0::2], x[..., 1::2]
    return F.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(x.shape)


register(
    OpInfo(
        "rotary_embedding",
        F.rotary_embedding,
        _rope_samples,
        _rope_ref,
        composite=_rope_composite,
        family="positional",
        kernels=("rope_forward", "rope_backward"),
    )
)


# ---------------------------------------------------------------- tables (not differentiable)
def _ref_theta(D, base):
    return np.array([base ** (-2.0 * i / D) for i in range(D // 2)])


def _rope_frequencies_ref(D, base=10000.0, scaling=None, *, dtype=None):
    if _scaling_type(scaling) == "yarn":
        return _yarn_ref(D, base, scaling)[0]
    if scaling is not None and scaling["type"] == "ntk":
        return _ref_theta(D, base * scaling["factor"] ** (D / (D - 2)))
    if scaling is not None and scaling["type"] == "linear":
        return _ref_theta(D, base) / scaling["factor"]
    return _ref_theta(D, base)


register(
    OpInfo(
        "rope_frequencies",
        F.rope_frequencies,
        lambda rng, dtype: [
            SampleInput((8,), {"dtype": dtype}, "default base"),
            SampleInput((6, 500.0, {"type": "linear", "factor": 2.0}), {"dtype": dtype}, "linear"),
            SampleInput((128, 10000.0, {"type": "ntk", "factor": 4.0}), {"dtype": dtype}, "ntk"),
            SampleInput((8, 100.0, _YARN_SAMPLE), {"dtype": dtype}, "yarn"),
            SampleInput((64, 10000.0, _YARN_HF), {"dtype": dtype}, "yarn, HF spelling"),
        ],
        _rope_frequencies_ref,
        family="positional",
        differentiable=False,
    )
)


def _rope_cos_sin_ref(T, D, base=10000.0, scaling=None, *, offset=0, positions=None, dtype=None):
    pos = np.arange(T) if positions is None else positions
    angles = np.multiply.outer(pos + offset, _rope_frequencies_ref(D, base, scaling))
    mscale = _yarn_ref(D, base, scaling)[1] if _scaling_type(scaling) == "yarn" else 1.0
    return mscale * np.cos(angles), mscale * np.sin(angles)


register(
    OpInfo(
        "rope_cos_sin",
        F.rope_cos_sin,
        lambda rng, dtype: [
            SampleInput((5, 8), {"dtype": dtype}, "T=5, D=8"),
            SampleInput((3, 4), {"offset": 10000, "dtype": dtype}, "offset 10^4"),
            SampleInput(
                (None, 6), {"positions": np.array([[3, 1], [0, 2]]), "dtype": dtype}, "positions"
            ),
            SampleInput((6, 64, 10000.0, _YARN_HF), {"offset": 500, "dtype": dtype}, "yarn"),
        ],
        _rope_cos_sin_ref,
        family="positional",
        differentiable=False,
    )
)


def _alibi_slopes_ref(n_heads, *, dtype=None):
    """The ALiBi paper's get_slopes, restated."""

    def power_of_two(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return np.array(power_of_two(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = list(_alibi_slopes_ref(2 * closest))[0::2][: n_heads - closest]
    return np.array(power_of_two(closest) + extra)


register(
    OpInfo(
        "alibi_slopes",
        F.alibi_slopes,
        lambda rng, dtype: [
            SampleInput((n,), {"dtype": dtype}, f"{n} heads") for n in (1, 6, 8, 12, 20)
        ],
        _alibi_slopes_ref,
        family="positional",
        differentiable=False,
    )
)


def _alibi_bias_ref(n_heads, Tq, Tk=None, *, offset=0, dtype=None):
    Tk = Tq if Tk is None else Tk
    slopes = _alibi_slopes_ref(n_heads)
    out = np.empty((n_heads, Tq, Tk))
    for h in range(n_heads):
        for i in range(Tq):
            for j in range(Tk):
                out[h, i, j] = -slopes[h] * abs(offset + i - j)
    return out


register(
    OpInfo(
        "alibi_bias",
        F.alibi_bias,
        lambda rng, dtype: [
            SampleInput((4, 3), {"dtype": dtype}, "square"),
            SampleInput((6, 2, 5), {"offset": 3, "dtype": dtype}, "cache offset"),
        ],
        _alibi_bias_ref,
        family="positional",
        differentiable=False,
    )
)


def _bucket_ref(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """HF T5's bucket formula, one element at a time, with float32 logarithms."""
    out = np.empty(np.shape(relative_position), dtype=np.int64)
    for idx, rel in np.ndenumerate(relative_position):
        nb, bucket = num_buckets, 0
        if bidirectional:
            nb //= 2
            bucket = nb if rel > 0 else 0
            n = abs(int(rel))
        else:
            n = max(0, -int(rel))
        exact = nb // 2
        if n < exact:
            out[idx] = bucket + n
            continue
        ratio = np.log(np.float32(n) / np.float32(exact)) / np.float32(
            math.log(max_distance / exact)
        )
        out[idx] = bucket + min(exact + int(ratio * np.float32(nb - exact)), nb - 1)
    return out


register(
    OpInfo(
        "relative_position_bucket",
        F.relative_position_bucket,
        lambda rng, dtype: [
            SampleInput((np.arange(-150, 150).reshape(20, 15),), name="bidirectional"),
            SampleInput((np.arange(-150, 150), False), name="causal"),
            SampleInput((np.arange(-40, 40), True, 16, 32), name="16 buckets, distance 32"),
        ],
        _bucket_ref,
        family="positional",
        differentiable=False,
    )
)


def _sinusoidal_ref(T, D, base=10000.0, *, dtype=None):
    pe = np.empty((T, D))
    for t in range(T):
        for i in range(D // 2):
            pe[t, 2 * i] = math.sin(t / base ** (2 * i / D))
            pe[t, 2 * i + 1] = math.cos(t / base ** (2 * i / D))
    return pe


register(
    OpInfo(
        "sinusoidal_position_encoding",
        F.sinusoidal_position_encoding,
        lambda rng, dtype: [
            SampleInput((6, 8), {"dtype": dtype}, "T=6, D=8"),
            SampleInput((3, 4, 100.0), {"dtype": dtype}, "base 100"),
        ],
        _sinusoidal_ref,
        family="positional",
        differentiable=False,
    )
)
