"""Connecting images to a language model: projectors and Flamingo-style gated cross-attention.

Projectors map visual tokens V [B, N, Dv] to the LM's width C:

    LinearProjector       P(V) = V W^T + b                                    [B, N, C]
    MLPProjector (LLaVA-1.5)  P(V) = W2 gelu(W1 V + b1) + b2                   [B, N, C]
    PerceiverResampler (Flamingo)  R learned latents [n, C] attend to [V W_in; R]:
        R <- R + xattn(LN(R), LN([V'; R]));  R <- R + MLP(LN(R))   (depth times)  [B, n, C]

GatedCrossAttention (Alayrac et al. 2022), inserted before each LM block:

    x <- x + tanh(alpha_attn) * xattn(LN(x), visual)
    x <- x + tanh(alpha_ff)   * MLP(LN(x))          alpha_attn = alpha_ff = 0 at init

so at initialization the LM computes exactly what it computed without the images (tests:
outputs unchanged, independent of the image; the gates still receive gradient since
tanh'(0) = 1).

``Captioner``: a frozen-able ViT encoder (its patch tokens), a projector, and a small
causal LM (token + learned positions, pre-LN ``TransformerBlock``s) with a gated
cross-attention layer before each block; trained with next-word cross-entropy on captions.
Cross-attention is ``models.encoder_decoder.CrossAttention`` (no mask here).
"""

from __future__ import annotations

import math

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.grad_mode import no_grad
from tinyllm.models.encoder_decoder import CrossAttention  # re-exported: the one shared class
from tinyllm.models.vit import VisionTransformer
from tinyllm.nn import init
from tinyllm.nn.containers import ModuleList
from tinyllm.nn.feedforward import MLP
from tinyllm.nn.layers import GELU, Embedding, Linear
from tinyllm.nn.module import Module
from tinyllm.nn.normalization import LayerNorm
from tinyllm.nn.parameter import Parameter
from tinyllm.nn.transformer import TransformerBlock

__all__ = [
    "Captioner", "CrossAttention", "GatedCrossAttention", "LinearProjector", "MLPProjector",
    "PerceiverResampler", "make_projector",
]  # fmt: skip


class LinearProjector(Module):
    def __init__(self, vis_dim: int, lm_dim: int) -> None:
        super().__init__()
        self.proj = Linear(vis_dim, lm_dim)

    def forward(self, v):
        return self.proj(v)


class MLPProjector(Module):
    """LLaVA-1.5's two-layer projector: Linear, GELU, Linear."""

    def __init__(self, vis_dim: int, lm_dim: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = Linear(vis_dim, lm_dim), GELU(), Linear(lm_dim, lm_dim)

    def forward(self, v):
        return self.fc2(self.act(self.fc1(v)))


class PerceiverResampler(Module):
    """Flamingo's resampler: ``num_latents`` learned queries read the visual tokens."""

    def __init__(self, vis_dim: int, lm_dim: int, num_latents: int = 4, depth: int = 1,
                 heads: int = 4) -> None:  # fmt: skip
        super().__init__()
        self.inp = Linear(vis_dim, lm_dim)
        self.latents = Parameter(np.zeros((1, num_latents, lm_dim), dtype=np.float32))
        init.trunc_normal_(self.latents, std=0.02)
        self.ln_ctx = ModuleList([LayerNorm(lm_dim) for _ in range(depth)])
        self.ln_q = ModuleList([LayerNorm(lm_dim) for _ in range(depth)])
        self.attn = ModuleList([CrossAttention(lm_dim, heads) for _ in range(depth)])
        self.ln_ff = ModuleList([LayerNorm(lm_dim) for _ in range(depth)])
        self.ff = ModuleList([MLP(lm_dim, 2 * lm_dim) for _ in range(depth)])

    def forward(self, v):
        v = self.inp(v)
        r = self.latents.expand(v.shape[0], *self.latents.shape[1:])
        for ln_c, ln_q, attn, ln_f, ff in zip(self.ln_ctx, self.ln_q, self.attn, self.ln_ff,
                                              self.ff):  # fmt: skip
            r = r + attn(ln_q(r), ln_c(F.cat([v, r], dim=1)))
            r = r + ff(ln_f(r))
        return r


def make_projector(kind: str, vis_dim: int, lm_dim: int) -> Module:
    """ "linear" | "mlp" | "perceiver"."""
    if kind == "linear":
        return LinearProjector(vis_dim, lm_dim)
    if kind == "mlp":
        return MLPProjector(vis_dim, lm_dim)
    if kind == "perceiver":
        return PerceiverResampler(vis_dim, lm_dim)
    raise ValueError(f"make_projector: kind must be linear|mlp|perceiver, got {kind!r}")


class GatedCrossAttention(Module):
    """Flamingo's GATED XATTN-DENSE layer (module docstring); gates start at 0."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_attn, self.ln_ff = LayerNorm(dim), LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.ff = MLP(dim, 2 * dim)
        self.alpha_attn = Parameter(np.zeros((), dtype=np.float32))
        self.alpha_ff = Parameter(np.zeros((), dtype=np.float32))

    def forward(self, x, visual):
        x = x + self.alpha_attn.tanh() * self.attn(self.ln_attn(x), visual)
        return x + self.alpha_ff.tanh() * self.ff(self.ln_ff(x))


class Captioner(Module):
    """ViT encoder -> projector -> gated cross-attention into a small causal LM.

    forward(images [B, 1, 8, 8], ids [B, T]) -> logits [B, T, vocab];
    ``lm_only(ids)`` runs the LM without any image path (the gate-0 reference)."""

    def __init__(self, vocab_size: int, projector: str = "mlp", dim: int = 32,
                 depth: int = 2, heads: int = 4, max_len: int = 12,
                 vit: VisionTransformer | None = None) -> None:  # fmt: skip
        super().__init__()
        self.vit = vit if vit is not None else VisionTransformer(8, 2, 1, 10, dim, 2, heads)
        vis_dim = self.vit.head.in_features
        self.projector = make_projector(projector, vis_dim, dim)
        self.tok, self.pos = Embedding(vocab_size, dim), Embedding(max_len, dim)
        self.xattn = ModuleList([GatedCrossAttention(dim, heads) for _ in range(depth)])
        self.blocks = ModuleList([TransformerBlock(dim, heads, d_ff=2 * dim, bias=True,
                                                   causal=True) for _ in range(depth)])  # fmt: skip
        self.ln_f = LayerNorm(dim)
        self.lm_head = Linear(dim, vocab_size, bias=False)

    def visual_tokens(self, images):
        return self.projector(self.vit.forward_features(images))  # [B, 1 + L or n, C]

    def _embed(self, ids):
        return self.tok(ids) + self.pos(tinyllm.arange(ids.shape[1]))

    def forward(self, images, ids):
        vis = self.visual_tokens(images)
        h = self._embed(ids)
        for xa, blk in zip(self.xattn, self.blocks):
            h = blk(xa(h, vis))
        return self.lm_head(self.ln_f(h))

    def lm_only(self, ids):
        h = self._embed(ids)
        for blk in self.blocks:
            h = blk(h)
        return self.lm_head(self.ln_f(h))

    def generate(self, images, bos: int, max_new: int, eos: int | None = None) -> np.ndarray:
        """Greedy decoding from <bos>: ids [B, 1 + max_new] (no KV cache: tiny captions)."""
        with no_grad():
            vis = self.visual_tokens(images)
            ids = np.full((images.shape[0], 1), bos, dtype=np.int64)
            for _ in range(max_new):
                h = self._embed(tinyllm.tensor(ids))
                for xa, blk in zip(self.xattn, self.blocks):
                    h = blk(xa(h, vis))
                nxt = self.lm_head(self.ln_f(h[:, -1])).numpy().argmax(-1)
                ids = np.concatenate([ids, nxt[:, None]], axis=1)
        return ids


def gate_values(model: Captioner) -> list[tuple[float, float]]:
    """(tanh alpha_attn, tanh alpha_ff) of each layer."""
    return [(math.tanh(x.alpha_attn.item()), math.tanh(x.alpha_ff.item())) for x in model.xattn]
