"""Positional encodings as modules, chosen by a model's config.

Two families, with one calling convention each:

Absolute (added to the token embeddings x [B, T, C] once, before the first block):
    ``SinusoidalPositionalEncoding``  fixed table PE[t, 2i] = sin(t w_i), PE[t, 2i+1] = cos(t w_i),
                                      w_i = base^(-2i/C) (Vaswani et al. 2017); a buffer
    ``LearnedPositionalEmbedding``    a trained table P [max_positions, C] (GPT-2's ``wpe``)
    forward(x, offset=0) -> x + P[offset : offset + T]       (offset = tokens already decoded)

Relative (inside attention, per layer):
    ``RotaryEmbedding``          rotates q [B, H, T, D] and k [B, Hkv, T, D] by the angle
                                 m theta_i at absolute position m = offset + t (Su et al. 2021);
                                 forward(q, k, offset=0) -> (q', k'); cos/sin tables are cached
    ``ALiBi``                    forward(Tq, Tk, offset) -> bias [H, Tq, Tk],
                                 bias[h, i, j] = -m_h |(offset + i) - j|  (Press et al. 2022)
    ``T5RelativePositionBias``   forward(Tq, Tk, offset) -> bias [1, H, Tq, Tk],
                                 bias[0, h, i, j] = W[bucket(j - (offset + i)), h]  (Raffel 2020)

For decoding with a KV cache, ``offset`` is the absolute position of the first query (the
number of tokens already in the cache); keys are at positions 0 .. Tk - 1.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.backend import get_array_module
from tinyllm.functional.positional import RotaryEmbedding as _RotaryFunction
from tinyllm.functional.positional import _inv_freq_mscale, parse_rope_scaling
from tinyllm.nn import init
from tinyllm.nn.module import Module
from tinyllm.nn.parameter import Parameter
from tinyllm.tensor import Tensor

__all__ = [
    "ALiBi",
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "T5RelativePositionBias",
    "set_rope_scaling",
    "yarn_frequencies",
]


def _check_offset(name: str, offset) -> int:
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ValueError(f"{name}: offset must be an int >= 0, got {offset!r}")
    return int(offset)


def _check_embeddings(name: str, x, d_model: int) -> None:
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[-1] != d_model:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name}: expected embeddings [..., T, {d_model}], got {shape}")


class SinusoidalPositionalEncoding(Module):
    """x + PE[offset : offset + T] with the Transformer's fixed sin/cos table.

    PE [max_len, C]: PE[t, 2i] = sin(t / base^(2i/C)), PE[t, 2i + 1] = cos(t / base^(2i/C)).
    The table is a non-persistent buffer (a function of the config, not learned, so not in
    the state dict); it is extended on demand when offset + T exceeds ``max_len``.
    x: [B, T, C] (or [T, C]) -> same shape.
    """

    def __init__(self, d_model: int, max_len: int = 2048, base: float = 10000.0) -> None:
        super().__init__()
        if d_model <= 0 or d_model % 2:
            raise ValueError(f"SinusoidalPositionalEncoding: d_model must be even, got {d_model}")
        self.d_model, self.base = int(d_model), float(base)
        table = F.sinusoidal_position_encoding(int(max_len), self.d_model, self.base)
        self.register_buffer("pe", table, persistent=False)  # [max_len, C]

    def table(self, T: int, offset: int = 0) -> Tensor:
        """PE[offset : offset + T] as [T, C] (float32; the buffer's device)."""
        offset = _check_offset("SinusoidalPositionalEncoding", offset)
        if offset + T > self.pe.shape[0]:
            grown = F.sinusoidal_position_encoding(
                max(offset + T, 2 * self.pe.shape[0]),
                self.d_model,
                self.base,
                dtype=self.pe.dtype,
                device=self.pe.device,
            )
            self.register_buffer("pe", grown, persistent=False)
        return self.pe[offset : offset + T]

    def forward(self, x, offset: int = 0):
        _check_embeddings("SinusoidalPositionalEncoding", x, self.d_model)
        pe = self.table(x.shape[-2], offset)
        return x + (pe if pe.dtype == x.dtype else pe.to(x.dtype))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.pe.shape[0]}, base={self.base}"


class LearnedPositionalEmbedding(Module):
    """x + W[offset : offset + T] with a trained table W [max_positions, C] (GPT-2's ``wpe``).

    The parameter is named ``weight`` (a GPT-2 ``transformer.wpe.weight`` loads into it);
    initialized N(0, 0.02^2) as GPT-2. Positions past ``max_positions`` raise an error.
    x: [B, T, C] -> same shape.
    """

    def __init__(self, max_positions: int, d_model: int, dtype=None, device=None) -> None:
        super().__init__()
        if max_positions <= 0 or d_model <= 0:
            raise ValueError(
                f"LearnedPositionalEmbedding: max_positions and d_model must be positive, got "
                f"{max_positions}, {d_model}"
            )
        self.max_positions, self.d_model = int(max_positions), int(d_model)
        xp = backend.xp_for(backend.normalize_device(device))
        self.weight = Parameter(xp.zeros((max_positions, d_model), dtype=backend.as_dtype(dtype)))
        init.normal_(self.weight, 0.0, 0.02)

    def forward(self, x, offset: int = 0):
        _check_embeddings("LearnedPositionalEmbedding", x, self.d_model)
        offset = _check_offset("LearnedPositionalEmbedding", offset)
        T = x.shape[-2]
        if offset + T > self.max_positions:
            raise ValueError(
                f"LearnedPositionalEmbedding: positions {offset}..{offset + T - 1} exceed the "
                f"table of max_positions={self.max_positions}"
            )
        xp = get_array_module(self.weight.data)
        positions = Tensor(xp.arange(offset, offset + T, dtype=xp.int64))
        return x + F.embedding(positions, self.weight)  # [T, C] broadcast over B

    def extra_repr(self) -> str:
        return f"{self.max_positions}, {self.d_model}"


class RotaryEmbedding(Module):
    """Rotary position embedding of queries and keys, with cached cos/sin tables.

    Each pair (a_i, b_i) of a head vector at position m is rotated by m theta_i,
    theta_i = base^(-2i/D): (a, b) -> (a cos - b sin, b cos + a sin). ``layout="half"`` pairs
    dims (i, i + D/2) (GPT-NeoX, HF Llama); ``"interleaved"`` pairs (2i, 2i + 1) (GPT-J, Meta
    Llama, DeepSeek). ``scaling``: None, {"type": "linear", "factor": f} (position
    interpolation), {"type": "ntk", "factor": f} or {"type": "yarn", "factor": f,
    "original_max_position": L, "beta_fast": 32, "beta_slow": 1} (HF's ``rope_type`` /
    ``original_max_position_embeddings`` too; its attention temperature scales cos and sin by
    0.1 ln f + 1, so q.k by its square, as HF). The backward (rotation by -m theta_i, times
    the YaRN factor) is the fused ``tinyllm.functional.rotary_embedding`` op's.

    The half-angle tables cos, sin [T_max, D/2] are ``F.rope_cos_sin``'s (float64, the
    scaling and YaRN's temperature folded in: one implementation for the op, this module and
    the cached ``Decoder``), computed once (and regrown when a position beyond them is asked
    for), then cast and cached per dtype and device.

    forward(q [..., Tq, D], k [..., Tk, D], offset=0) -> (q', k'), both starting at absolute
    position ``offset`` (q and k of the same new tokens; Tq == Tk).
    """

    def __init__(
        self,
        head_dim: int,
        base: float = 10000.0,
        layout: str = "half",
        scaling=None,
        max_position: int = 2048,
    ) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even and positive, got {head_dim}")
        if layout not in ("half", "interleaved"):
            raise ValueError(
                f"RotaryEmbedding: layout must be 'half' or 'interleaved', got {layout!r}"
            )
        self.head_dim, self.base, self.layout, self.scaling = (
            int(head_dim),
            float(base),
            layout,
            scaling,
        )
        # validate base/scaling now (raises a clear error naming the module), size the table
        _inv_freq_mscale(np, self.head_dim, self.base, scaling, "RotaryEmbedding")
        self._max_position = int(max_position)
        self._tables: dict = {}  # (device, dtype) -> (cos, sin) arrays [T_max, D/2]

    def cos_sin(self, T: int, offset: int, like):
        """(cos, sin) arrays [T, D/2] for positions offset .. offset + T - 1, like's dtype
        (``F.rope_cos_sin``'s float64 tables, YaRN's mscale included, cast once)."""
        needed = offset + T
        if needed > self._max_position:
            self._max_position = max(needed, 2 * self._max_position)
            self._tables.clear()
        device = backend.device_of(like)
        key = (device, np.dtype(like.dtype).str)
        if key not in self._tables:
            cos, sin = F.rope_cos_sin(
                self._max_position,
                self.head_dim,
                self.base,
                self.scaling,
                dtype="float64",
                device=device,
            )
            self._tables[key] = (cos.data.astype(like.dtype), sin.data.astype(like.dtype))
        cos, sin = self._tables[key]
        return cos[offset:needed], sin[offset:needed]

    def rotate(self, x, offset: int = 0):
        """x [..., T, D] rotated as positions offset .. offset + T - 1."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(
                f"RotaryEmbedding: expected a head size of {self.head_dim}, got x of shape "
                f"{tuple(x.shape)}"
            )
        offset = _check_offset("RotaryEmbedding", offset)
        cos, sin = self.cos_sin(x.shape[-2], offset, x.data)
        return _RotaryFunction.apply(x, cos, sin, self.layout == "interleaved")

    def forward(self, q, k, offset: int = 0):
        return self.rotate(q, offset), self.rotate(k, offset)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}, layout={self.layout!r}"


def yarn_frequencies(
    head_dim: int,
    base: float = 10000.0,
    factor: float = 1.0,
    original_max_position: int = 2048,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> tuple[np.ndarray, float]:
    """YaRN's rotary frequencies and attention factor (Peng et al. 2023, "YaRN"; HF's
    ``_compute_yarn_parameters``): (inv_freq float64 [D/2], mscale).

    theta_i = base^(-2i/D). Pair i turns r_i = L / (2 pi / theta_i) times over the original
    context L. Pairs that turn more than ``beta_fast`` times keep theta_i (extrapolation:
    local order stays sharp), pairs that turn less than ``beta_slow`` times get theta_i / s
    (position interpolation), and a linear ramp over the dimension index mixes the two in
    between: with i_r = D ln(L / (2 pi r)) / (2 ln base) the index where pair i turns r times,
    low = floor(i_{beta_fast}), high = ceil(i_{beta_slow}),

        gamma_i = clip((i - low) / (high - low), 0, 1)
        inv_freq_i = theta_i (1 - gamma_i) + (theta_i / s) gamma_i

    The attention temperature: softmax(q.k / (t sqrt D)) with sqrt(1/t) = 0.1 ln s + 1
    (``mscale``; 1 for s <= 1), applied by scaling cos and sin, hence q and k, by mscale.
    At s = 1 it is plain RoPE. The tables themselves are ``F.rope_cos_sin(..., scaling=
    {"type": "yarn", ...})``; this returns the same frequencies (one implementation).
    """
    op = "yarn_frequencies"
    if isinstance(head_dim, bool) or head_dim <= 0 or head_dim % 2:
        raise ValueError(f"{op}: head_dim must be even and positive, got {head_dim}")
    scaling = {"type": "yarn", "factor": factor, "original_max_position": original_max_position,
               "beta_fast": beta_fast, "beta_slow": beta_slow}  # fmt: skip
    inv_freq, mscale = _inv_freq_mscale(np, int(head_dim), base, scaling, op)
    return inv_freq, mscale


def set_rope_scaling(model: Module, scaling) -> int:
    """Give every ``RotaryEmbedding`` of ``model`` the context-extension ``scaling`` (None,
    linear, ntk or yarn; see ``RotaryEmbedding``): how a trained Llama is run past its
    training context. Tables are rebuilt on the next call. A model with a ``config`` that has
    a ``rope_scaling`` field (``ModelConfig``) gets a new config holding the canonical dict, so
    a checkpoint saved with ``model.config.to_dict()`` remembers it. Everything is validated
    before anything changes. Returns how many modules were changed."""
    spec = parse_rope_scaling(scaling, "set_rope_scaling")
    rotaries = [m for _, m in model.named_modules() if isinstance(m, RotaryEmbedding)]
    for module in rotaries:  # the module's own checks (head size, NTK's D > 2)
        _inv_freq_mscale(np, module.head_dim, module.base, spec, "set_rope_scaling")
    config = getattr(model, "config", None)
    new_config = None
    if dataclasses.is_dataclass(config) and any(
        f.name == "rope_scaling" for f in dataclasses.fields(config)
    ):  # validated by the config's own __post_init__ (e.g. gpt refuses a scaling)
        new_config = dataclasses.replace(
            config, rope_scaling=None if spec is None else spec.as_dict()
        )
    for module in rotaries:
        module.scaling, module._tables = scaling, {}
    if new_config is not None:
        model.config = new_config
    return len(rotaries)


class ALiBi(Module):
    """ALiBi's additive attention bias: bias[h, i, j] = -m_h |(offset + i) - j|.

    Slopes m_h = 2^(-8h/H) for H a power of two (the paper's ``get_slopes`` otherwise), kept
    as a non-persistent buffer ``slopes`` [H]. With a causal mask (keys j <= offset + i) this
    is the paper's -m_h (i - j); without one it is the symmetric variant. No parameters.

    forward(Tq, Tk=None, offset=None, dtype=None) -> [H, Tq, Tk]; offset defaults to
    Tk - Tq (the queries are the last Tq of the Tk positions, as when decoding with a cache).
    """

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        if n_heads <= 0:
            raise ValueError(f"ALiBi: n_heads must be positive, got {n_heads}")
        self.n_heads = int(n_heads)
        self.register_buffer("slopes", F.alibi_slopes(self.n_heads), persistent=False)

    def forward(self, Tq: int, Tk: int | None = None, offset: int | None = None, dtype=None):
        Tk = Tq if Tk is None else Tk
        offset = Tk - Tq if offset is None else _check_offset("ALiBi", offset)
        xp = get_array_module(self.slopes.data)
        distance = xp.abs(xp.arange(Tq)[:, None] + offset - xp.arange(Tk)[None, :])  # [Tq, Tk]
        slopes = self.slopes.data.astype(np.float64)
        bias = -slopes[:, None, None] * distance  # [H, Tq, Tk]
        return Tensor(bias.astype(backend.as_dtype(dtype)))

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}"


class T5RelativePositionBias(Module):
    """T5's learned relative position bias: bias[0, h, i, j] = W[bucket(j - (offset + i)), h].

    rel = key position - query position; ``bucket`` is ``F.relative_position_bucket`` (exact
    buckets for |rel| < num_buckets/4 (bidirectional) or /2 (causal), log-spaced up to
    ``max_distance``). The table W [num_buckets, H] is the parameter ``weight``: inside an
    ``Attention`` module it sits at ``relative_attention_bias.weight``, HF T5's key. T5 shares
    one table across all layers of a stack; pass the same instance to every layer's attention
    to do that. The bias is differentiable with respect to W.

    forward(Tq, Tk=None, offset=None) -> [1, H, Tq, Tk]; offset defaults to Tk - Tq.
    """

    def __init__(
        self,
        num_buckets: int = 32,
        max_distance: int = 128,
        n_heads: int = 8,
        bidirectional: bool = True,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        if num_buckets < 2 or max_distance < 1 or n_heads <= 0:
            raise ValueError(
                f"T5RelativePositionBias: need num_buckets >= 2, max_distance >= 1, n_heads > 0; "
                f"got {num_buckets}, {max_distance}, {n_heads}"
            )
        self.num_buckets, self.max_distance = int(num_buckets), int(max_distance)
        self.n_heads, self.bidirectional = int(n_heads), bool(bidirectional)
        xp = backend.xp_for(backend.normalize_device(device))
        self.weight = Parameter(xp.zeros((num_buckets, n_heads), dtype=backend.as_dtype(dtype)))
        init.normal_(self.weight, 0.0, 1.0 / math.sqrt(n_heads))

    def buckets(self, Tq: int, Tk: int | None = None, offset: int | None = None) -> Tensor:
        """The int64 buckets [Tq, Tk] of rel = j - (offset + i)."""
        Tk = Tq if Tk is None else Tk
        offset = Tk - Tq if offset is None else _check_offset("T5RelativePositionBias", offset)
        xp = get_array_module(self.weight.data)
        rel = xp.arange(Tk)[None, :] - (xp.arange(Tq)[:, None] + offset)  # [Tq, Tk]
        return F.relative_position_bucket(
            rel,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )

    def forward(self, Tq: int, Tk: int | None = None, offset: int | None = None):
        values = F.embedding(self.buckets(Tq, Tk, offset), self.weight)  # [Tq, Tk, H]
        return values.permute(2, 0, 1).unsqueeze(0)  # [1, H, Tq, Tk]

    def extra_repr(self) -> str:
        return (
            f"num_buckets={self.num_buckets}, max_distance={self.max_distance}, "
            f"n_heads={self.n_heads}, bidirectional={self.bidirectional}"
        )
