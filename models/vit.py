"""Vision Transformer (Dosovitskiy et al. 2021; timm's ``VisionTransformer`` names).

    tokens = PatchEmbed(x)                                   [B, L, D], L = (H/p)(W/p)
    tokens = [cls_token; tokens] + pos_embed                 [B, 1 + L, D]
    h      = blocks(tokens)     pre-LN TransformerBlocks, bidirectional (causal=False)
    logits = head(norm(h)[:, 0])   (global_pool="token")  or  head(mean_i norm(h)[:, 1:])

Positions (``pos_embed``): "learned" (a table [1 + L, D], N(0, 0.02^2)), "sincos" (fixed
2-D sin-cos of MAE / timm: the first D/2 channels encode the grid row, the last D/2 the
column, each as [sin(pos w_k), cos(pos w_k)], w_k = 10000^(-k / (D/4)); the class token
gets zeros) or "none". Without positions every block is equivariant to a permutation of
the patch tokens (attention and the MLP treat tokens as a set), which a test checks.

Attention rollout (Abnar & Zuidema 2020): with A_l the head-averaged attention of block
l, R = prod_l (0.5 A_l + 0.5 I) (rows renormalized) from the last block down; row 0 of
R over the L patch tokens is the class token's map, reshaped to the patch grid.
"""

from __future__ import annotations

import math

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm import backend
from tinyllm.grad_mode import no_grad
from tinyllm.nn import init
from tinyllm.nn.containers import ModuleList
from tinyllm.nn.conv import PatchEmbed
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module
from tinyllm.nn.normalization import LayerNorm
from tinyllm.nn.parameter import Parameter
from tinyllm.nn.transformer import TransformerBlock

__all__ = ["VisionTransformer", "attention_rollout", "sincos_2d"]


def sincos_2d(embed_dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2-D sin-cos positions [grid_h grid_w, embed_dim] (module docstring; D % 4 = 0)."""
    if embed_dim % 4:
        raise ValueError(f"sincos_2d: embed_dim must be divisible by 4, got {embed_dim}")
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / quarter)

    def one_d(pos):  # [n] -> [n, D/2]
        ang = pos[:, None] * omega[None]
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    return np.concatenate([one_d(rows.ravel()), one_d(cols.ravel())], axis=1)


class VisionTransformer(Module):
    """ViT classifier. forward(x [B, C, H, W]) -> logits [B, num_classes];
    ``forward_features`` -> normed tokens [B, 1 + L, D] (or [B, L, D] without class token)."""

    def __init__(
        self, img_size=8, patch_size=2, in_chans: int = 1, num_classes: int = 10,
        embed_dim: int = 32, depth: int = 2, num_heads: int = 4, mlp_ratio: float = 2.0,
        pos_embed: str = "learned", class_token: bool = True, global_pool: str = "token",
        dtype=None,
    ) -> None:  # fmt: skip
        super().__init__()
        if pos_embed not in ("learned", "sincos", "none"):
            raise ValueError(f"VisionTransformer: pos_embed must be learned|sincos|none, got "
                             f"{pos_embed!r}")  # fmt: skip
        if global_pool not in ("token", "avg") or (global_pool == "token" and not class_token):
            raise ValueError("VisionTransformer: global_pool must be 'token' (needs the class "
                             f"token) or 'avg', got {global_pool!r}")  # fmt: skip
        kw = {"dtype": dtype}
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, **kw)
        L = self.patch_embed.num_patches
        self.num_prefix = 1 if class_token else 0
        self.pos_kind, self.global_pool = pos_embed, global_pool
        dt = backend.as_dtype(dtype)
        self.cls_token = (Parameter(np.zeros((1, 1, embed_dim), dtype=dt))
                          if class_token else None)  # fmt: skip
        self.pos_embed = None
        if pos_embed == "learned":
            self.pos_embed = Parameter(np.zeros((1, self.num_prefix + L, embed_dim), dtype=dt))
            init.trunc_normal_(self.pos_embed, std=0.02)
        elif pos_embed == "sincos":
            table = sincos_2d(embed_dim, *self.patch_embed.grid_size)
            table = np.concatenate([np.zeros((self.num_prefix, embed_dim)), table])[None]
            self.register_buffer("pos_table", tinyllm.tensor(table.astype(dt)))
        if self.cls_token is not None:
            init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = ModuleList([
            TransformerBlock(embed_dim, num_heads, d_ff=int(embed_dim * mlp_ratio), bias=True,
                             causal=False, norm="layernorm", norm_placement="pre", **kw)
            for _ in range(depth)
        ])  # fmt: skip
        self.norm = LayerNorm(embed_dim, **kw)
        self.head = Linear(embed_dim, num_classes, **kw)

    def embed(self, x):
        t = self.patch_embed(x)  # [B, L, D]
        if self.cls_token is not None:
            t = F.cat([self.cls_token.expand(t.shape[0], 1, t.shape[2]), t], dim=1)
        if self.pos_kind == "learned":
            t = t + self.pos_embed
        elif self.pos_kind == "sincos":
            t = t + self.pos_table
        return t

    def forward_tokens(self, t):
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)

    def forward_features(self, x):
        return self.forward_tokens(self.embed(x))

    def pool(self, h):
        return h[:, 0] if self.global_pool == "token" else h[:, self.num_prefix :].mean(dim=1)

    def forward(self, x):
        return self.head(self.pool(self.forward_features(x)))

    def attention_maps(self, x) -> list[np.ndarray]:
        """The head-averaged attention probabilities of each block, [B, T, T] each (no grad).

        Recomputed from each block's q_proj / k_proj on ln_1 of its input (the same
        softmax(q k^T / sqrt(d)) the block applies; tests/vision/test_vit.py checks that
        P v o_proj reproduces the block's attention output)."""
        maps = []
        with no_grad():
            t = self.embed(x)
            for blk in self.blocks:
                maps.append(block_attention(blk, blk.ln_1(t)).mean(axis=1))
                t = blk(t)
        return maps


def block_attention(blk: TransformerBlock, h) -> np.ndarray:
    """softmax(q k^T / sqrt(d)) [B, H, T, T] of ``blk.attn`` on the normed input h."""
    a = blk.attn
    B, T, _ = h.shape
    H, D = a.n_heads, a.head_dim
    q = a.q_proj(h).detach().numpy().reshape(B, T, H, D).transpose(0, 2, 1, 3)
    k = a.k_proj(h).detach().numpy().reshape(B, T, H, D).transpose(0, 2, 1, 3)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(axis=-1, keepdims=True)


def attention_rollout(maps: list[np.ndarray], num_prefix: int = 1) -> np.ndarray:
    """Rollout R = prod (0.5 A + 0.5 I) over blocks; returns the class token's row over the
    patch tokens, [B, L] (each row sums to <= 1)."""
    B, T, _ = maps[0].shape
    R = np.broadcast_to(np.eye(T), (B, T, T)).copy()
    for A in maps:
        A = 0.5 * A + 0.5 * np.eye(T)
        A = A / A.sum(axis=-1, keepdims=True)
        R = A @ R
    return R[:, 0, num_prefix:]
