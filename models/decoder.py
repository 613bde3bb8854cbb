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

It computes exactly what the module path computes (the tests compare the tokens and the
logits with ``model(idx)``), in the model's dtype. ``LanguageModel.generate`` uses it.
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm import backend


def _array(t):
    return t.data  # NumPy or CuPy: the decoder runs where the weights are


class Decoder:
    """Token-by-token inference for a ``GPT`` or ``Llama`` built from ``tinyllm.models``."""

    def __init__(self, model, batch_size: int, max_len: int) -> None:
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
        self.final = self._norm(final)
        self.head_wT = xp.ascontiguousarray(_array(model.lm_head.weight).T)
        self.layers = []
        for block in blocks:
            attn, mlp = block.attn, block.mlp
            qkv_w = xp.concatenate([_array(attn.q_proj.weight), _array(attn.k_proj.weight),
                                    _array(attn.v_proj.weight)])  # fmt: skip
            qkv_b = None
            if attn.q_proj.bias is not None:
                qkv_b = xp.concatenate([_array(attn.q_proj.bias), _array(attn.k_proj.bias),
                                        _array(attn.v_proj.bias)])  # fmt: skip
            layer = {
                "norm_1": self._norm(block.ln_1),
                "norm_2": self._norm(block.ln_2),
                "qkv_wT": xp.ascontiguousarray(qkv_w.T),
                "qkv_b": qkv_b,
                "o_wT": xp.ascontiguousarray(_array(attn.o_proj.weight).T),
                "o_b": None if attn.o_proj.bias is None else _array(attn.o_proj.bias),
            }
            if self.llama:
                layer["up_wT"] = xp.ascontiguousarray(_array(mlp.gate_up_proj.weight).T)
                layer["down_wT"] = xp.ascontiguousarray(_array(mlp.down_proj.weight).T)
                layer["up_b"] = layer["down_b"] = None
            else:
                layer["up_wT"] = xp.ascontiguousarray(_array(mlp.c_fc.weight).T)
                layer["down_wT"] = xp.ascontiguousarray(_array(mlp.c_proj.weight).T)
                layer["up_b"] = None if mlp.c_fc.bias is None else _array(mlp.c_fc.bias)
                layer["down_b"] = None if mlp.c_proj.bias is None else _array(mlp.c_proj.bias)
            self.layers.append(layer)
        shape = (len(self.layers), batch_size, self.Hkv, max_len, self.D)
        self.K = xp.zeros(shape, self.dtype)
        self.V = xp.zeros(shape, self.dtype)
        if self.llama:
            inv_freq = cfg.rope_base ** (-np.arange(0, self.D, 2, dtype=np.float64) / self.D)
            angles = np.arange(max_len, dtype=np.float64)[:, None] * inv_freq  # [T_max, D/2]
            self.cos = xp.asarray(np.cos(angles), dtype=self.dtype)
            self.sin = xp.asarray(np.sin(angles), dtype=self.dtype)
        self.pos = 0

    def _norm(self, module):
        weight = None if module.weight is None else _array(module.weight)
        bias = getattr(module, "bias", None)
        return (weight, None if bias is None else _array(bias), module.eps)

    def reset(self) -> None:
        self.pos = 0

    # ---------------------------------------------------------------- the pieces
    def _apply_norm(self, x, norm):
        weight, bias, eps = norm
        xp = self.xp
        if self.llama:
            y = x * (1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps))
        else:
            c = x - x.mean(axis=-1, keepdims=True)
            y = c * (1.0 / xp.sqrt((c * c).mean(axis=-1, keepdims=True) + eps))
        if weight is not None:
            y *= weight
        if bias is not None:
            y += bias
        return y

    def _rope(self, x, pos):  # x [B, h, D], half-split pairs (i, i + D/2)
        half = self.D // 2
        cos, sin = self.cos[pos], self.sin[pos]
        a, b = x[..., :half], x[..., half:]
        return self.xp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    def _ffn(self, h, layer):
        u = h @ layer["up_wT"]
        if layer["up_b"] is not None:
            u += layer["up_b"]
        if self.llama:
            F = u.shape[-1] // 2
            gate, up = u[:, :F], u[:, F:]
            act = gate / (1.0 + self.xp.exp(-gate)) * up  # silu(gate) * up
        else:
            c = math.sqrt(2.0 / math.pi)
            act = 0.5 * u * (1.0 + self.xp.tanh(c * (u + 0.044715 * u * u * u)))  # gelu (tanh)
        out = act @ layer["down_wT"]
        if layer["down_b"] is not None:
            out += layer["down_b"]
        return out

    # ---------------------------------------------------------------- one step
    def step(self, tokens):
        """Feed one token per sequence (int [B]); returns the next-token logits [B, V]."""
        pos = self.pos
        if pos >= self.max_len:
            raise ValueError(f"Decoder: the cache holds {self.max_len} tokens; reset() first")
        B, H, Hkv, D = self.B, self.H, self.Hkv, self.D
        G = H // Hkv
        x = self.embed[tokens]  # [B, C]
        if self.wpe is not None:
            x = x + self.wpe[pos]
        scale = 1.0 / math.sqrt(D)
        for i, layer in enumerate(self.layers):
            h = self._apply_norm(x, layer["norm_1"])
            qkv = h @ layer["qkv_wT"]  # [B, (H + 2 Hkv) D]
            if layer["qkv_b"] is not None:
                qkv += layer["qkv_b"]
            q = qkv[:, : H * D].reshape(B, H, D)
            k = qkv[:, H * D : (H + Hkv) * D].reshape(B, Hkv, D)
            v = qkv[:, (H + Hkv) * D :].reshape(B, Hkv, D)
            if self.llama:
                q, k = self._rope(q, pos), self._rope(k, pos)
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
            o = a @ layer["o_wT"]
            if layer["o_b"] is not None:
                o += layer["o_b"]
            x = x + o
            x = x + self._ffn(self._apply_norm(x, layer["norm_2"]), layer)
        self.pos = pos + 1
        return self._apply_norm(x, self.final) @ self.head_wT
