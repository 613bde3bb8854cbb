"""Incremental byte-level BPE training: learn merge rules from chunk ("word") frequencies.

The algorithm (Sennrich et al. 2016, byte-level as in GPT-2):

1. Count each distinct pre-tokenized chunk once: ``word_counts = {chunk_bytes: count}``.
2. Write every distinct chunk as a sequence of byte tokens. A pair ``(a, b)`` of adjacent
   tokens has count ``sum(count(word) * occurrences of (a, b) in word)``; adjacent
   positions overlap, so ``aaa`` contributes 2 to ``(a, a)``.
3. Repeat until the vocabulary is large enough or no pair is left: take the most frequent
   pair, give ``bytes(a) + bytes(b)`` a token id, and replace its occurrences, left to right
   and without overlap, in every chunk (``aaaa`` -> ``XX``, ``aaa`` -> ``Xa``).

Only step 1 reads the text. Step 3 is incremental: the chunks are stored once, as one
doubly linked list of symbols (``symbols``, ``next``, ``prev``, one weight per position), and
``where[pair]`` holds the positions at which the pair may start. Merging a pair visits only
those positions; at each real occurrence ``h a b k`` -> ``h X k`` it moves the counts of the
neighbouring pairs, ``(h, a)`` -> ``(h, X)`` and ``(b, k)`` -> ``(X, k)``, and nothing else.
The most frequent pair comes from a max-heap with lazy invalidation: an entry whose count is
no longer the pair's current count is pushed back with the current count (or dropped at 0)
when it reaches the top; a pair whose count grows gets a fresh entry. So the top entry that
agrees with the current counts is the true maximum. Positions in ``where`` that a merge made
stale are skipped when visited.

Tie-break (identical to the Hugging Face ``tokenizers`` BPE trainer, ``models/bpe/trainer.rs``:
``Merge``'s ``Ord`` compares the count, then the reversed ``(left_id, right_id)`` pair, in a
max-heap): among equally frequent pairs the one with the smallest ``(left_id, right_id)``
wins, where the ids are Hugging Face's vocabulary ids: the 256 byte tokens numbered in the
order of the code points of their byte-level characters (``bytes_unicode.py``; so ``!`` is 0
and the space, ``Ġ`` = U+0120, is 220), then the merged tokens numbered in creation order.
It is *not* the order of the token strings: two merged tokens compare by age.

A merge whose bytes equal an existing token's (``(ab, c)`` and later ``(a, bc)``) would
reuse that token's id, as Hugging Face does, so the vocabulary holds every byte string once.
(Random searches over thousands of small corpora never produced such a merge; should one
occur, Hugging Face's stale counts for already-merged pairs could make it drift from the exact
counts used here after that point.)

Cost: one pass over the distinct chunks to build the lists, then work proportional to the
occurrences that the merges actually rewrite, plus ``O(log P)`` per heap operation.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from tinyllm.tokenizers.bytes_unicode import BYTE_TO_UNICODE

# Internal token ids during training are Hugging Face's: byte tokens by the code point of their
# byte-level character, merged tokens from 256 up. _RANK_OF_BYTE[byte] is the internal id of a
# byte token and _BYTE_OF_RANK[id] its inverse; merged tokens keep their id outside training.
_BYTE_OF_RANK: tuple[int, ...] = tuple(sorted(range(256), key=lambda b: ord(BYTE_TO_UNICODE[b])))
_RANK_OF_BYTE: bytes = bytes(_BYTE_OF_RANK.index(b) for b in range(256))

# A pair (a, b) is keyed by the int (a << _SHIFT) | b: comparing keys compares (a, b).
_SHIFT = 32
_LOW = (1 << _SHIFT) - 1


@dataclass(frozen=True)
class BPETrainResult:
    """What training learned.

    merges: ``[(left_id, right_id, new_id), ...]`` in the order learned (index = merge rank);
        ids 0-255 are the single bytes; ``new_id`` may repeat when a merge rebuilds an
        existing token (see the module docstring).
    token_bytes: ``token_bytes[id]`` is the byte string of token ``id``, for ids
        0 .. 255 + number of new tokens.
    """

    merges: list[tuple[int, int, int]]
    token_bytes: list[bytes]


def hf_tie_key(token_id: int) -> int:
    """The id Hugging Face's trainer gives our token ``token_id`` (no special tokens before).

    Equal-count pairs are ordered by ``(hf_tie_key(left), hf_tie_key(right))``, smallest first.
    """
    return _RANK_OF_BYTE[token_id] if token_id < 256 else token_id


def train_bpe(word_counts: Mapping[bytes, int], num_new_tokens: int) -> BPETrainResult:
    """Learn merges from ``{chunk_bytes: count}`` until ``num_new_tokens`` new tokens exist.

    Stops early when no adjacent pair is left. Deterministic: the result does not depend on
    the iteration order of ``word_counts``.
    """
    if num_new_tokens < 0:
        raise ValueError(f"train_bpe: num_new_tokens must be >= 0, got {num_new_tokens}")

    # --- the chunks as one linked list of symbols (internal ids) -------------------------
    symbols: list[int] = []  # symbol at each position; -1 once merged into its left neighbour
    next_pos: list[int] = []  # position of the next symbol of the same chunk, -1 at the end
    prev_pos: list[int] = []  # position of the previous symbol, -1 at the start
    weight: list[int] = []  # count of the chunk that the position belongs to
    pair_counts: dict[int, int] = defaultdict(int)
    where: dict[int, set[int]] = defaultdict(set)  # pair -> positions where it may start

    for word, count in word_counts.items():
        if not isinstance(word, bytes | bytearray):
            raise TypeError(f"train_bpe: word_counts keys must be bytes, got {type(word).__name__}")
        if count <= 0 or len(word) == 0:
            continue
        start = len(symbols)
        ids = word.translate(_RANK_OF_BYTE)
        n = len(ids)
        symbols.extend(ids)
        weight.extend([count] * n)
        next_pos.extend(range(start + 1, start + n + 1))
        next_pos[-1] = -1
        prev_pos.extend(range(start - 1, start + n - 1))
        prev_pos[start] = -1
        for offset in range(n - 1):
            key = (ids[offset] << _SHIFT) | ids[offset + 1]
            pair_counts[key] += count
            where[key].add(start + offset)

    heap = [(-count, key) for key, count in pair_counts.items()]
    heapq.heapify(heap)

    token_bytes = [bytes([_BYTE_OF_RANK[i]]) for i in range(256)]  # indexed by internal id
    id_of_bytes = {data: i for i, data in enumerate(token_bytes)}
    merges: list[tuple[int, int, int]] = []
    created = 0

    while created < num_new_tokens and heap:
        negative_count, key = heapq.heappop(heap)
        count = pair_counts.get(key, 0)
        if count != -negative_count:  # stale entry: re-queue with the current count
            if count > 0:
                heapq.heappush(heap, (-count, key))
            continue

        a, b = key >> _SHIFT, key & _LOW
        merged = token_bytes[a] + token_bytes[b]
        c = id_of_bytes.get(merged)
        if c is None:
            c = len(token_bytes)
            token_bytes.append(merged)
            id_of_bytes[merged] = c
            created += 1
        merges.append((a, b, c))

        positions = where.pop(key)
        # Overlapping occurrences (a == b) must be merged left to right; otherwise the
        # occurrences are disjoint and the order does not change the net counts.
        if a == b:
            positions = sorted(positions)
        touched: set[int] = set()
        for i in positions:
            if symbols[i] != a:
                continue
            j = next_pos[i]
            if j < 0 or symbols[j] != b:
                continue
            w = weight[i]
            h = prev_pos[i]
            k = next_pos[j]
            if h >= 0:  # (x, a) -> (x, c)
                x = symbols[h]
                pair_counts[(x << _SHIFT) | a] -= w
                new_key = (x << _SHIFT) | c
                pair_counts[new_key] += w
                where[new_key].add(h)
                touched.add(new_key)
            if k >= 0:  # (b, y) -> (c, y)
                y = symbols[k]
                pair_counts[(b << _SHIFT) | y] -= w
                new_key = (c << _SHIFT) | y
                pair_counts[new_key] += w
                where[new_key].add(i)
                touched.add(new_key)
            symbols[i] = c
            symbols[j] = -1
            next_pos[i] = k
            if k >= 0:
                prev_pos[k] = i
        # Every occurrence is gone (left-to-right merging leaves no (a, b) behind).
        pair_counts.pop(key, None)
        for new_key in touched:
            count = pair_counts[new_key]
            if count > 0:
                heapq.heappush(heap, (-count, new_key))

    def external(token_id: int) -> int:
        return _BYTE_OF_RANK[token_id] if token_id < 256 else token_id

    external_merges = [(external(a), external(b), c) for a, b, c in merges]
    external_bytes = [bytes([i]) for i in range(256)] + token_bytes[256:]
    return BPETrainResult(merges=external_merges, token_bytes=external_bytes)
