"""A lean inference path for GPT and Llama: batch-1-friendly decoding in plain array code.

Decoding one token through ``tinyllm.nn`` runs ~100 autograd-aware ops, each with argument
checks and graph bookkeeping that inference does not need; at batch 1 that fixed cost, not the
arithmetic, decides the speed. ``Decoder`` snapshots a model's weights as arrays (q/k/v and
gate/up fused into one matrix each) and runs the same forward, token by token, on a
preallocated KV cache:

    x = embed[t] (+ wpe[pos])                                    [B, C]
    per layer:  h = norm_1(x);  q, k, v = h W_qkv^T (+ b)        (RoPE on q, k for Llama)
                K[:, :, pos] = k;  V[:, :, pos] = v              cache [B, Hkv, T_max, D]
                a = softmax(q K[:, :, :pos+1]^T / sqrt(D)) V     (GQA: query groups share K, V)
                x = x + a W_o^T (+ b);  x = x + ffn(norm_2(x))
    logits = norm_f(x) W_head^T                                  [B, V]

``prefill(tokens [B, T])`` feeds a whole prompt in one batched forward: the same layers on
[B, T, C], K/V written for positions pos .. pos + T - 1 at once, RoPE at those positions, and
causal attention over the cache (query pos + j sees keys 0 .. pos + j):

    s = q K[:, :, :pos+T]^T / sqrt(D) + mask,  mask[j, t] = -inf where t > pos + j
    logits = norm_f(x[:, -1]) W_head^T                           [B, V] (last position only)

Quantized layers (``tinyllm.quant.QuantLinear``) are not snapshotted: the decoder calls their
own forward (packed kernels, activation quantization), on the CPU or the GPU (``Module.to``
moves their packed operands), concatenating q/k/v's outputs. An LLM.int8() layer, whose
outlier columns depend on all the rows of a call, is refused.

It computes exactly what the module path computes (the tests compare the tokens and the
logits with ``model(idx)`` for every configuration flag: biases, GQA, tied embeddings, both
families), in the model's dtype. ``LanguageModel.generate`` uses it.

A Llama whose FFNs are mixtures of experts (``tinyllm.nn.moe.MoE``) decodes here too: the
router's inference-time choice (no noise: noisy top-k routes by top-k of its clean logits),
the experts on the rows routed to them, and the shared experts, as the layer computes them:

    top-k routers:  idx = top-k(x W_g^T);  g = softmax over the chosen logits
                    (softmax_topk without renormalization: g = softmax(x W_g^T)[idx])
    aux_free:       s = sigmoid(x W_g^T);  idx = top-k(s + b);  g = s[idx] / sum s[idx]
    hash:           idx = table[token];    g = 1
    y = sum_j g_j expert_{idx_j}(x) + shared(x),   expert(x) = w2(silu(w1 x) * w3 x)

Each token's experts depend on that token alone, so the cache gives what the full forward
gives. Expert-choice routing, Soft MoE and a capacity factor (token dropping) make a token's
output depend on the other tokens of the batch and sequence (an expert's top-c tokens, slots
mixed over the sequence, the queue of earlier tokens): they cannot decode one token at a
time. ``Decoder`` refuses such a model with a ValueError naming the layer and the reason
(``Decoder.unsupported(model)`` tells without building one), and ``generate`` then decodes
by the uncached forward.

RoPE is not re-implemented here: the tables come from the attention module's own
``RotaryEmbedding`` (same base, layout and scaling: the Llama builds it from
``config.rope_scaling`` and ``set_rope_scaling`` changes both together; its tables are
``F.rope_cos_sin``'s, YaRN's temperature included) and the rotation is
``tinyllm.kernels.rope_forward``, the kernel the module path's rotary op runs. The norms and
the FFN activation are the module path's kernels too (``rms_norm_forward`` /
``layer_norm_forward``, ``swiglu_forward`` / ``activation_forward``): at batch 1 one kernel call
costs less than the ~7 array ops it replaces. On the CPU with the Numba tier, a step's rows
[B, C] go straight to the kernels' serial bodies with the weights prepared once
(:class:`_StepKernels`): at B = 1 the public functions' checks and dispatch cost several
times the kernel itself (a scratch timing, not in the repo: ~6.5 us against ~0.9 us for an
RMSNorm of 256 numbers), and a token of the default model makes 9 norm and 4 activation
calls. A ``kernels.use("reference")`` block, prefill blocks [B, T, C] and other
devices take the public functions. This is the one place a model calls kernels directly:
the decoder is array code, as a Function's body is.

A dense model (no MoE or quantized layer) goes further on the CPU with the Numba tier: a
whole step is one call of ``kernels/decode_numba.py``'s ``decode_step`` (:class:`_FusedStep`),
with every layer's weights stacked into [L, ...] arrays (the per-layer projections keep views
of them: the weights are held once). It runs the same serial norm, activation and RoPE
bodies, ``np.dot`` for the matrix products and a loop per head for the attention over the
cache, so the ~60 small array ops of a token between its 17 matrix-vector products cost no
Python. It agrees with the per-op path to summation order (tests: every configuration flag,
float32 and float64, interleaved RoPE and YaRN). RoPE tables are read from the layers' own
``RotaryEmbedding`` at construction, for positions 0 .. max_len - 1; ``generate`` builds a
decoder per call, so a ``set_rope_scaling`` between calls is seen.
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm import backend
from tinyllm.functional.moe import _scatter_add_rows, expert_permutation
from tinyllm.grad_mode import no_grad
from tinyllm.kernels import (
    activation_forward,
    dispatch,
    layer_norm_forward,
    rms_norm_forward,
    rope_forward,
    swiglu_forward,
)
from tinyllm.kernels.glu import ACTIVATIONS
from tinyllm.nn.moe import MoE, SoftMoE
from tinyllm.nn.moe.routing import topk_indices
from tinyllm.tensor import Tensor


def _array(t):
    return t.data  # NumPy or CuPy: the decoder runs where the weights are


def _moe_unsupported(mlp) -> str | None:
    """Why an FFN module cannot decode token by token (None: it can)."""
    if isinstance(mlp, SoftMoE):
        return "Soft MoE mixes the tokens of the sequence into its slots"
    if not isinstance(mlp, MoE):
        return None
    if mlp.router == "expert_choice":
        return "expert-choice routing picks each expert's tokens among the whole batch"
    if mlp.capacity_factor is not None:
        return (
            f"capacity_factor={mlp.capacity_factor} drops a token's slots according to the "
            "tokens before it in the batch"
        )
    return None


def _is_quantized(module) -> bool:
    from tinyllm.quant.linear import QuantLinear  # quant builds on the models, not reverse

    return isinstance(module, QuantLinear)


def _int8_outliers_unsupported(block) -> str | None:
    """LLM.int8() picks its outlier columns over all the rows of one call, so a token's output
    depends on the other tokens fed with it: no token-by-token decoding (as with a capacity
    factor). Other quantized layers decode here through their own forward."""
    for module in block.modules():
        if _is_quantized(module) and module.threshold is not None:
            return "an LLM.int8() layer picks its outlier columns over the whole sequence"
    return None


class _Dense:
    """x W^T (+ b) for float layers, W^T pre-transposed (several layers: one fused GEMM)."""

    def __init__(self, wT, b) -> None:
        self.wT, self.b = wT, b

    def __call__(self, x):
        y = x @ self.wT
        if self.b is not None:
            y += self.b
        return y


class _Quantized:
    """Quantized layers (``tinyllm.quant.QuantLinear``) through their own forward: the packed
    dequantize-and-multiply kernels and any activation quantization, never a float weight
    copy; several layers' outputs are concatenated as a fused GEMM's would be."""

    def __init__(self, modules, dtype) -> None:
        self.modules, self.dtype = modules, dtype

    def __call__(self, x):
        xp = backend.get_array_module(x)
        with no_grad():
            outs = [m(Tensor(x)).data for m in self.modules]
        y = outs[0] if len(outs) == 1 else xp.concatenate(outs, axis=-1)
        return y.astype(self.dtype, copy=False)


class _StepKernels:
    """The serial Numba bodies of the norm and activation kernels for one step's rows
    [B, C] (NumPy, float32/64), called without the public functions' checks and dispatch.

    ``applies(x, dtype)`` says whether the fast path may run: not when another tier is
    requested, for a block of rows [B, T, C], from ``dispatch.SERIAL_BELOW`` elements (the
    public function launches the parallel kernel there) or for a dtype other than the
    weights'; the caller then takes the public function."""

    def __init__(self) -> None:
        from tinyllm.kernels import glu_numba, norms_numba

        self.norm_rows = dispatch.serial_twin(norms_numba.norm_rows)
        self.act_rows = dispatch.serial_twin(glu_numba.act_rows)
        self.glu_rows = dispatch.serial_twin(glu_numba.glu_rows)

    @staticmethod
    def applies(x, dtype) -> bool:
        return (
            x.ndim == 2
            and x.dtype == dtype
            and x.size < dispatch.SERIAL_BELOW
            and dispatch.requested_tier() != "reference"
        )

    @staticmethod
    def prepare_norm(weight, bias, eps, dtype, center: bool) -> tuple:
        """(weight, bias, eps, center) as the kernel takes them: contiguous arrays of
        ``dtype`` (ones / zeros for an absent weight / bias), eps as a ``dtype`` scalar."""
        C = None if weight is None else weight.shape[0]
        C = bias.shape[0] if C is None and bias is not None else C
        w = np.ones(C, dtype) if weight is None else np.ascontiguousarray(weight, dtype)
        b = np.zeros(w.shape, dtype) if bias is None else np.ascontiguousarray(bias, dtype)
        return w, b, dtype.type(eps), center

    def norm(self, x, prepared):
        w, b, eps, center = prepared
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        stats = np.empty((2, x.shape[0]), x.dtype)  # mean, rstd: not needed here
        self.norm_rows(x, x, w, b, eps, center, False, y, y, stats[0], stats[1])
        return y

    def activation(self, u, code: int):
        u = np.ascontiguousarray(u)
        out = np.empty_like(u)
        self.act_rows(u, code, u, out, False)
        return out

    def glu(self, u, code: int):
        u = np.ascontiguousarray(u)
        out = np.empty((u.shape[0], u.shape[1] // 2), u.dtype)
        self.glu_rows(u, code, out, out, u, False)
        return out


class _FusedStep:
    """A whole step of a dense model as one Numba call (``kernels/decode_numba.py``): every
    layer's weights stacked into [L, ...] arrays. The decoder writes each layer's transposed
    weights straight into them (``allocate``) and its ``_Dense`` projections keep views, so
    the weights are held once; prefill and the per-op path use the same arrays.

    ``unsupported(model, final, rotaries)`` (``final``: the last norm) says why a model
    cannot use it (MoE or quantized layers, a norm without weight and bias, RoPE layouts that
    differ between layers), or None.
    RoPE tables are read from the layers' ``RotaryEmbedding`` once, for positions 0 ..
    max_len - 1 (the rows ``cos_sin(1, pos)`` returns step by step).
    """

    PROJECTIONS = ("qkv", "o", "up", "down")

    @staticmethod
    def unsupported(model, final, rotaries) -> str | None:
        if any(isinstance(block.mlp, MoE) for block in model.blocks):
            return "a mixture-of-experts layer"
        if any(_is_quantized(m) for m in model.modules()):
            return "a quantized layer"
        norms = [n for block in model.blocks for n in (block.ln_1, block.ln_2)] + [final]
        if any(n.weight is None and getattr(n, "bias", None) is None for n in norms):
            return "a norm without weight and bias"
        if len({None if r is None else r.layout for r in rotaries}) > 1:
            return "RoPE layouts differ between layers"
        return None

    @staticmethod
    def allocate(layer_modules, dtype) -> dict:
        """Uninitialized [L, in, out] arrays for each projection; ``layer_modules``: per layer,
        a dict name -> the Linear modules fused into that projection."""
        stacked = {}
        for name in _FusedStep.PROJECTIONS:
            first = layer_modules[0][name]
            shape = (first[0].weight.shape[1], sum(m.weight.shape[0] for m in first))
            stacked[name] = np.empty((len(layer_modules), *shape), dtype)
        return stacked

    def __init__(self, decoder, rotaries, stacked: dict) -> None:
        from tinyllm import runtime
        from tinyllm.kernels import decode_numba  # loads SciPy's BLAS, the kernel's np.dot

        runtime.limit_late_blas_pools()
        self.kernel = decode_numba.decode_step
        dtype, layers = decoder.dtype, decoder.layers
        self.w, self.b = stacked, {}  # the layers' _Dense projections view self.w
        for name in self.PROJECTIONS:
            zeros = np.zeros(stacked[name].shape[2], dtype)
            self.b[name] = np.stack([zeros if layer[name].b is None else layer[name].b
                                     for layer in layers])  # fmt: skip
        norms = [n[3] for layer in layers for n in (layer["norm_1"], layer["norm_2"])]
        norms.append(decoder.final[3])  # (weight, bias, eps, center) each
        self.norm_w = np.stack([n[0] for n in norms])
        self.norm_b = np.stack([n[1] for n in norms])
        self.eps = np.array([n[2] for n in norms], dtype)
        self.center = not decoder.llama
        self.head_w = decoder.head.wT
        self.head_b = decoder.head.b if decoder.head.b is not None else np.zeros(
            self.head_w.shape[1], dtype)  # fmt: skip
        self.rotary = rotaries[0] is not None
        self.interleaved = self.rotary and rotaries[0].layout == "interleaved"
        if self.rotary:
            tables = [r.cos_sin(decoder.max_len, 0, decoder.embed) for r in rotaries]
            self.cos = np.ascontiguousarray(np.stack([c for c, _ in tables]), dtype)
            self.sin = np.ascontiguousarray(np.stack([s for _, s in tables]), dtype)
        else:
            self.cos = self.sin = np.zeros((len(layers), 1, 1), dtype)
        # Llama: silu(gate) * up of [gate | up]; GPT: gelu-tanh (as ``Decoder._ffn``)
        self.gated = decoder.llama
        self.act = ACTIVATIONS["silu"] if decoder.llama else ACTIVATIONS["gelu_tanh"]
        self.n_head = decoder.H

    def __call__(self, x, pos: int, K, V):
        return self.kernel(
            x, pos, self.norm_w, self.norm_b, self.eps, self.center,
            self.w["qkv"], self.b["qkv"], self.w["o"], self.b["o"],
            self.w["up"], self.b["up"], self.w["down"], self.b["down"],
            self.cos, self.sin, self.rotary, self.interleaved, self.gated, self.act,
            self.n_head, K, V, self.head_w, self.head_b,
        )  # fmt: skip


class Decoder:
    """Token-by-token inference for a ``GPT`` or ``Llama`` built from ``tinyllm.models``."""

    @staticmethod
    def unsupported(model) -> str | None:
        """Why ``model`` cannot use the cached decoder ("layer i: reason"), or None."""
        for i, block in enumerate(model.blocks):
            why = _moe_unsupported(block.mlp) or _int8_outliers_unsupported(block)
            if why is not None:
                return f"layer {i}: {why}"
        why = _int8_outliers_unsupported(model.lm_head)
        return None if why is None else f"lm_head: {why}"

    def __init__(self, model, batch_size: int, max_len: int) -> None:
        why = Decoder.unsupported(model)
        if why is not None:
            raise ValueError(
                f"Decoder: this model cannot decode with a KV cache ({why}); decode by the "
                "full forward (generate(..., use_cache=False))"
            )
        cfg = model.config
        self.cfg, self.B, self.max_len = cfg, batch_size, max_len
        self.llama = cfg.arch == "llama"
        self.H, self.Hkv, self.D = cfg.n_head, cfg.n_kv_head, cfg.d_model // cfg.n_head
        blocks = model.blocks
        if self.llama:
            self.embed = _array(model.model["embed_tokens"].weight)
            final = model.model["norm"]
            self.wpe = None
        else:
            self.embed = _array(model.transformer["wte"].weight)
            self.wpe = _array(model.transformer["wpe"].weight)
            final = model.transformer["ln_f"]
        self.dtype = self.embed.dtype
        xp = self.xp = backend.get_array_module(self.embed)
        self.kernels = None  # the kernels' serial bodies for a step's rows (CPU, Numba tier)
        if xp is np and dispatch.select_tier("rms_norm_forward", np, self.dtype) == "numba":
            self.kernels = _StepKernels()
        self.final = self._norm(final)
        self.head = self._projection([model.lm_head])
        # the Linear modules fused into each projection, per layer (no "up"/"down" for MoE)
        modules = []
        for block in blocks:
            attn, mlp = block.attn, block.mlp
            layer = {"qkv": [attn.q_proj, attn.k_proj, attn.v_proj], "o": [attn.o_proj]}
            if not isinstance(mlp, MoE):
                up, down = (
                    (mlp.gate_up_proj, mlp.down_proj) if self.llama else (mlp.c_fc, mlp.c_proj)
                )
                layer.update(up=[up], down=[down])
            modules.append(layer)
        rotaries = [getattr(block.attn, "rotary", None) for block in blocks]
        stacked = None  # a whole step in one kernel call (CPU, Numba tier, dense layers)
        if self.kernels is not None and _FusedStep.unsupported(model, final, rotaries) is None:
            stacked = _FusedStep.allocate(modules, self.dtype)
        self.layers = []
        for i, block in enumerate(blocks):
            layer = {
                "rotary": rotaries[i],  # RotaryEmbedding, or None (GPT)
                "norm_1": self._norm(block.ln_1),
                "norm_2": self._norm(block.ln_2),
                "moe": self._moe(block.mlp) if isinstance(block.mlp, MoE) else None,
            }
            for name, fused in modules[i].items():
                out = None if stacked is None else stacked[name][i]
                layer[name] = self._projection(fused, out)
            self.layers.append(layer)
        self.fused = None if stacked is None else _FusedStep(self, rotaries, stacked)
        shape = (len(self.layers), batch_size, self.Hkv, max_len, self.D)
        self.K = xp.zeros(shape, self.dtype)
        self.V = xp.zeros(shape, self.dtype)
        self.pos = 0

    def _array(self, t):
        """t's array on the decoder's device, in its dtype (a no-op for the model's own
        weights)."""
        return self.xp.asarray(t.data, dtype=self.dtype)

    def _projection(self, modules, out=None):
        """The linear layers ``modules`` (same input) as one callable: their weights fused
        into one GEMM, or, for quantized layers, their own forward. ``out``: the
        [in, out] array to write W^T into (a layer of the fused step's stack), else a new one;
        each weight is copied once, transposed as it is written."""
        if any(_is_quantized(m) for m in modules):
            return _Quantized(modules, self.dtype)
        weights = [self._array(m.weight) for m in modules]  # [out_i, in] each
        if out is None:
            shape = (weights[0].shape[1], sum(w.shape[0] for w in weights))
            out = self.xp.empty(shape, self.dtype)
        start = 0
        for w in weights:
            out[:, start : start + w.shape[0]] = w.T
            start += w.shape[0]
        b = None
        if modules[0].bias is not None:  # Llama: bias=True gives every projection one
            b = self.xp.concatenate([self._array(m.bias) for m in modules])
        return _Dense(out, b)

    def _norm(self, module):
        weight = None if module.weight is None else self._array(module.weight)
        bias = getattr(module, "bias", None)
        bias = None if bias is None else self._array(bias)
        prepared = None
        if self.kernels is not None and (weight is not None or bias is not None):
            prepared = _StepKernels.prepare_norm(
                weight, bias, module.eps, self.dtype, center=not self.llama
            )
        return (weight, bias, module.eps, prepared)

    def _swiglu(self, expert):
        """An ``Expert`` as (W13^T [C, 2F], W2^T [F, C]): gate and up fused in one GEMM."""
        xp = self.xp
        w13 = xp.concatenate([self._array(expert.w1.weight), self._array(expert.w3.weight)])
        return xp.ascontiguousarray(w13.T), xp.ascontiguousarray(self._array(expert.w2.weight).T)

    def _moe(self, mlp) -> dict:
        """An ``MoE`` layer's router, experts and shared experts as arrays."""
        gate = mlp.gate
        moe = {
            "router": mlp.router, "E": mlp.num_experts, "k": mlp.top_k,
            "normalize": getattr(gate, "normalize", True),
            "gate_wT": None if mlp.router == "hash" else self.xp.ascontiguousarray(
                self._array(gate.weight).T),
            "bias": None, "table": None,
            "experts": [self._swiglu(e) for e in mlp.experts],
            "shared": None if mlp.shared_experts is None else self._swiglu(mlp.shared_experts),
        }  # fmt: skip
        if mlp.router == "aux_free":  # selection only, in float64 as the router does
            moe["bias"] = self.xp.asarray(gate.e_score_correction_bias.data, dtype=np.float64)
        if mlp.router == "hash":
            moe["table"] = self.xp.asarray(gate.table.data)
        return moe

    def reset(self) -> None:
        self.pos = 0

    # ---------------------------------------------------------------- the pieces
    def _apply_norm(self, x, norm):
        """RMSNorm (Llama) or LayerNorm (GPT) through the norm kernels the module path runs:
        one call instead of ~7 array ops, which is what a batch-1 step is made of."""
        weight, bias, eps, prepared = norm
        if prepared is not None and _StepKernels.applies(x, self.dtype):
            return self.kernels.norm(x, prepared)
        if self.llama:
            return rms_norm_forward(x, weight, eps)[0]
        return layer_norm_forward(x, weight, bias, eps)[0]

    def _rope(self, qk, pos, rotary):
        """q and k heads [B, H + Hkv, D] rotated to position ``pos`` as the module does."""
        cos, sin = rotary.cos_sin(1, pos, qk)  # [1, D/2], the module's cached tables
        interleaved = rotary.layout == "interleaved"
        return rope_forward(qk[:, :, None, :], cos, sin, interleaved=interleaved)[:, :, 0, :]

    def _rope_block(self, qk, pos, rotary):
        """q and k heads [B, H + Hkv, T, D] rotated to positions pos .. pos + T - 1."""
        cos, sin = rotary.cos_sin(qk.shape[2], pos, qk)  # [T, D/2]
        return rope_forward(qk, cos, sin, interleaved=rotary.layout == "interleaved")

    def _expert(self, x, weights):
        """w2(silu(w1 x) * w3 x) for rows x [M, C]."""
        u = x @ weights[0]
        F = u.shape[-1] // 2
        gate, up = u[:, :F], u[:, F:]
        return (gate / (1.0 + self.xp.exp(-gate)) * up) @ weights[1]

    def _route(self, flat, tokens, moe):
        """(expert index [N, k], gates [N, k]) of the router at inference (see the module doc)."""
        xp = self.xp
        if moe["router"] == "hash":
            if tokens is None:
                raise ValueError("Decoder: a hash-routed MoE layer needs the token ids (_ffn's "
                                 "tokens)")  # fmt: skip
            idx = moe["table"][tokens.reshape(-1)][:, None].astype(np.int64)
            return idx, xp.ones(idx.shape, self.dtype)
        logits = flat @ moe["gate_wT"]  # [N, E]
        if moe["router"] == "aux_free":
            s = 1.0 / (1.0 + xp.exp(-logits))
            idx = topk_indices(s.astype(np.float64) + moe["bias"], moe["k"])
            chosen = xp.take_along_axis(s, idx, axis=1)
            return idx, chosen / chosen.sum(axis=1, keepdims=True)
        idx = topk_indices(logits, moe["k"])  # softmax is monotone: the logits' top-k
        chosen = xp.take_along_axis(logits, idx, axis=1)
        if moe["router"] == "softmax_topk" and not moe["normalize"]:  # softmax(l)[idx]
            m = logits.max(axis=1, keepdims=True)
            return idx, xp.exp(chosen - m) / xp.exp(logits - m).sum(axis=1, keepdims=True)
        g = xp.exp(chosen - chosen.max(axis=1, keepdims=True))  # softmax over the chosen:
        return idx, g / g.sum(axis=1, keepdims=True)  # = renormalized top-k probabilities

    def _moe_ffn(self, h, tokens, moe):
        """The MoE layer on h [..., C] (``tokens`` [...]: the ids, for hash routing).

        As the layer: slots sorted by expert (``expert_permutation``), one GEMM chain per
        expert on its contiguous rows, scattered back weighted by the gates."""
        shape = h.shape
        flat = h.reshape(-1, shape[-1])
        idx, gates = self._route(flat, tokens, moe)
        order, counts = expert_permutation(idx, moe["E"])
        token_index = order // idx.shape[1]
        rows = flat[token_index]
        outs, start = [], 0
        for e, n in enumerate(backend.to_numpy(counts).tolist()):  # one host read per layer
            if n:
                outs.append(self._expert(rows[start : start + n], moe["experts"][e]))
            start += n
        w = gates.reshape(-1)[order]
        y = _scatter_add_rows(token_index, w[:, None] * self.xp.concatenate(outs), flat.shape[0])
        if moe["shared"] is not None:
            y = y + self._expert(flat, moe["shared"])
        return y.reshape(shape)

    def _ffn(self, h, layer, tokens=None):
        if layer["moe"] is not None:
            return self._moe_ffn(h, tokens, layer["moe"])
        u = layer["up"](h)
        # silu(gate) * up of u = [gate | up] (Llama) or gelu-tanh(u) (GPT), by the kernels
        if self.kernels is not None and _StepKernels.applies(u, self.dtype):
            if self.llama:
                act = self.kernels.glu(u, ACTIVATIONS["silu"])
            else:
                act = self.kernels.activation(u, ACTIVATIONS["gelu_tanh"])
        else:
            act = swiglu_forward(u) if self.llama else activation_forward(u, "gelu_tanh")
        return layer["down"](act)

    # ---------------------------------------------------------------- one step
    def step(self, tokens):
        """Feed one token per sequence (int [B]); returns the next-token logits [B, V]."""
        pos = self.pos
        if pos >= self.max_len:
            raise ValueError(f"Decoder: the cache holds {self.max_len} tokens; reset() first")
        B, H, Hkv, D = self.B, self.H, self.Hkv, self.D
        G = H // Hkv
        tokens = self.xp.asarray(tokens)
        x = self.embed[tokens]  # [B, C]
        if self.wpe is not None:
            x = x + self.wpe[pos]
        if self.fused is not None and _StepKernels.applies(x, self.dtype):
            logits = self.fused(np.ascontiguousarray(x), pos, self.K, self.V)
            self.pos = pos + 1
            return logits
        scale = 1.0 / math.sqrt(D)
        for i, layer in enumerate(self.layers):
            h = self._apply_norm(x, layer["norm_1"])
            qkv = layer["qkv"](h)  # [B, (H + 2 Hkv) D]
            qk = qkv[:, : (H + Hkv) * D].reshape(B, H + Hkv, D)
            if layer["rotary"] is not None:
                qk = self._rope(qk, pos, layer["rotary"])
            q, k = qk[:, :H], qk[:, H:]
            v = qkv[:, (H + Hkv) * D :].reshape(B, Hkv, D)
            self.K[i, :, :, pos] = k
            self.V[i, :, :, pos] = v
            keys = self.K[i, :, :, : pos + 1]  # [B, Hkv, t, D]
            values = self.V[i, :, :, : pos + 1]
            qg = q.reshape(B, Hkv, G, D)
            s = (qg @ keys.swapaxes(-1, -2)) * scale  # [B, Hkv, G, t]
            s -= s.max(axis=-1, keepdims=True)
            p = self.xp.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            a = (p @ values).reshape(B, H * D)  # [B, C]
            o = layer["o"](a)
            x = x + o
            x = x + self._ffn(self._apply_norm(x, layer["norm_2"]), layer, tokens)
        self.pos = pos + 1
        return self.head(self._apply_norm(x, self.final))

    # ---------------------------------------------------------------- a whole prompt
    def prefill(self, tokens, all_logits: bool = False):
        """Feed T tokens per sequence (int [B, T]) in one forward; returns the logits [B, V]
        after the last one (what T calls of ``step`` return last, up to summation order), or
        with ``all_logits`` the logits after each of them [B, T, V] (speculative verification).

        Every layer runs on [B, T, C]; K and V of all T positions go into the cache at
        pos .. pos + T - 1, and query j attends to keys 0 .. pos + j. The last layer keeps
        only the last position after writing its K and V (no later position needs the rest).
        """
        xp = self.xp
        tokens = xp.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[0] != self.B or tokens.shape[1] == 0:
            raise ValueError(
                f"Decoder.prefill: tokens must be [{self.B}, T] with T >= 1, got "
                f"{tuple(tokens.shape)}"
            )
        pos, T = self.pos, int(tokens.shape[1])
        if pos + T > self.max_len:
            raise ValueError(
                f"Decoder: the cache holds {self.max_len} tokens; {pos} are used and {T} more "
                "do not fit; reset() first"
            )
        B, H, Hkv, D = self.B, self.H, self.Hkv, self.D
        G, end = H // Hkv, pos + T
        x = self.embed[tokens]  # [B, T, C]
        if self.wpe is not None:
            x = x + self.wpe[pos:end]
        scale = 1.0 / math.sqrt(D)
        q_pos = pos + xp.arange(T)  # absolute position of each query
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = self._apply_norm(x, layer["norm_1"])
            qkv = layer["qkv"](h)  # [B, T, (H + 2 Hkv) D]
            qk = qkv[..., : (H + Hkv) * D].reshape(B, T, H + Hkv, D).transpose(0, 2, 1, 3)
            if layer["rotary"] is not None:
                qk = self._rope_block(qk, pos, layer["rotary"])  # [B, H + Hkv, T, D]
            q, k = qk[:, :H], qk[:, H:]
            v = qkv[..., (H + Hkv) * D :].reshape(B, T, Hkv, D).transpose(0, 2, 1, 3)
            self.K[i, :, :, pos:end] = k
            self.V[i, :, :, pos:end] = v
            if i == last and not all_logits:  # only the last position's output is read
                q, x, q_pos, tokens = q[:, :, -1:], x[:, -1:], q_pos[-1:], tokens[:, -1:]
            Tq = q.shape[2]
            keys = self.K[i, :, :, None, :end]  # [B, Hkv, 1, t, D]
            values = self.V[i, :, :, None, :end]
            qg = q.reshape(B, Hkv, G, Tq, D)
            s = (qg @ keys.swapaxes(-1, -2)) * scale  # [B, Hkv, G, Tq, t]
            future = xp.arange(end)[None, :] > q_pos[:, None]  # [Tq, t]: keys after the query
            s = xp.where(future, s.dtype.type(-math.inf), s)
            s -= s.max(axis=-1, keepdims=True)
            p = xp.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            a = (p @ values).transpose(0, 3, 1, 2, 4).reshape(B, Tq, H * D)  # [B, Tq, C]
            o = layer["o"](a)
            x = x + o
            x = x + self._ffn(self._apply_norm(x, layer["norm_2"]), layer, tokens)
        self.pos = end
        if all_logits:
            return self.head(self._apply_norm(x, self.final))
        return self.head(self._apply_norm(x[:, -1], self.final))

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` cached positions (roll back rejected speculative tokens:
        later positions are overwritten by the next writes)."""
        if not 0 <= length <= self.pos:
            raise ValueError(f"Decoder.truncate: length must be in [0, {self.pos}], got {length}")
        self.pos = length

    def reorder(self, index) -> None:
        """Cache rows gathered by ``index`` [B] (beam search keeps the surviving beams)."""
        index = self.xp.asarray(index)
        self.K = self.K[:, index]
        self.V = self.V[:, index]
