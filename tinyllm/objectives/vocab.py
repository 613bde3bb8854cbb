"""Special token ids placed above a base vocabulary (bytes: 256, or a BPE tokenizer's size).

Byte tokens use every id in [0, 256) for data, so the objectives that need symbols of their own
(BERT's [MASK], T5's sentinels, the decoder's start and end) get ids above the base vocabulary:

    id               name                 used by
    base + 0         <pad>                padding; T5's decoder start token
    base + 1         <mask>               BERT's [MASK], BART's <mask>
    base + 2         </s>                 end of sequence (T5 inputs and targets)
    base + 3 + k     <extra_id_k>         T5's k-th sentinel, k = 0 .. num_sentinels - 1

The model's vocabulary is then ``base + 3 + num_sentinels`` (359 over bytes with T5's 100
sentinels). T5 counts its sentinels down from the top of its vocabulary; here they count up,
which changes nothing but the ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SpecialTokens"]


@dataclass(frozen=True)
class SpecialTokens:
    """The special ids above ``base`` (the number of data tokens: 256 for bytes)."""

    base: int = 256
    num_sentinels: int = 100

    def __post_init__(self) -> None:
        if self.base <= 0 or self.num_sentinels < 0:
            raise ValueError(
                f"SpecialTokens: base must be > 0 and num_sentinels >= 0, got base={self.base}, "
                f"num_sentinels={self.num_sentinels}"
            )

    @property
    def pad(self) -> int:
        return self.base

    @property
    def mask(self) -> int:
        return self.base + 1

    @property
    def eos(self) -> int:
        return self.base + 2

    def sentinel(self, k: int) -> int:
        """The id of ``<extra_id_k>``."""
        if not 0 <= k < self.num_sentinels:
            raise ValueError(f"SpecialTokens: sentinel {k} out of range [0, {self.num_sentinels})")
        return self.base + 3 + k

    @property
    def vocab_size(self) -> int:
        return self.base + 3 + self.num_sentinels

    def is_special(self, ids) -> np.ndarray:
        """Bool array: True where an id is one of these special tokens (not a data token)."""
        return np.asarray(ids) >= self.base

    def is_sentinel(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.base + 3) & (ids < self.vocab_size)
