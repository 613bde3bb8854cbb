"""Projectors and Flamingo gated cross-attention (models/captioner.py): at gate 0 the LM's
outputs are exactly those of the LM without the image path, for any image and every
projector; the gates still get gradient at 0 (tanh'(0) = 1); once a gate opens the image
changes the outputs; projector output shapes."""

import numpy as np
import pytest

import tinyllm
from tinyllm.models.captioner import Captioner, make_projector


@pytest.mark.parametrize("proj", ["linear", "mlp", "perceiver"])
def test_gate_zero_leaves_the_lm_unchanged(proj):
    tinyllm.manual_seed(0)
    m = Captioner(20, projector=proj, dim=16, depth=2, heads=2)
    ids = tinyllm.tensor(np.random.default_rng(0).integers(0, 20, (3, 7)))
    ref = m.lm_only(ids).detach().numpy()
    for seed in (1, 2):
        img = tinyllm.tensor(np.random.default_rng(seed).random((3, 1, 8, 8)).astype(np.float32))
        out = m(img, ids)
        np.testing.assert_array_equal(out.detach().numpy(), ref)  # + 0 * (...): bitwise
    out.sum().backward()
    for xa in m.xattn:
        assert xa.alpha_attn.grad.item() != 0.0 and xa.alpha_ff.grad.item() != 0.0
    m.xattn[0].alpha_attn.data[...] = 0.5  # open one gate: the image now matters
    a = m(img, ids).detach().numpy()
    b = m(tinyllm.tensor(np.zeros((3, 1, 8, 8), np.float32)), ids).detach().numpy()
    assert not np.allclose(a, ref) and not np.allclose(a, b)


def test_lm_is_causal_with_images():
    tinyllm.manual_seed(1)
    m = Captioner(20, projector="mlp", dim=16, depth=1, heads=2)
    m.xattn[0].alpha_attn.data[...] = 1.0
    img = tinyllm.rand(2, 1, 8, 8)
    ids = np.random.default_rng(0).integers(0, 20, (2, 6))
    a = m(img, tinyllm.tensor(ids)).detach().numpy()
    ids2 = ids.copy()
    ids2[:, 4:] = (ids2[:, 4:] + 1) % 20
    b = m(img, tinyllm.tensor(ids2)).detach().numpy()
    np.testing.assert_array_equal(a[:, :4], b[:, :4])  # the future does not leak back


@pytest.mark.parametrize("kind, n", [("linear", 17), ("mlp", 17), ("perceiver", 4)])
def test_projector_shapes(kind, n):
    p = make_projector(kind, 12, 16)
    assert p(tinyllm.randn(2, 17, 12)).shape == (2, n, 16)
    with pytest.raises(ValueError, match="make_projector: kind"):
        make_projector("qformer", 12, 16)


@pytest.mark.parametrize("mult", [0.0, 1.0])
def test_train_caption_freezes_the_vit_at_lr_mult_0(mult):
    """vit_lr_mult 0: the ViT's weights are bitwise those it came with (LLaVA stage 1);
    1: they move with the LM (the old recipe, which wrecked the ViT's features)."""
    pytest.importorskip("sklearn")
    from tinyllm.models.vit import VisionTransformer
    from tinyllm.vision.train import train_caption

    tinyllm.manual_seed(0)
    vit = VisionTransformer(8, 2, 1, 10, 32, 2, 4)
    before = {k: v.detach().numpy().copy() for k, v in vit.state_dict().items()}
    _, m, _ = train_caption(0, 3, batch=4, vit=vit, vit_lr_mult=mult, quiet=True)
    after = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    used = {k for k in before if not k.startswith("head.")}  # the classifier head is unused
    assert changed == (set() if mult == 0.0 else used)
    assert m["vit_lr_mult"] == mult
    with pytest.raises(ValueError, match="train_caption: vit_lr_mult"):
        train_caption(0, 1, vit=vit, vit_lr_mult=-1.0, quiet=True)
