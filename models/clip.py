"""CLIP (Radford et al. 2021; open_clip's names): an image tower, a text tower, and the
symmetric InfoNCE loss with a learned temperature.

    u_i = normalize(image_tower(x_i)),  v_j = normalize(text_tower(t_j))     unit [B, E]
    s   = min(exp(logit_scale), 100)     logit_scale initialized to log(1 / 0.07)
    Z   = s U V^T                                                         [B, B]
    loss = (CE(Z, diag) + CE(Z^T, diag)) / 2       (CE: mean cross-entropy, row i's class i)

Closed form: for perfectly aligned orthonormal pairs (u_i = v_i, u_i . u_j = 0 for i != j)
Z = s I and each row's loss is log(1 + (B - 1) e^{-s}); tests/vision/test_clip.py checks it.
The clamp at 100 is open_clip's ``logit_scale.exp().clamp(max=100)``: above it the scale
gets no gradient.

Zero-shot classification: embed one prompt per class (averaged over templates), predict
argmax_c u . v_c. Retrieval recall@k (image -> text): a hit when one of the k captions
most similar to image i describes i's digit (class-level: captions of the same digit are
interchangeable, since they differ only in template).
"""

from __future__ import annotations

import math

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.models.vit import VisionTransformer
from tinyllm.nn.containers import ModuleList
from tinyllm.nn.layers import Embedding, Linear
from tinyllm.nn.module import Module
from tinyllm.nn.normalization import LayerNorm
from tinyllm.nn.parameter import Parameter
from tinyllm.nn.transformer import TransformerBlock

__all__ = ["CLIP", "TextTower", "clip_loss", "recall_at_k", "zero_shot_predict"]


def clip_loss(image_emb, text_emb, logit_scale, max_scale: float = 100.0):
    """Symmetric InfoNCE (module docstring) of unnormalized embeddings [B, E] each;
    ``logit_scale`` a 0-d or [1] tensor (the log of the inverse temperature)."""
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(f"clip_loss: image {tuple(image_emb.shape)} and text "
                         f"{tuple(text_emb.shape)} must both be [B, E]")  # fmt: skip
    u = image_emb / (image_emb * image_emb).sum(dim=-1, keepdim=True).sqrt()
    v = text_emb / (text_emb * text_emb).sum(dim=-1, keepdim=True).sqrt()
    s = F.clamp(logit_scale.exp(), max=max_scale)
    Z = s * (u @ v.transpose(0, 1))
    target = tinyllm.arange(Z.shape[0])
    return (F.cross_entropy(Z, target) + F.cross_entropy(Z.transpose(0, 1), target)) / 2


class TextTower(Module):
    """Word embeddings + learned positions + bidirectional pre-LN blocks + LayerNorm, mean
    over real tokens, projected to ``embed_dim``. forward(ids [B, T], mask [B, T])."""

    def __init__(self, vocab_size: int, width: int = 32, depth: int = 2, heads: int = 4,
                 max_len: int = 12, embed_dim: int = 32, dtype=None) -> None:  # fmt: skip
        super().__init__()
        kw = {"dtype": dtype}
        self.tok = Embedding(vocab_size, width, **kw)
        self.pos = Embedding(max_len, width, **kw)
        self.blocks = ModuleList([
            TransformerBlock(width, heads, d_ff=2 * width, bias=True, causal=False, **kw)
            for _ in range(depth)
        ])  # fmt: skip
        self.ln = LayerNorm(width, **kw)
        self.proj = Linear(width, embed_dim, bias=False, **kw)

    def forward(self, ids, mask):
        T = ids.shape[1]
        h = self.tok(ids) + self.pos(tinyllm.arange(T))
        for blk in self.blocks:
            h = blk(h)
        h = self.ln(h)
        m = tinyllm.tensor(np.asarray(mask, dtype=np.dtype(str(h.dtype)))[..., None])
        return self.proj((h * m).sum(dim=1) / m.sum(dim=1))


class CLIP(Module):
    """``visual`` (a ViT whose head projects to embed_dim) and ``text`` (``TextTower``);
    ``logit_scale`` initialized to log(1 / 0.07)."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, width: int = 32, depth: int = 2,
                 heads: int = 4, max_len: int = 12, dtype=None) -> None:  # fmt: skip
        super().__init__()
        self.visual = VisionTransformer(8, 2, 1, embed_dim, width, depth, heads,
                                        pos_embed="learned", dtype=dtype)  # fmt: skip
        self.text = TextTower(vocab_size, width, depth, heads, max_len, embed_dim, dtype)
        dt = tinyllm.backend.as_dtype(dtype)
        self.logit_scale = Parameter(np.array(math.log(1 / 0.07), dtype=dt))

    def encode_image(self, x):
        return self.visual(x)

    def encode_text(self, ids, mask):
        return self.text(ids, mask)

    def forward(self, x, ids, mask):
        return clip_loss(self.encode_image(x), self.encode_text(ids, mask), self.logit_scale)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def zero_shot_predict(image_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """argmax_c cos(image_i, class_c); class_emb [C, E] (e.g. averaged over templates)."""
    return (_unit(image_emb) @ _unit(class_emb).T).argmax(axis=1)


def recall_at_k(image_emb, text_emb, image_labels, text_labels, ks=(1, 5)) -> dict[int, float]:
    """Image -> text recall@k, class-level (module docstring): the fraction of images with
    a caption of their own digit among the k most similar captions (ties: lower index)."""
    sim = _unit(np.asarray(image_emb)) @ _unit(np.asarray(text_emb)).T
    order = np.argsort(-sim, axis=1, kind="stable")
    hit = np.asarray(text_labels)[order] == np.asarray(image_labels)[:, None]
    return {k: float(hit[:, :k].any(axis=1).mean()) for k in ks}
