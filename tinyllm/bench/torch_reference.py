"""The same GPT/Llama in plain PyTorch eager, for ``tinyllm bench ... --compare torch``.

PyTorch is optional and never a dependency: everything here imports it lazily. Parameter
names equal tinyllm's, so tinyllm's initial weights load key for key (``load_from``), and
the first step's loss and gradients can be compared before anything is timed.
"""

from __future__ import annotations

import numpy as np


def build_torch_model(config):
    """A torch.nn.Module with tinyllm's architecture and parameter names for ``config``."""
    import torch
    import torch.nn.functional as TF
    from torch import nn

    C, H, Hkv = config.d_model, config.n_head, config.n_kv_head
    D = C // H
    llama = config.arch == "llama"

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(C))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config.norm_eps) * self.weight

    def norm():
        return RMSNorm() if llama else nn.LayerNorm(C, eps=config.norm_eps, bias=config.bias)

    inv_freq = config.rope_base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)

    def rope(x, offset):  # x [B, h, T, D], half-split layout
        T = x.shape[-2]
        angles = torch.arange(offset, offset + T, dtype=torch.float64)[:, None] * inv_freq
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        a, b = x[..., : D // 2], x[..., D // 2 :]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(C, H * D, bias=config.bias)
            self.k_proj = nn.Linear(C, Hkv * D, bias=config.bias)
            self.v_proj = nn.Linear(C, Hkv * D, bias=config.bias)
            self.o_proj = nn.Linear(H * D, C, bias=config.bias)

        def forward(self, x, cache=None):
            B, T, _ = x.shape
            q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)
            k = self.k_proj(x).view(B, T, Hkv, D).transpose(1, 2)
            v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)
            past = 0 if cache is None or cache.get("k") is None else cache["k"].shape[-2]
            if llama:
                q, k = rope(q, past), rope(k, past)
            if cache is not None:
                if past:
                    k = torch.cat([cache["k"], k], dim=-2)
                    v = torch.cat([cache["v"], v], dim=-2)
                cache["k"], cache["v"] = k, v
            o = TF.scaled_dot_product_attention(q, k, v, is_causal=past == 0, enable_gqa=Hkv != H)
            return self.o_proj(o.transpose(1, 2).reshape(B, T, C))

    class FeedForward(nn.Module):
        def __init__(self):
            super().__init__()
            F_ = config.ffn_hidden
            if llama:
                self.gate_up_proj = nn.Linear(C, 2 * F_, bias=False)
                self.down_proj = nn.Linear(F_, C, bias=False)
            else:
                self.c_fc = nn.Linear(C, F_, bias=config.bias)
                self.c_proj = nn.Linear(F_, C, bias=config.bias)

        def forward(self, x):
            if llama:
                gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
                return self.down_proj(TF.silu(gate) * up)
            return self.c_proj(TF.gelu(self.c_fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = norm(), Attention(), norm(), FeedForward()

        def forward(self, x, cache=None):
            x = x + self.attn(self.ln_1(x), cache)
            return x + self.mlp(self.ln_2(x))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = nn.ModuleList(Block() for _ in range(config.n_layer))
            embed = nn.Embedding(config.vocab_size, C)
            if llama:
                self.model = nn.ModuleDict(
                    {"embed_tokens": embed, "layers": blocks, "norm": norm()}
                )
            else:
                positions = nn.Embedding(config.block_size, C)
                self.transformer = nn.ModuleDict(
                    {"wte": embed, "wpe": positions, "h": blocks, "ln_f": norm()}
                )
            self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
            if config.tie_embeddings:
                self.lm_head.weight = embed.weight

        def forward(self, idx, caches=None):
            if llama:
                x = self.model["embed_tokens"](idx)
                blocks, final = self.model["layers"], self.model["norm"]
            else:
                past = 0 if not caches or caches[0].get("k") is None else caches[0]["k"].shape[-2]
                pos = torch.arange(past, past + idx.shape[1])
                x = self.transformer["wte"](idx) + self.transformer["wpe"](pos)
                blocks, final = self.transformer["h"], self.transformer["ln_f"]
            for i, block in enumerate(blocks):
                x = block(x, caches[i] if caches else None)
            return self.lm_head(final(x))

    return LM()


def load_from(torch_model, tinyllm_model) -> None:
    """Copy tinyllm's parameters into the torch model, key for key (shapes checked)."""
    import torch

    ours = {k: np.asarray(v.data) for k, v in tinyllm_model.state_dict().items()}
    theirs = torch_model.state_dict()
    missing = sorted(set(theirs) - set(ours))
    if missing:
        raise KeyError(f"torch reference has parameters tinyllm lacks: {missing}")
    with torch.no_grad():
        for name, tensor in theirs.items():
            if tuple(tensor.shape) != ours[name].shape:
                raise ValueError(
                    f"{name}: torch {tuple(tensor.shape)} vs tinyllm {ours[name].shape}"
                )
            tensor.copy_(torch.from_numpy(ours[name].copy()))


def compare_first_step(torch_model, tinyllm_model, x: np.ndarray, y: np.ndarray) -> dict:
    """Loss and gradients of one step in both frameworks: the worst relative differences."""
    import torch
    import torch.nn.functional as TF

    import tinyllm
    import tinyllm.functional as F

    logits = tinyllm_model(tinyllm.tensor(x))
    V = logits.shape[-1]
    loss = F.cross_entropy(logits.reshape(-1, V), tinyllm.tensor(y.reshape(-1)))
    tinyllm_model.zero_grad()
    loss.backward()
    t_logits = torch_model(torch.from_numpy(x))
    t_loss = TF.cross_entropy(t_logits.reshape(-1, V), torch.from_numpy(y.reshape(-1)))
    torch_model.zero_grad()
    t_loss.backward()
    # relative L2 error per parameter; a gradient that is exactly 0 in exact arithmetic (the
    # key bias: softmax is shift-invariant along a row) is compared against 1e-3 of the median
    # gradient norm instead of its own rounding-noise-sized norm
    t_params = dict(torch_model.named_parameters())
    pairs = [
        (n, p.grad.data, t_params[n].grad.numpy()) for n, p in tinyllm_model.named_parameters()
    ]
    floor = 1e-3 * float(np.median([np.linalg.norm(tg) for _, _, tg in pairs]))
    worst, worst_name = 0.0, ""
    for name, g, tg in pairs:
        rel = float(np.linalg.norm(g - tg) / max(np.linalg.norm(tg), floor))
        if rel > worst:
            worst, worst_name = rel, name
    loss_rel = abs(loss.item() - t_loss.item()) / abs(t_loss.item())
    tinyllm_model.zero_grad()
    return {"loss_rel_diff": loss_rel, "worst_grad_rel_l2": worst, "worst_grad_param": worst_name,
            "agree_1e-4": loss_rel < 1e-4 and worst < 1e-4}  # fmt: skip


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
