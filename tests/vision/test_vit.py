"""ViT (models/vit.py): without positions the encoder is equivariant to permutations of the
image's patches (checked by permuting pixels, not tokens), and learned positions break it;
2-D sin-cos positions against their formula; the attention maps used for rollout are the
ones the blocks apply; rollout rows are distributions."""

import math

import numpy as np
import pytest

import tinyllm
from tinyllm.grad_mode import no_grad
from tinyllm.models.vit import VisionTransformer, attention_rollout, block_attention, sincos_2d


def _permute_patches(x, p, perm):
    """x [B, C, H, W] with its p x p patches (row-major grid) moved: new patch i = old perm[i]."""
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    g = x.reshape(B, C, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C, p, p)
    g = g[:, perm].reshape(B, gh, gw, C, p, p).transpose(0, 3, 1, 4, 2, 5)
    return g.reshape(B, C, H, W)


@pytest.mark.parametrize("pos, equivariant", [("none", True), ("learned", False)])
def test_patch_permutation_equivariance(pos, equivariant):
    tinyllm.manual_seed(0)
    m = VisionTransformer(8, 2, 1, 10, embed_dim=16, depth=2, num_heads=2, pos_embed=pos,
                          dtype="float64")  # fmt: skip
    if pos == "learned":  # make the table large enough to matter
        m.pos_embed.data[...] = np.random.default_rng(0).standard_normal(m.pos_embed.shape)
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8))
    perm = np.random.default_rng(2).permutation(16)
    with no_grad():
        h = m.forward_features(tinyllm.tensor(x)).numpy()
        hp = m.forward_features(tinyllm.tensor(_permute_patches(x, 2, perm))).numpy()
    # float64, the same sums in another token order: 1e-12
    same = np.allclose(hp[:, 1:], h[:, 1 + perm], rtol=0, atol=1e-12) and np.allclose(
        hp[:, 0], h[:, 0], rtol=0, atol=1e-12
    )
    assert same == equivariant


def test_sincos_2d_formula():
    D, gh, gw = 16, 3, 4
    t = sincos_2d(D, gh, gw)
    assert t.shape == (gh * gw, D)
    r, c, k = 2, 3, 1  # row 2, col 3, frequency 1 of 4
    w = 10000 ** (-k / 4)
    i = r * gw + c
    assert t[i, k] == pytest.approx(math.sin(r * w))
    assert t[i, 4 + k] == pytest.approx(math.cos(r * w))
    assert t[i, 8 + k] == pytest.approx(math.sin(c * w))
    assert t[i, 12 + k] == pytest.approx(math.cos(c * w))
    assert len({tuple(np.round(row, 9)) for row in t}) == gh * gw  # all positions distinct


def test_attention_maps_are_what_the_blocks_apply_and_rollout_is_a_distribution():
    tinyllm.manual_seed(1)
    m = VisionTransformer(8, 2, 1, 10, embed_dim=16, depth=2, num_heads=4, pos_embed="sincos",
                          dtype="float64")  # fmt: skip
    x = tinyllm.tensor(np.random.default_rng(3).standard_normal((2, 1, 8, 8)))
    with no_grad():
        t = m.embed(x)
        blk = m.blocks[0]
        h = blk.ln_1(t)
        P = block_attention(blk, h)  # [B, H, T, T]
        a = blk.attn
        B, T, _ = h.shape
        v = a.v_proj(h).numpy().reshape(B, T, 4, 4).transpose(0, 2, 1, 3)
        o = (P @ v).transpose(0, 2, 1, 3).reshape(B, T, 16)
        W, b = a.o_proj.weight.detach().numpy(), a.o_proj.bias.detach().numpy()
        np.testing.assert_allclose(o @ W.T + b, a(h).numpy(), rtol=0, atol=1e-12)
    maps = m.attention_maps(x)
    assert len(maps) == 2 and maps[0].shape == (2, 17, 17)
    np.testing.assert_allclose(maps[1].sum(-1), 1.0, atol=1e-12)
    roll = attention_rollout(maps)
    assert roll.shape == (2, 16) and np.all(roll > 0) and np.all(roll.sum(-1) < 1)
