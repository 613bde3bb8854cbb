"""Constrained decoding as a logits processor (Hugging Face's ``__call__(input_ids, scores)``).

``scores[b, v] = -inf`` for every token ``v`` not in ``guide.mask(state_b)``, where ``state_b``
is the automaton state after the tokens row ``b`` generated so far (the ids after the first
``prompt_length`` columns; by default the width of ``input_ids`` at the first call). States are
cached per generated prefix, so each step walks one new token per row.
"""

from __future__ import annotations

import numpy as np

from tinyllm.agents.json_schema import schema_to_regex
from tinyllm.agents.regex import DEAD
from tinyllm.agents.token_mask import RegexGuide, TokenVocabulary
from tinyllm.generation.processors import LogitsProcessor, _check


class RegexLogitsProcessor(LogitsProcessor):
    """Mask the next-token scores to the tokens that keep the output in ``pattern``'s language.

    >>> proc = RegexLogitsProcessor("[0-9]+", TokenVocabulary.bytes_level())
    >>> out = proc(np.zeros((1, 3), dtype=np.int64), np.zeros((1, 257)))
    >>> int(np.isfinite(out).sum())
    10
    """

    def __init__(
        self,
        pattern: str,
        vocabulary: TokenVocabulary,
        prompt_length: int | None = None,
    ) -> None:
        self.guide = RegexGuide(pattern, vocabulary)
        self.prompt_length = prompt_length
        self._states: dict[tuple[int, ...], int] = {(): self.guide.initial}

    def state_of(self, generated: tuple[int, ...]) -> int:
        """The automaton state after the generated ids (cached per prefix)."""
        k = len(generated)
        while generated[:k] not in self._states:  # longest cached prefix
            k -= 1
        state = self._states[generated[:k]]
        for j in range(k, len(generated)):
            state = DEAD if state == DEAD else self.guide.next_state(state, generated[j])
            self._states[generated[: j + 1]] = state
        return state

    def __call__(self, input_ids, scores) -> np.ndarray:
        name = type(self).__name__
        input_ids, scores = _check(name, input_ids, scores)
        if scores.shape[1] != self.guide.vocabulary.size:
            raise ValueError(
                f"{name}: scores has {scores.shape[1]} columns, the vocabulary "
                f"{self.guide.vocabulary.size} tokens"
            )
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        if input_ids.shape[1] < self.prompt_length:
            raise ValueError(
                f"{name}: input_ids has {input_ids.shape[1]} columns, fewer than the prompt "
                f"length {self.prompt_length}"
            )
        for b in range(scores.shape[0]):
            generated = tuple(int(t) for t in input_ids[b, self.prompt_length :])
            state = self.state_of(generated)
            if state == DEAD:
                raise ValueError(
                    f"{name}: row {b} generated ids {list(generated)} that leave the language "
                    f"of {self.guide.automaton.pattern!r}"
                )
            scores[b, ~self.guide.mask(state)] = -np.inf
        return scores


class JSONLogitsProcessor(RegexLogitsProcessor):
    """``RegexLogitsProcessor`` for ``schema_to_regex(schema)`` (see ``json_schema.py``)."""

    def __init__(
        self, schema: dict, vocabulary: TokenVocabulary, prompt_length: int | None = None
    ) -> None:
        self.schema = schema
        super().__init__(schema_to_regex(schema), vocabulary, prompt_length)
