"""BERT's masked language modelling (Devlin et al. 2019): choose 15 % of tokens, predict them.

Each token that may be masked (not a special token) is selected independently with
probability p = 0.15 (Hugging Face's ``DataCollatorForLanguageModeling``; the original BERT
picked round(0.15 n) positions per sequence, which has the same mean). A selected token is

    replaced by <mask>                      with probability 0.8
    replaced by a random data token         with probability 0.1  (uniform over [0, n_data))
    left unchanged                          with probability 0.1

and only selected tokens carry a label (the original id); every other label is
``ignore_index`` (-100), so ``F.cross_entropy(..., ignore_index=-100)`` averages over the
selected tokens only. Random replacements are data tokens, never special ids (BERT drew
from its whole vocabulary, [CLS] and [SEP] included).

Whole-word masking (Google's BERT update, 2019): the unit selected with probability p is a
word, and every token of a selected word is selected; the 80/10/10 choice is still made per
token, as in Google's ``create_pretraining_data.py``. ``word_ids`` assigns each token its
word; for byte tokens ``byte_word_ids`` makes each maximal run of non-whitespace bytes one
word and each whitespace byte a word of its own.

All randomness comes from the ``numpy.random.Generator`` passed in, in a fixed order
(selection, then the 80/10/10 draw, then the random tokens), so a seed fixes a batch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IGNORE_INDEX", "byte_word_ids", "mask_tokens"]

IGNORE_INDEX = -100
_WHITESPACE = np.array([9, 10, 11, 12, 13, 32])  # \t \n \v \f \r and space


def byte_word_ids(ids: np.ndarray) -> np.ndarray:
    """Word index of each byte token along the last axis: a run of non-whitespace bytes is
    one word, each whitespace byte is its own word. Same shape as ``ids``, int64, numbered
    from 0 in each row."""
    ids = np.asarray(ids)
    space = np.isin(ids, _WHITESPACE)
    prev_space = np.concatenate([np.ones_like(space[..., :1]), space[..., :-1]], axis=-1)
    starts = space | prev_space  # a whitespace byte, or the first byte after one (or the row's)
    return np.cumsum(starts, axis=-1) - 1


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    n_data: int,
    mlm_probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    special: np.ndarray | None = None,
    word_ids: np.ndarray | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels), both int64 of ``ids``' shape (module docstring).

    Args:
        ids: token ids [..., T].
        rng: the generator every random choice comes from.
        mask_id: the <mask> id. n_data: random replacements are drawn from [0, n_data).
        mlm_probability: p, the selection probability of a token (or of a word).
        mask_fraction, random_fraction: of the selected tokens, the share replaced by <mask>
            and by a random token (the rest is kept): 0.8 and 0.1.
        special: bool [..., T], True where a token must never be selected; default: ids
            >= n_data (the special ids above the data vocabulary).
        word_ids: int [..., T], the word of each token (tokens of one row with equal word id
            form one word): whole-word masking. None: every token on its own.
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"mask_tokens: ids must be integers, got dtype {ids.dtype}")
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mask_tokens: mlm_probability must be in [0, 1], got {mlm_probability}")
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
        raise ValueError(
            "mask_tokens: mask_fraction and random_fraction must be >= 0 with a sum <= 1, got "
            f"{mask_fraction} and {random_fraction}"
        )
    if n_data <= 0:
        raise ValueError(f"mask_tokens: n_data must be positive, got {n_data}")
    special = ids >= n_data if special is None else np.asarray(special, dtype=bool)
    if special.shape != ids.shape:
        raise ValueError(
            f"mask_tokens: special has shape {special.shape}, ids {ids.shape}; they must match"
        )
    if word_ids is None:
        selected = rng.random(ids.shape) < mlm_probability
    else:
        word_ids = np.asarray(word_ids)
        if word_ids.shape != ids.shape or word_ids.dtype.kind not in "iu":
            raise ValueError(
                f"mask_tokens: word_ids must be integers of ids' shape {ids.shape}, got "
                f"{word_ids.dtype} {word_ids.shape}"
            )
        rows = np.broadcast_to(
            np.arange(ids.size // max(ids.shape[-1], 1)).reshape(ids.shape[:-1] + (1,)), ids.shape
        )
        # one draw per distinct (row, word), in the order the words first appear
        keys = np.stack([rows.ravel(), word_ids.ravel()], axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # words in order of appearance
        draws = np.empty(len(first))
        draws[order] = rng.random(len(first))
        selected = (draws[inverse.ravel()] < mlm_probability).reshape(ids.shape)
    selected &= ~special
    labels = np.where(selected, ids, ignore_index).astype(np.int64)
    u = rng.random(ids.shape)
    to_mask = selected & (u < mask_fraction)
    to_random = selected & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
    inputs = ids.astype(np.int64, copy=True)
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.integers(0, n_data, size=int(to_random.sum()))
    return inputs, labels
