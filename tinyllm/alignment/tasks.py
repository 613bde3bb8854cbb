"""A task whose reward a program can check: end the sentence soon, but not at once.

The prompt is a window of held-in corpus text that stops in the middle of a sentence; the
completion should **end a sentence within ``max_bytes`` bytes**, after at least ``min_bytes``
bytes (so that ". " alone, the degenerate answer, does not count). A sentence ends at ``.``,
``!`` or ``?`` followed by a space or a newline (so ``os.path`` and ``3.14`` do not count).
Generation stops right after that whitespace byte (the "EOS" of this task), so completions
have different lengths, which exercises every mask of the pipeline.

    reward(y) = 1   if y's first sentence end closes at byte n, min_bytes <= n <= max_bytes
              = 0   otherwise                       (n counts the '.', not the space)

Why this task: the reward is a few lines of code anyone can check; it is binary, so "reward
0.31 -> 0.95" reads as a success rate; the small base model already does it sometimes
(about a third of the time: there is something to reinforce), but not usually; and the
shortest way to do it — stop rambling and close the sentence — changes the model's text
distribution, so the KL to the reference and the alignment tax on held-out text are real
quantities, not zero.

Prompts are byte windows of the training split that start after a sentence end and stop
``prompt_bytes`` later, so the sentence is open. Evaluation prompts come from the validation
split (held out from the base model and from the policy's training prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SentenceEndTask", "sentence_end_position", "sentence_end_reward"]

_ENDS = (ord("."), ord("!"), ord("?"))
_SPACES = (ord(" "), ord("\n"))


def sentence_end_position(ids, max_bytes: int | None = None) -> int | None:
    """Length to keep: one past the whitespace that follows the first sentence end, or None."""
    limit = len(ids) if max_bytes is None else min(len(ids), max_bytes)
    for i in range(1, limit):
        if ids[i] in _SPACES and ids[i - 1] in _ENDS:
            return i + 1
    return None


def sentence_end_reward(ids, max_bytes: int, min_bytes: int = 0) -> float:
    """1.0 if the completion's first sentence end closes at byte n (the '.', 1-based) with
    ``min_bytes <= n <= max_bytes``, else 0.0."""
    end = sentence_end_position(ids, max_bytes + 1)  # the whitespace may be byte max_bytes + 1
    if end is None:
        return 0.0
    n = end - 1  # bytes up to and including the '.'
    return 1.0 if min_bytes <= n <= max_bytes else 0.0


@dataclass
class SentenceEndTask:
    """Prompts and the checkable reward. Byte-level tokens (the ``tinyllm train`` default)."""

    train_text: bytes
    eval_text: bytes
    prompt_bytes: int = 32
    max_bytes: int = 32
    min_bytes: int = 8

    name = "sentence-end"

    @classmethod
    def from_corpus(
        cls,
        prompt_bytes: int = 32,
        max_bytes: int = 32,
        data: str | None = None,
        min_bytes: int = 8,
    ):
        from tinyllm.data.corpus import TRAIN_FRACTION, load_text

        raw = load_text(data).encode("utf-8")
        cut = int(len(raw) * TRAIN_FRACTION)
        return cls(raw[:cut], raw[cut:], prompt_bytes, max_bytes, min(min_bytes, max_bytes))

    def _starts(self, text: bytes) -> np.ndarray:
        arr = np.frombuffer(text, dtype=np.uint8)
        ends = np.isin(arr[:-1], _ENDS) & (arr[1:] == ord(" "))
        starts = np.nonzero(ends)[0] + 2  # first byte of the next sentence
        starts = starts[starts + self.prompt_bytes + 1 < len(arr)]
        keep = []
        for s in starts:  # the window must not contain a sentence end itself
            window = text[s : s + self.prompt_bytes]
            if sentence_end_position(list(window)) is None and b"\n\n" not in window:
                if window.isascii() and window[:1].isalpha():
                    keep.append(s)
        return np.asarray(keep, dtype=np.int64)

    def prompts(self, n: int, rng: np.random.Generator, split: str = "train") -> list[list[int]]:
        """``n`` prompts (lists of byte ids), each ``prompt_bytes`` long and mid-sentence."""
        text = self.train_text if split == "train" else self.eval_text
        cache = self.__dict__.setdefault("_start_cache", {})
        if split not in cache:
            cache[split] = self._starts(text)
        starts = rng.choice(cache[split], size=n, replace=len(cache[split]) < n)
        return [list(text[s : s + self.prompt_bytes]) for s in starts]

    def eval_prompts(self, n: int, seed: int = 1234) -> list[list[int]]:
        return self.prompts(n, np.random.default_rng(seed), split="eval")

    def stop(self, ids) -> int | None:
        return sentence_end_position(ids, None)

    def reward(self, completion) -> float:
        return sentence_end_reward(completion, self.max_bytes, self.min_bytes)

    def rewards(self, completions) -> np.ndarray:
        return np.asarray([self.reward(c) for c in completions], dtype=np.float64)
