"""Positional encodings: rotary (RoPE), ALiBi, T5 relative buckets, sinusoidal.

Rotary embedding (Su et al. 2021), one fused Function. For a head vector x in R^D (D even) at
position m, frequencies theta_i = base^(-2i/D), i = 0 .. D/2 - 1, each pair (a_i, b_i) of x is
rotated by the angle m * theta_i:

    a'_i = a_i cos(m theta_i) - b_i sin(m theta_i)
    b'_i = b_i cos(m theta_i) + a_i sin(m theta_i)

The pairs are (x_i, x_{i + D/2}) in the half-split layout (GPT-NeoX, HF Llama: ``rotate_half``)
and (x_{2i}, x_{2i+1}) in the interleaved layout (GPT-J, Meta's Llama). With the permutation
P = [0, 2, 4, ..., 1, 3, 5, ...]: interleaved(x)[P] == half(x[P]).

A rotation is orthogonal, so the backward is the rotation by the negative angle:

    da_i = da'_i cos(m theta_i) + db'_i sin(m theta_i)
    db_i = db'_i cos(m theta_i) - da'_i sin(m theta_i)

The arithmetic of both directions lives in one place, ``tinyllm.kernels.rope_forward`` and
``rope_backward`` (``kernels/rope.py``): its reference tier is the readable array code, and
the Numba and CUDA tiers are tested against it; the Function here keeps the math of the op
(tables, what is saved) and calls them. It saves only the cos/sin tables, not x: [T, D/2]
(no batch or head dims), or positions.shape + [D/2] for explicit per-sequence positions.
Angles are computed in float64 and cast to x's dtype, so positions of 10^4 and more stay exact.
Context extension (``scaling``): ``{"type": "linear", "factor": f}`` is position interpolation
(positions m / f, Chen et al. 2023); ``{"type": "ntk", "factor": f}`` is NTK-aware scaling
(base' = base * f^(D / (D - 2)): the highest frequency unchanged, the lowest divided by f);
``{"type": "yarn", "factor": s, "original_max_position": L, "beta_fast": 32, "beta_slow": 1}``
is YaRN (Peng et al. 2023; HF's ``_compute_yarn_parameters``): with r_i = L theta_i / (2 pi)
the turns of pair i over the original context L and i_r = D ln(L / (2 pi r)) / (2 ln base)
the index where a pair turns r times, low = max(floor(i_{beta_fast}), 0),
high = min(ceil(i_{beta_slow}), D - 1) (high += 0.001 when equal, HF's guard),

    gamma_i = clip((i - low) / (high - low), 0, 1)
    theta'_i = theta_i (1 - gamma_i) + (theta_i / s) gamma_i

(pairs turning more than beta_fast times keep theta_i, those turning less than beta_slow
times are interpolated), and its attention temperature: cos and sin (hence q and k) are
scaled by mscale = 0.1 ln s + 1 (1 for s <= 1), so q.k by mscale^2. HF's spelling
(``rope_type``, ``original_max_position_embeddings``) is accepted. The backward is the same
kernel call: the rotation is linear in (cos, sin), so scaled tables give mscale R^T dy.

ALiBi (Press et al. 2022): bias[h, i, j] = -m_h |i - j| added to head h's scores, slopes
m_h = 2^(-8h/n) for n = 2^k heads, and for other n the slopes of the closest lower power of two
followed by every other slope of the next power of two (``get_slopes`` of the paper's code).

T5 relative position buckets (Raffel et al. 2020, HF ``T5Attention._relative_position_bucket``):
exact buckets for small distances, logarithmic ones up to ``max_distance``, then the last.

Sinusoidal encoding (Vaswani et al. 2017): PE[t, 2i] = sin(t / base^(2i/D)),
PE[t, 2i + 1] = cos(t / base^(2i/D)).

Only ``rotary_embedding`` is differentiable; the others build constant tables.
Kernel tiers (RoPE only): reference (NumPy/CuPy), Numba, CUDA, picked by ``tinyllm.kernels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinyllm import backend, kernels
from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.tensor import Tensor

__all__ = [
    "alibi_bias",
    "alibi_slopes",
    "relative_position_bucket",
    "rope_cos_sin",
    "rope_frequencies",
    "rotary_embedding",
    "sinusoidal_position_encoding",
]


# ---------------------------------------------------------------- helpers
def _xp(device):
    return backend.xp_for(backend.normalize_device(device))


def _tensor(array, dtype, device) -> Tensor:
    xp = _xp(device)
    return Tensor(xp.asarray(array).astype(backend.as_dtype(dtype), copy=False))


def _check_int(value, op: str, arg: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{op}: {arg} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_head_size(D, op: str) -> int:
    D = _check_int(D, op, "D (head size)", 2)
    if D % 2:
        raise ValueError(f"{op}: the head size D must be even (pairs of dims rotate), got {D}")
    return D


_SCALING_TYPES = ("linear", "ntk", "yarn")
# keys of HF rope_scaling dicts this implementation does not honour: refused, not ignored
_UNSUPPORTED_KEYS = ("attention_factor", "mscale", "mscale_all_dim", "low_freq_factor",
                     "high_freq_factor", "truncate")  # fmt: skip


@dataclass(frozen=True)
class RopeScaling:
    """A validated RoPE context-extension spec (``parse_rope_scaling``'s result)."""

    type: str  # "linear" | "ntk" | "yarn"
    factor: float
    original_max_position: int | None = None  # yarn only: the training context L
    beta_fast: float = 32.0  # yarn only
    beta_slow: float = 1.0  # yarn only

    def as_dict(self) -> dict:
        """The canonical JSON-able dict (what ``ModelConfig.rope_scaling`` stores)."""
        if self.type != "yarn":
            return {"type": self.type, "factor": self.factor}
        return {
            "type": "yarn",
            "factor": self.factor,
            "original_max_position": self.original_max_position,
            "beta_fast": self.beta_fast,
            "beta_slow": self.beta_slow,
        }


def _positive_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(value)) and float(value) > 0


def parse_rope_scaling(scaling, op: str) -> RopeScaling | None:
    """Validate a scaling spec: None, a dict, or an object with attributes (an HF config's
    ``rope_scaling``): ``type``/``rope_type``, ``factor``, and for yarn
    ``original_max_position``/``original_max_position_embeddings``, ``beta_fast``,
    ``beta_slow``. Errors name ``op`` and the argument."""
    if scaling is None or isinstance(scaling, RopeScaling):
        return scaling
    get = scaling.get if isinstance(scaling, dict) else lambda k: getattr(scaling, k, None)
    kind = get("type") or get("rope_type")
    factor = get("factor")
    if kind not in _SCALING_TYPES:
        raise ValueError(f"{op}: scaling type must be 'linear', 'ntk' or 'yarn', got {kind!r}")
    if factor is None or not _positive_number(factor):
        raise ValueError(f"{op}: scaling factor must be a positive number, got {factor!r}")
    unsupported = [k for k in _UNSUPPORTED_KEYS if get(k) is not None]
    if unsupported:
        raise ValueError(f"{op}: scaling keys {unsupported} are not supported (got {scaling!r})")
    if kind != "yarn":
        return RopeScaling(kind, float(factor))
    L = get("original_max_position")
    L = get("original_max_position_embeddings") if L is None else L
    if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L <= 0:
        raise ValueError(
            f"{op}: yarn scaling needs original_max_position (the training context), an int "
            f"> 0, got {L!r}"
        )
    fast = 32.0 if get("beta_fast") is None else get("beta_fast")
    slow = 1.0 if get("beta_slow") is None else get("beta_slow")
    if not (_positive_number(fast) and _positive_number(slow) and fast > slow):
        raise ValueError(
            f"{op}: yarn scaling needs beta_fast > beta_slow > 0, got {fast!r}, {slow!r}"
        )
    return RopeScaling("yarn", float(factor), int(L), float(fast), float(slow))


def yarn_mscale(factor: float) -> float:
    """YaRN's attention temperature factor: sqrt(1/t) = 0.1 ln s + 1 (1 for s <= 1)."""
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0


def _yarn_inv_freq(xp, theta, D: int, base: float, spec: RopeScaling):
    """YaRN's frequencies: theta (1 - gamma) + (theta / s) gamma, gamma the ramp (module doc)."""
    s, L = spec.factor, spec.original_max_position

    def index_turning(r: float) -> float:  # the (fractional) pair index turning r times over L
        return D * math.log(L / (r * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(index_turning(spec.beta_fast)), 0)
    high = min(math.ceil(index_turning(spec.beta_slow)), D - 1)
    if high == low:
        high = high + 0.001  # HF's guard against a zero-width ramp
    gamma = xp.clip((xp.arange(D // 2, dtype=xp.float64) - low) / (high - low), 0.0, 1.0)
    return theta * (1.0 - gamma) + (theta / s) * gamma


def _inv_freq_mscale(xp, D: int, base: float, scaling, op: str):
    """(theta float64 [D/2] with the scaling folded in, the factor scaling cos and sin)."""
    spec = parse_rope_scaling(scaling, op)
    kind = None if spec is None else spec.type
    if not base > 0:
        raise ValueError(f"{op}: base must be positive, got {base}")
    if kind == "ntk":
        if D <= 2:
            raise ValueError(f"{op}: NTK scaling needs a head size D > 2, got {D}")
        base = base * spec.factor ** (D / (D - 2))
    theta = 1.0 / (base ** (xp.arange(0, D, 2, dtype=xp.float64) / D))
    if kind == "linear":  # angle (m / f) theta = m (theta / f)
        theta = theta / spec.factor
    if kind == "yarn":
        return _yarn_inv_freq(xp, theta, D, base, spec), yarn_mscale(spec.factor)
    return theta, 1.0


def _inv_freq(xp, D: int, base: float, scaling, op: str):
    """theta_i = base'^(-2i/D) (float64, [D/2]) with the scaling folded in."""
    return _inv_freq_mscale(xp, D, base, scaling, op)[0]


def _positions_array(xp, T, positions, offset, op: str):
    """Positions as float64: ``arange(T) + offset`` or ``positions + offset``."""
    if positions is None:
        return xp.arange(T, dtype=xp.float64) + offset
    p = positions.data if isinstance(positions, Tensor) else xp.asarray(positions)
    if p.dtype.kind not in "iuf":
        raise TypeError(f"{op}: positions must be integer or float, got {p.dtype}")
    return p.astype(xp.float64) + offset


def _cos_sin(xp, T, D, base, scaling, offset, positions, op: str):
    """mscale cos and mscale sin of the angles m * theta_i (float64, positions.shape + [D/2]);
    mscale is 1 but for YaRN (its attention temperature)."""
    theta, mscale = _inv_freq_mscale(xp, D, base, scaling, op)
    angles = _positions_array(xp, T, positions, offset, op)[..., None] * theta
    if mscale == 1.0:
        return xp.cos(angles), xp.sin(angles)
    return xp.cos(angles) * mscale, xp.sin(angles) * mscale


def rope_frequencies(D: int, base: float = 10000.0, scaling=None, *, dtype=None, device=None):
    """The rotary frequencies theta_i = base^(-2i/D), i < D/2, with ``scaling`` folded in.

    Linear scaling divides every theta by the factor (the same angles as positions / factor);
    NTK scaling changes the base to base * factor^(D / (D - 2)); YaRN mixes theta_i and
    theta_i / s by its ramp gamma_i (module docstring). YaRN's temperature is not a frequency:
    it is in ``rope_cos_sin``'s tables.

    >>> import tinyllm.functional as F
    >>> F.rope_frequencies(4, base=100.0, dtype="float64")
    tensor([1. , 0.1], dtype=float64)
    """
    op = "rope_frequencies"
    D = _check_head_size(D, op)
    xp = _xp(device)
    return _tensor(_inv_freq(xp, D, float(base), scaling, op), dtype, device)


def rope_cos_sin(
    T: int | None,
    D: int,
    base: float = 10000.0,
    scaling=None,
    *,
    offset: int = 0,
    positions=None,
    dtype=None,
    device=None,
):
    """(cos, sin) tables of the rotary angles, each [T, D/2] (or positions.shape + [D/2]).

    Row t holds cos/sin of (offset + t) * theta_i (or (positions[t] + offset) * theta_i): the
    half-angle tables both layouts use, ready for a module's cache. With YaRN ``scaling`` both
    are multiplied by its mscale = 0.1 ln s + 1 (the attention temperature, as HF does).
    """
    op = "rope_cos_sin"
    D = _check_head_size(D, op)
    if positions is None:
        T = _check_int(T, op, "T")
    xp = _xp(device)
    cos, sin = _cos_sin(xp, T, D, float(base), scaling, offset, positions, op)
    return _tensor(cos, dtype, device), _tensor(sin, dtype, device)


# ---------------------------------------------------------------- rotary embedding
class RotaryEmbedding(Function):
    """Rotate each pair (a_i, b_i) of the last dim by the angle m theta_i (tinyllm.kernels)."""

    @staticmethod
    def forward(ctx, x, cos, sin, interleaved):
        # x: [..., T, D]; cos, sin: [T, D/2] or broadcastable to x's [..., T, D/2]
        ctx.save_for_backward(cos, sin)
        ctx.interleaved = interleaved
        # a' = a cos - b sin,  b' = b cos + a sin
        return kernels.rope_forward(x, cos, sin, interleaved=interleaved)

    @staticmethod
    def backward(ctx, dout):
        cos, sin = ctx.saved_tensors
        # a' = a cos - b sin, b' = b cos + a sin  =>  rotate (da', db') by the negative angle:
        # da = da' cos + db' sin,  db = db' cos - da' sin
        return kernels.rope_backward(dout, cos, sin, interleaved=ctx.interleaved), None, None, None


def rotary_embedding(
    x,
    positions=None,
    *,
    base: float = 10000.0,
    layout: str = "half",
    offset: int = 0,
    scaling=None,
):
    """Rotary position embedding of ``x`` [..., T, D] (D even) along its last dim.

    ``positions``: integer (or float) positions, shape [T] or broadcastable to x.shape[:-1]
    (e.g. [B, 1, T] for per-sequence positions); default arange(T). ``offset`` is added to
    them (offset=p gives positions p, p+1, ... as for the tail of a longer sequence).
    ``layout``: "half" (NeoX/Llama rotate_half, pairs (i, i + D/2)) or "interleaved" (GPT-J,
    pairs (2i, 2i+1)). ``scaling``: None, {"type": "linear", "factor": f},
    {"type": "ntk", "factor": f} or {"type": "yarn", "factor": s, "original_max_position": L}
    (optional "beta_fast" 32, "beta_slow" 1; YaRN also scales the output by its mscale).
    Positions carry no gradient.

    >>> import tinyllm, tinyllm.functional as F
    >>> x = tinyllm.tensor([[1.0, 0.0], [1.0, 0.0]], dtype="float64")  # T = 2, D = 2
    >>> F.rotary_embedding(x).numpy().round(4).tolist()
    [[1.0, 0.0], [0.5403, 0.8415]]
    """
    op = "rotary_embedding"
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: x must be floating point, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{op}: x must have shape [..., T, D], got {tuple(x.shape)}")
    if layout not in ("half", "interleaved"):
        raise ValueError(f"{op}: layout must be 'half' or 'interleaved', got {layout!r}")
    D = x.shape[-1]
    if D % 2 or D == 0:
        raise ValueError(
            f"{op}: the last dim D must be even and positive (pairs rotate), got x {tuple(x.shape)}"
        )
    xp = get_array_module(x.data)
    if positions is not None:
        p = positions.data if isinstance(positions, Tensor) else xp.asarray(positions)
        lead = tuple(x.shape[:-1])
        try:
            ok = xp.broadcast_shapes(p.shape, lead) == lead
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{op}: positions of shape {tuple(p.shape)} do not broadcast to x's "
                f"[..., T] = {lead} (x {tuple(x.shape)})"
            )
        positions = p
    cos, sin = _cos_sin(xp, x.shape[-2], D, float(base), scaling, offset, positions, op)
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    return RotaryEmbedding.apply(x, cos, sin, layout == "interleaved")


# ---------------------------------------------------------------- ALiBi
def _alibi_slope_list(n: int) -> list[float]:
    """The paper's get_slopes: 2^(-8h/n) for powers of two; else interleave the next power."""
    closest = 2 ** int(math.floor(math.log2(n)))
    slopes = [2.0 ** (-8.0 * h / closest) for h in range(1, closest + 1)]
    if closest < n:
        # every other slope (indices 0, 2, 4, ...) of 2 * closest heads: 2^(-8(2i+1)/(2 closest))
        finer = [2.0 ** (-8.0 * h / (2 * closest)) for h in range(1, 2 * closest + 1)]
        slopes += finer[0::2][: n - closest]
    return slopes


def alibi_slopes(n_heads: int, *, dtype=None, device=None):
    """ALiBi's per-head slopes m_h, shape [n_heads].

    >>> import tinyllm.functional as F
    >>> F.alibi_slopes(4, dtype="float64")
    tensor([0.25  , 0.0625, 0.0156, 0.0039], dtype=float64)
    """
    n = _check_int(n_heads, "alibi_slopes", "n_heads", 1)
    return _tensor(np.array(_alibi_slope_list(n), dtype=np.float64), dtype, device)


def alibi_bias(
    n_heads: int, Tq: int, Tk: int | None = None, *, offset: int = 0, dtype=None, device=None
):
    """ALiBi's additive bias [n_heads, Tq, Tk]: bias[h, i, j] = -m_h |(offset + i) - j|.

    Query i sits at position offset + i (offset = Tk - Tq for the last Tq tokens of a cache;
    the default 0 is top-left aligned like ``is_causal``), key j at position j. For causal
    attention (keys j <= offset + i) this is -m_h (offset + i - j), the paper's bias; future
    keys get the mirrored value, which a causal mask removes, and which is the symmetric
    (bidirectional) variant when no causal mask is used. Add it to the scores as a float
    ``attn_mask``.
    """
    op = "alibi_bias"
    n = _check_int(n_heads, op, "n_heads", 1)
    Tq = _check_int(Tq, op, "Tq")
    Tk = Tq if Tk is None else _check_int(Tk, op, "Tk")
    xp = _xp(device)
    slopes = xp.asarray(_alibi_slope_list(n), dtype=xp.float64)
    distance = xp.abs(xp.arange(Tq)[:, None] + int(offset) - xp.arange(Tk)[None, :])
    return _tensor(-slopes[:, None, None] * distance, dtype, device)


# ---------------------------------------------------------------- T5 relative buckets
def relative_position_bucket(
    relative_position, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
):
    """T5's bucket (an int64 tensor) of each ``relative_position`` = key_pos - query_pos.

    bidirectional: half the buckets per sign (positive offsets add num_buckets / 2), n = |rel|;
    causal (bidirectional=False): n = max(0, -rel) (future keys share bucket 0). With nb the
    buckets left and max_exact = nb / 2: bucket n for n < max_exact, else
    max_exact + floor(log(n / max_exact) / log(max_distance / max_exact) * (nb - max_exact)),
    capped at nb - 1. The logarithm is evaluated in float32, as T5 (Mesh TF) and HF do, so
    bucket boundaries agree with them exactly. Not differentiable.
    """
    op = "relative_position_bucket"
    num_buckets = _check_int(num_buckets, op, "num_buckets", 2)
    max_distance = _check_int(max_distance, op, "max_distance", 1)
    xp = (
        get_array_module(relative_position.data)
        if isinstance(relative_position, Tensor)
        else get_array_module(relative_position)
    )
    rel = (
        relative_position.data
        if isinstance(relative_position, Tensor)
        else xp.asarray(relative_position)
    )
    if rel.dtype.kind not in "iu":
        raise TypeError(f"{op}: relative_position must be an integer tensor, got {rel.dtype}")
    rel = rel.astype(xp.int64)
    buckets = xp.zeros(rel.shape, dtype=xp.int64)
    nb = num_buckets
    if bidirectional:
        nb //= 2
        buckets += (rel > 0).astype(xp.int64) * nb
        n = xp.abs(rel)
    else:
        n = -xp.minimum(rel, 0)
    max_exact = nb // 2
    if max_exact < 1 or max_distance <= max_exact:
        raise ValueError(
            f"{op}: need num_buckets >= {4 if bidirectional else 2} and max_distance > "
            f"{max_exact} (got num_buckets={num_buckets}, max_distance={max_distance})"
        )
    # log-spaced buckets for n >= max_exact (n clipped below only to keep log away from 0)
    n_large = xp.maximum(n, max_exact).astype(xp.float32)
    ratio = xp.log(n_large / xp.float32(max_exact)) / xp.float32(math.log(max_distance / max_exact))
    large = max_exact + (ratio * xp.float32(nb - max_exact)).astype(xp.int64)
    large = xp.minimum(large, nb - 1)
    buckets += xp.where(n < max_exact, n, large)
    return Tensor(buckets)


# ---------------------------------------------------------------- sinusoidal
def sinusoidal_position_encoding(T: int, D: int, base: float = 10000.0, *, dtype=None, device=None):
    """The Transformer's fixed encoding [T, D]: sin at even dims, cos at odd dims.

    PE[t, 2i] = sin(t / base^(2i/D)), PE[t, 2i + 1] = cos(t / base^(2i/D)).
    """
    op = "sinusoidal_position_encoding"
    T = _check_int(T, op, "T")
    D = _check_head_size(D, op)
    xp = _xp(device)
    angles = xp.arange(T, dtype=xp.float64)[:, None] / float(base) ** (
        xp.arange(0, D, 2, dtype=xp.float64) / D
    )
    pe = xp.stack([xp.sin(angles), xp.cos(angles)], axis=-1).reshape(T, D)
    return _tensor(pe, dtype, device)
