"""Training loops for the digits: ViT classification and CLIP contrastive pretraining.

Both use AdamW with a cosine schedule (linear warmup), shift augmentation (+-1 pixel),
and report test-set numbers on a held-out 20% split (``load_digits_split(seed)``).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.grad_mode import no_grad
from tinyllm.optim import AdamW
from tinyllm.vision.data import TEMPLATES, Vocab, caption, load_digits_split, random_shift

__all__ = ["train_clip", "train_vit"]


def _lr(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _progress(tag: str, step: int, steps: int, loss: float, t0: float, quiet: bool) -> None:
    if quiet or (step % max(1, steps // 20) and step != steps - 1):
        return
    done = (step + 1) / steps
    bar = "#" * int(30 * done)
    sys.stderr.write(f"\r{tag} [{bar:<30}] {step + 1}/{steps} loss {loss:.4f} "
                     f"{time.perf_counter() - t0:.0f}s")  # fmt: skip
    if step == steps - 1:
        sys.stderr.write("\n")


def _batched(fn, x, bs=256):
    with no_grad():
        return np.concatenate([fn(tinyllm.tensor(x[i : i + bs])).numpy()
                               for i in range(0, len(x), bs)])  # fmt: skip


def train_vit(seed: int = 0, steps: int = 600, batch: int = 64, lr: float = 3e-3,
              pos_embed: str = "learned", embed_dim: int = 32, depth: int = 2,
              heads: int = 4, holdout: str = "test", quiet: bool = False):  # fmt: skip
    """Train a ViT (patch 2 on 8x8: 16 tokens + class token); returns (model, metrics).
    ``holdout="validation"``: evaluate on a validation part of the training split instead
    of the test split (``load_digits_split``)."""
    from tinyllm.models.vit import VisionTransformer

    tinyllm.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = load_digits_split(seed, holdout=holdout)
    model = VisionTransformer(8, 2, 1, 10, embed_dim, depth, heads, pos_embed=pos_embed)
    opt = AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, steps // 10)
        idx = rng.integers(0, len(data.y_train), batch)
        x = random_shift(data.x_train[idx], rng)
        loss = F.cross_entropy(model(tinyllm.tensor(x)), tinyllm.tensor(data.y_train[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        _progress(f"vit seed {seed}", step, steps, loss.item(), t0, quiet)
    model.eval()
    logits = _batched(model, data.x_test)
    acc = float((logits.argmax(1) == data.y_test).mean())
    return model, {"task": "vit", "seed": seed, "steps": steps, "pos_embed": pos_embed,
                   "test_accuracy": acc, "n_test": len(data.y_test),
                   "train_seconds": time.perf_counter() - t0}  # fmt: skip


def train_clip(seed: int = 0, steps: int = 1500, batch: int = 10, lr: float = 2e-3,
               embed_dim: int = 32, width: int = 32, depth: int = 2, heads: int = 4,
               quiet: bool = False):  # fmt: skip
    """Contrastive pretraining on (digit, caption from a random template) pairs; returns
    (model, metrics) with zero-shot accuracy and recall@1/5 on the test images.

    A batch samples digits so that no two images share a label where it can (B <= 10
    distinct labels, then repeats): with repeated labels the InfoNCE targets would call
    a caption of the same digit a negative."""
    from tinyllm.models.clip import CLIP, recall_at_k, zero_shot_predict

    tinyllm.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = load_digits_split(seed)
    vocab = Vocab()
    L = 8
    model = CLIP(len(vocab), embed_dim, width, depth, heads, max_len=L)
    opt = AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    by_label = [np.flatnonzero(data.y_train == c) for c in range(10)]
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, steps // 10)
        labels = np.concatenate([rng.permutation(10) for _ in range(-(-batch // 10))])[:batch]
        idx = np.array([rng.choice(by_label[c]) for c in labels])
        x = random_shift(data.x_train[idx], rng)
        ids, mask = vocab.encode_batch([caption(int(c), rng) for c in labels], L)
        loss = model(tinyllm.tensor(x), tinyllm.tensor(ids), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _progress(f"clip seed {seed}", step, steps, loss.item(), t0, quiet)
    model.eval()
    img = _batched(model.encode_image, data.x_test)
    with no_grad():
        cls = []
        for c in range(10):  # prompt ensemble: mean of the unit text embeddings
            ids, mask = vocab.encode_batch([caption(c, template=t) for t in
                                            range(len(TEMPLATES))], L)  # fmt: skip
            e = model.encode_text(tinyllm.tensor(ids), mask).numpy()
            cls.append((e / np.linalg.norm(e, axis=1, keepdims=True)).mean(0))
        cap_labels = rng.integers(0, 10, len(data.y_test))
        ids, mask = vocab.encode_batch([caption(int(c), rng) for c in cap_labels], L)
        txt = model.encode_text(tinyllm.tensor(ids), mask).numpy()
    zs = float((zero_shot_predict(img, np.stack(cls)) == data.y_test).mean())
    rec = recall_at_k(img, txt, data.y_test, cap_labels, ks=(1, 5))
    return model, {"task": "clip", "seed": seed, "steps": steps, "zero_shot_accuracy": zs,
                   "recall@1": rec[1], "recall@5": rec[5], "n_test": len(data.y_test),
                   "logit_scale": float(model.logit_scale.item()),
                   "train_seconds": time.perf_counter() - t0}  # fmt: skip


def caption_accuracy(words: list[list[str]], labels) -> float:
    """Fraction of captions naming exactly one digit word, the right one."""
    from tinyllm.vision.data import DIGIT_WORDS

    ok = 0
    for w, y in zip(words, labels):
        named = [d for d in w if d in DIGIT_WORDS]
        ok += len(set(named)) == 1 and named[0] == DIGIT_WORDS[int(y)]
    return ok / max(1, len(labels))


def train_caption(seed: int = 0, steps: int = 600, batch: int = 32, lr: float = 2e-3,
                  projector: str = "mlp", vit=None, gate_lr_mult: float = 10.0,
                  vit_lr_mult: float | None = None, holdout: str = "test",
                  quiet: bool = False):  # fmt: skip
    """Caption digits with a small LM conditioned by gated cross-attention on ViT tokens.

    ``vit``: a trained encoder (e.g. the classifier of ``train_vit``), or None for a new one
    trained here. ``vit_lr_mult``: the ViT's learning rate as a multiple of ``lr``; 0 freezes
    it (LLaVA's stage 1: only projector, gates and LM learn). Default: 0 for a given ViT, 1
    for a new one. Fine-tuning a trained ViT at the LM's rate (1.0) wrecks it: only the
    label word's loss depends on the image, and Adam moves every ViT weight by ~lr per step
    whatever the size of that weak gradient (experiments/multimodal.py caption-ablation).
    Returns (model, metrics, examples) with captioning accuracy on the test images; the
    examples are (images, generated words, labels) of the whole test split. ``holdout``:
    as in ``train_vit`` (pass a ViT trained with the same holdout)."""
    from tinyllm.models.captioner import Captioner, gate_values

    tinyllm.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = load_digits_split(seed, holdout=holdout)
    vocab = Vocab()
    L = 10  # <bos> + up to 7 words + <eos>, padded
    model = Captioner(len(vocab), projector=projector, dim=32, depth=2, heads=4,
                      max_len=L, vit=vit)  # fmt: skip
    if vit_lr_mult is None:
        vit_lr_mult = 1.0 if vit is None else 0.0
    if vit_lr_mult < 0:
        raise ValueError(f"train_caption: vit_lr_mult must be >= 0, got {vit_lr_mult}")
    if vit_lr_mult == 0:
        model.vit.requires_grad_(False)
    # the tanh gates start at 0 and move by ~lr per step under Adam: they get gate_lr_mult x
    # the learning rate (and no weight decay) so that they can open within a short run
    vit_ids = {id(p) for p in model.vit.parameters()}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    is_gate = {id(p) for n, p in named if n.split(".")[-1].startswith("alpha_")}
    gates = [p for _, p in named if id(p) in is_gate]
    enc = [p for _, p in named if id(p) in vit_ids]
    rest = [p for _, p in named if id(p) not in vit_ids and id(p) not in is_gate]
    groups = [{"params": rest, "lr_mult": 1.0},
              {"params": gates, "weight_decay": 0.0, "lr_mult": gate_lr_mult}]  # fmt: skip
    if enc:
        groups.append({"params": enc, "lr_mult": vit_lr_mult})
    opt = AdamW(groups, lr=lr, weight_decay=0.05)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, steps // 10) * g.get("lr_mult", 1.0)
        idx = rng.integers(0, len(data.y_train), batch)
        x = random_shift(data.x_train[idx], rng)
        ids, _ = vocab.encode_batch([caption(int(c), rng) for c in data.y_train[idx]], L,
                                    bos=True, eos=True)  # fmt: skip
        logits = model(tinyllm.tensor(x), tinyllm.tensor(ids[:, :-1]))
        target = np.where(ids[:, 1:] == vocab.PAD, -100, ids[:, 1:])
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), tinyllm.tensor(target.ravel()),
                               ignore_index=-100)  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        _progress(f"caption seed {seed}", step, steps, loss.item(), t0, quiet)
    model.eval()
    chunks = [data.x_test[i : i + 128] for i in range(0, len(data.y_test), 128)]
    gen = np.concatenate([model.generate(tinyllm.tensor(c), vocab.BOS, L - 2) for c in chunks])
    words = []
    for row in gen:
        row = list(row[1:])
        row = row[: row.index(vocab.EOS)] if vocab.EOS in row else row
        words.append(vocab.decode(row))
    acc = caption_accuracy(words, data.y_test)
    metrics = {"task": "caption", "seed": seed, "steps": steps, "projector": projector,
               "vit_lr_mult": vit_lr_mult, "caption_accuracy": acc, "n_test": len(data.y_test),
               "gates": gate_values(model),
               "train_seconds": time.perf_counter() - t0}  # fmt: skip
    return model, metrics, (data.x_test, words, data.y_test)
