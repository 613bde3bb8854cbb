"""CLIP (models/clip.py): the loss on perfectly aligned unit embeddings equals its closed
form log(1 + (B - 1) e^{-s}); the scale is clamped at 100 (and then gets no gradient); the
loss is symmetric and scale-invariant in the embeddings; recall@k and zero-shot on hand
cases; the digits data and captions."""

import math

import numpy as np
import pytest

import tinyllm
from tinyllm.models.clip import CLIP, clip_loss, recall_at_k, zero_shot_predict
from tinyllm.vision.data import DIGIT_WORDS, TEMPLATES, Vocab, caption, random_shift


def _t(a, grad=False):
    return tinyllm.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


@pytest.mark.parametrize("B, E, log_s", [(4, 6, math.log(1 / 0.07)), (5, 5, 1.3), (2, 3, 0.0)])
def test_loss_of_aligned_orthonormal_pairs_is_closed_form(B, E, log_s):
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((E, E)))
    u = Q[:B] * np.arange(1, B + 1)[:, None]  # any positive lengths: normalized inside
    loss = clip_loss(_t(u), _t(Q[:B]), _t(log_s)).item()
    s = math.exp(log_s)
    assert loss == pytest.approx(math.log(1 + (B - 1) * math.exp(-s)), rel=1e-12)


def test_scale_clamped_at_100_without_gradient():
    Q = np.eye(3)
    ls = _t(math.log(500.0), grad=True)
    loss = clip_loss(_t(Q + 0.1), _t(Q), ls)
    loss.backward()
    u = (Q + 0.1) / np.linalg.norm(Q + 0.1, axis=1, keepdims=True)
    Z = 100.0 * u @ Q.T
    lse = lambda z: np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)  # noqa: E731
    want = ((lse(Z) - np.diag(Z)).mean() + (lse(Z.T) - np.diag(Z)).mean()) / 2
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert ls.grad.item() == 0.0
    ls2 = _t(1.0, grad=True)  # below the clamp the scale does get a gradient
    clip_loss(_t(Q + 0.1), _t(Q), ls2).backward()
    assert ls2.grad.item() != 0.0


def test_clip_init_and_forward():
    vocab = Vocab()
    m = CLIP(len(vocab), embed_dim=8, width=16, depth=1, heads=2)
    assert m.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    rng = np.random.default_rng(0)
    ids, mask = vocab.encode_batch([caption(i % 10, rng) for i in range(4)], 12)
    loss = m(tinyllm.randn(4, 1, 8, 8), tinyllm.tensor(ids), mask)
    loss.backward()
    assert np.isfinite(loss.item()) and m.logit_scale.grad is not None


def test_recall_and_zero_shot_hand_cases():
    img = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 0.9]])
    # cosines rank image 0 -> txt 1, 2, 0 (labels 0, 2, 5: hit at 1); image 1 -> 0, 2, 1
    # (labels 5, 2, 0: never its digit 1); image 2 -> 2, 1, 0 (labels 2, ...: hit at 1)
    r = recall_at_k(img, txt, [0, 1, 2], [5, 0, 2], ks=(1, 2, 3))
    assert r == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3)}
    r = recall_at_k(img, txt, [0, 2, 2], [5, 0, 2], ks=(1, 2))  # image 1's label 2 at rank 2
    assert r == {1: pytest.approx(2 / 3), 2: pytest.approx(1.0)}
    np.testing.assert_array_equal(zero_shot_predict(img, txt), [1, 0, 2])


def test_captions_vocab_and_shift():
    vocab = Vocab()
    words = set(vocab.itos)
    assert all(w in words for w in DIGIT_WORDS)
    caps = [caption(3, template=t) for t in range(len(TEMPLATES))]
    assert all("three" in c for c in caps) and len({tuple(c) for c in caps}) == len(TEMPLATES)
    ids, mask = vocab.encode_batch([caps[0]], 8, bos=True, eos=True)
    assert vocab.decode(ids[0]) == caps[0] and mask.sum() == len(caps[0]) + 2
    x = np.arange(64.0).reshape(1, 1, 8, 8)
    y = random_shift(x, np.random.default_rng(0), 1)
    # a shift keeps a 7x7 block of the image (moved by at most one pixel)
    assert any(np.array_equal(y[0, 0, max(0, a):8 + min(0, a), max(0, b):8 + min(0, b)],
                              x[0, 0, max(0, -a):8 + min(0, -a), max(0, -b):8 + min(0, -b)])
               for a in (-1, 0, 1) for b in (-1, 0, 1))  # fmt: skip
