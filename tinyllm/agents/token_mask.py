"""Token masks: which tokens of a vocabulary keep a regex automaton alive.

For a DFA state ``s`` and a token with bytes ``t = t_1 ... t_k``, the token is allowed iff
``walk(s, t) != DEAD``, i.e. the text so far followed by ``t`` is still a prefix of some match
(the DFA's dead state is exactly "no completion exists", see ``regex.py``). The end-of-sequence
token is allowed iff ``s`` is accepting. Sampling only allowed tokens therefore always ends, if
it ends by EOS, on a string of the language, and never paints itself into a corner.

Masks are computed on first use of a state and cached (``mask(state)``), by a depth-first walk
of a byte trie of the vocabulary in lockstep with the DFA: a shared prefix is walked once and a
dead prefix prunes all tokens below it. The cost per new state is at most the number of trie
nodes (the vocabulary's total bytes) and usually far less.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyllm.agents.regex import DEAD, RegexAutomaton

# The state after EOS: only EOS may follow (a finished row of a batch keeps padding with EOS).
FINISHED = -2


class TokenVocabulary:
    """A vocabulary as byte strings: ``tokens[i]`` is token ``i``'s bytes, or None for a token
    that never appears in constrained output (special tokens); ``eos_token_id`` ends a sequence.
    """

    def __init__(self, tokens: Sequence[bytes | None], eos_token_id: int) -> None:
        if not 0 <= eos_token_id < len(tokens):
            raise ValueError(
                f"TokenVocabulary: eos_token_id {eos_token_id} outside [0, {len(tokens)})"
            )
        self.tokens = list(tokens)
        self.eos_token_id = int(eos_token_id)
        self.size = len(self.tokens)
        # trie: children[node] = {byte: child}; ends[node] = ids whose bytes end here
        self._children: list[dict[int, int]] = [{}]
        self._ends: list[list[int]] = [[]]
        for token_id, data in enumerate(self.tokens):
            if token_id == self.eos_token_id or not data:
                continue  # empty tokens would let generation loop without progress
            node = 0
            for byte in data:
                nxt = self._children[node].get(byte)
                if nxt is None:
                    nxt = len(self._children)
                    self._children[node][byte] = nxt
                    self._children.append({})
                    self._ends.append([])
                node = nxt
            self._ends[node].append(token_id)

    @classmethod
    def bytes_level(cls) -> TokenVocabulary:
        """256 single-byte tokens (id = byte value) and EOS = 256."""
        return cls([bytes([b]) for b in range(256)] + [None], eos_token_id=256)

    @classmethod
    def from_bpe(cls, tokenizer, eos_token: str = "<|endoftext|>") -> TokenVocabulary:
        """The vocabulary of a ``tinyllm.tokenizers.BPETokenizer``; its special tokens are
        excluded except ``eos_token`` (which must be one of them)."""
        if eos_token not in tokenizer.special_tokens:
            raise ValueError(
                f"TokenVocabulary.from_bpe: eos_token {eos_token!r} is not a special token "
                f"of the tokenizer (has {sorted(tokenizer.special_tokens)})"
            )
        tokens: list[bytes | None] = [None] * tokenizer.vocab_size
        for token_id, data in tokenizer.vocab.items():
            tokens[token_id] = data
        return cls(tokens, eos_token_id=tokenizer.special_tokens[eos_token])


class RegexGuide:
    """A regex automaton paired with a vocabulary: per-state boolean token masks.

    >>> guide = RegexGuide("(yes|no)", TokenVocabulary.bytes_level())
    >>> s = guide.initial
    >>> [chr(i) for i in np.flatnonzero(guide.mask(s))]
    ['n', 'y']
    >>> bool(guide.mask(guide.next_state(guide.next_state(s, ord("n")), ord("o")))[256])
    True
    """

    def __init__(self, pattern: str | RegexAutomaton, vocabulary: TokenVocabulary) -> None:
        self.automaton = pattern if isinstance(pattern, RegexAutomaton) else RegexAutomaton(pattern)
        self.vocabulary = vocabulary
        self.initial = self.automaton.initial
        self._masks: dict[int, np.ndarray] = {}
        self._next: dict[tuple[int, int], int] = {}

    def mask(self, state: int) -> np.ndarray:
        """Boolean [V]: True where the token may follow ``state`` (cached per state)."""
        if state == DEAD:
            raise ValueError(
                "RegexGuide.mask: the state is DEAD (the text already left the language)"
            )
        if state == FINISHED:
            only_eos = np.zeros(self.vocabulary.size, dtype=bool)
            only_eos[self.vocabulary.eos_token_id] = True
            return only_eos
        cached = self._masks.get(state)
        if cached is not None:
            return cached
        vocab = self.vocabulary
        allowed = np.zeros(vocab.size, dtype=bool)
        step = self.automaton.step
        children, ends = vocab._children, vocab._ends
        stack = [(0, state)]
        while stack:
            node, s = stack.pop()
            for byte, child in children[node].items():
                t = step(s, byte)
                if t == DEAD:
                    continue
                ids = ends[child]
                if ids:
                    allowed[ids] = True
                if children[child]:
                    stack.append((child, t))
        allowed[vocab.eos_token_id] = self.automaton.is_accepting(state)
        self._masks[state] = allowed
        return allowed

    def next_state(self, state: int, token_id: int) -> int:
        """The state after emitting ``token_id``: ``DEAD`` for a disallowed token, ``FINISHED``
        after EOS from an accepting state (or from ``FINISHED``)."""
        key = (state, int(token_id))
        nxt = self._next.get(key)
        if nxt is None:
            if token_id == self.vocabulary.eos_token_id:
                ok = state == FINISHED or self.automaton.is_accepting(state)
                nxt = FINISHED if ok else DEAD
            elif state == FINISHED:
                nxt = DEAD
            else:
                data = self.vocabulary.tokens[token_id]
                nxt = DEAD if not data or state == DEAD else self.automaton.walk(data, state)
            self._next[key] = nxt
        return nxt

    def is_accepting(self, state: int) -> bool:
        return self.automaton.is_accepting(state)

    @property
    def num_cached_masks(self) -> int:
        return len(self._masks)
