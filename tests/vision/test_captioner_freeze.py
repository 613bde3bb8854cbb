"""Freezing the captioner's ViT (``train_caption(vit_lr_mult=0)``: ``requires_grad_(False)``)
changes nothing but the work: for one step the loss, the gradients of every trainable
parameter and the AdamW update equal those of the unfrozen model whose ViT has learning
rate 0 (the old recipe), bit for bit; the frozen ViT gets no gradient (its backward does
not run) and AdamW keeps no moments for it."""

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.models.captioner import Captioner
from tinyllm.optim import AdamW


def _captioner():
    tinyllm.manual_seed(0)
    m = Captioner(20, projector="mlp", dim=16, depth=2, heads=2, max_len=8)
    for xa in m.xattn:  # open the gates, so that the loss depends on the image path
        xa.alpha_attn.data[...] = 0.5
    return m


def _step(model, frozen: bool):
    """One step of train_caption's recipe: the ViT frozen, or in a group at lr 0."""
    if frozen:
        model.vit.requires_grad_(False)
    vit_ids = {id(p) for p in model.vit.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in vit_ids], "lr": 1e-2}]
    if not frozen:
        groups.append({"params": [p for p in trainable if id(p) in vit_ids], "lr": 0.0})
    opt = AdamW(groups, lr=1e-2, weight_decay=0.05)
    rng = np.random.default_rng(0)
    images = tinyllm.tensor(rng.random((3, 1, 8, 8)).astype(np.float32))
    ids = rng.integers(0, 20, (3, 7))
    logits = model(images, tinyllm.tensor(ids[:, :-1]))
    loss = F.cross_entropy(logits.reshape(-1, 20), tinyllm.tensor(ids[:, 1:].ravel()))
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    state_ids = {pid for pid, moments in opt.state.items() if moments}  # keyed by id(p)
    return loss.item(), grads, state_ids, vit_ids


def test_frozen_vit_gives_the_same_step_without_its_backward_and_moments():
    frozen, unfrozen = _captioner(), _captioner()
    loss_f, grads_f, state_f, vit_f = _step(frozen, frozen=True)
    loss_u, grads_u, state_u, vit_u = _step(unfrozen, frozen=False)
    assert loss_f == loss_u
    vit_names = {n for n, _ in frozen.named_parameters() if n.startswith("vit.")}
    assert vit_names and not vit_names & set(grads_f)  # no ViT gradient: no ViT backward
    used = {n for n in vit_names if not n.startswith("vit.head.")}  # the classifier: unused
    assert used <= set(grads_u)  # unfrozen, the ViT's backward ran (the control)
    assert set(grads_f) == set(grads_u) - vit_names
    for name, g in grads_f.items():
        np.testing.assert_array_equal(g, grads_u[name], err_msg=name)
    assert not state_f & vit_f and state_u & vit_u  # AdamW moments: none for the frozen ViT
    after_f, after_u = frozen.state_dict(), unfrozen.state_dict()
    for name, value in after_f.items():  # the update: equal everywhere (the ViT unchanged)
        np.testing.assert_array_equal(value.numpy(), after_u[name].numpy(), err_msg=name)


def test_train_caption_at_lr_mult_0_runs_no_vit_backward():
    """Through ``train_caption`` itself: after its steps the ViT's parameters hold no
    gradient and do not require one."""
    import pytest

    pytest.importorskip("sklearn")
    from tinyllm.models.vit import VisionTransformer
    from tinyllm.vision.train import train_caption

    tinyllm.manual_seed(0)
    vit = VisionTransformer(8, 2, 1, 10, 32, 2, 4)
    model, _, _ = train_caption(0, 2, batch=4, vit=vit, vit_lr_mult=0.0, quiet=True)
    assert all(p.grad is None and not p.requires_grad for p in model.vit.parameters())
    assert any(p.grad is not None for p in model.xattn.parameters())  # the rest trained
