"""The 1,797 8x8 digits of scikit-learn's ``load_digits`` (no download), a seeded split,
shift augmentation, and captions generated from labels with varied templates.

Images are scaled from 0..16 to 0..1 and shaped [N, 1, 8, 8]. Captions are word lists
from ``TEMPLATES`` with the digit's name; ``Vocab`` maps words to ids (0 = <pad>,
1 = <bos>, 2 = <eos>).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DIGIT_WORDS", "TEMPLATES", "Digits", "Vocab", "caption", "load_digits_split",
    "random_shift",
]  # fmt: skip

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a photo of the digit {}",
    "a handwritten {}",
    "this is a {}",
    "the number {} written by hand",
    "a small picture of a {}",
    "an image showing the digit {}",
    "{}",
    "a blurry {}",
)


@dataclass
class Digits:
    x_train: np.ndarray  # [N, 1, 8, 8] float in [0, 1]
    y_train: np.ndarray  # [N] int64
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(seed: int = 0, test_fraction: float = 0.2, dtype=np.float32,
                      holdout: str = "test") -> Digits:  # fmt: skip
    """A random split of load_digits (``seed`` fixes it); images [N, 1, 8, 8] in [0, 1].

    ``holdout="validation"``: the test images are left out altogether and the last
    ``test_fraction`` of the training part (in the seed's order) is returned in place of the
    test set, for choosing settings without looking at the test split."""
    if holdout not in ("test", "validation"):
        raise ValueError(f"load_digits_split: holdout must be test|validation, got {holdout!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise ImportError("tinyllm.vision needs scikit-learn: pip install 'tinyllm[vision]'") from e
    d = load_digits()
    x = (d.images / 16.0).astype(dtype)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    if holdout == "validation":
        n_val = int(round(test_fraction * len(tr)))
        te, tr = tr[-n_val:], tr[:-n_val]
    return Digits(x[tr], y[tr], x[te], y[te])


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int = 1) -> np.ndarray:
    """Each image moved by a random (dy, dx) in [-max_shift, max_shift]^2, zeros fill in."""
    out = np.zeros_like(x)
    H, W = x.shape[-2:]
    for n, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (len(x), 2))):
        ys, yd = slice(max(0, -dy), H - max(0, dy)), slice(max(0, dy), H - max(0, -dy))
        xs, xd = slice(max(0, -dx), W - max(0, dx)), slice(max(0, dx), W - max(0, -dx))
        out[n, ..., yd, xd] = x[n, ..., ys, xs]
    return out


def caption(label: int, rng: np.random.Generator | None = None, template: int | None = None):
    """A caption (list of words) for a digit label, from a random or given template."""
    if template is None:
        template = 0 if rng is None else int(rng.integers(len(TEMPLATES)))
    return TEMPLATES[template].format(DIGIT_WORDS[label]).split()


class Vocab:
    """Word-level vocabulary of every template and digit word; ids 0 <pad>, 1 <bos>, 2 <eos>."""

    PAD, BOS, EOS = 0, 1, 2

    def __init__(self) -> None:
        words = sorted({w for t in TEMPLATES for w in t.split() if w != "{}"} | set(DIGIT_WORDS))
        self.itos = ["<pad>", "<bos>", "<eos>"] + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode_batch(self, captions, length: int, bos: bool = False, eos: bool = False):
        """ids [B, length] (padded with <pad>) and the mask of real tokens [B, length]."""
        ids = np.full((len(captions), length), self.PAD, dtype=np.int64)
        for i, words in enumerate(captions):
            seq = ([self.BOS] if bos else []) + [self.stoi[w] for w in words]
            seq += [self.EOS] if eos else []
            if len(seq) > length:
                raise ValueError(f"Vocab.encode_batch: caption of {len(seq)} ids > length {length}")
            ids[i, : len(seq)] = seq
        return ids, ids != self.PAD

    def decode(self, ids) -> list[str]:
        return [self.itos[int(i)] for i in ids if int(i) not in (self.PAD, self.BOS, self.EOS)]
