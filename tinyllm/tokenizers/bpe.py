"""Byte-level BPE tokenizer (GPT-2 style): train, encode, decode, save, load.

Vocabulary: ids 0-255 are the single bytes (id = byte value); merged tokens follow in the
order training created them; special tokens (``<|endoftext|>``) come last. Every byte string
appears once, so the tokenizer is a bijection between ids and byte strings.

Encoding ``text``:

1. cut out the allowed special tokens (``allowed_special``);
2. cut the rest into chunks with the pre-tokenization expression (``pretokenize.py``);
3. write each chunk as its UTF-8 bytes and apply merges: repeatedly merge the adjacent pair
   with the lowest merge rank, leftmost first, until no adjacent pair is a merge rule (the
   Hugging Face BPE model's rule; with a vocabulary in which every merge makes a new token
   it equals minbpe's "merge every occurrence of the best pair" and tiktoken's
   lowest-rank-bytes rule). Results are cached per chunk, so repeated words cost one dict
   lookup.

Decoding concatenates the tokens' bytes and decodes them as UTF-8 with ``errors="replace"``:
an id sequence that cuts a multi-byte character (any prefix of an encoding may) gives U+FFFD
instead of raising. ``decode_bytes`` returns the raw bytes.

Training (:meth:`BPETokenizer.train`) counts chunks once and learns merges incrementally with
Hugging Face's tie-break; see ``bpe_trainer.py``.

Files (:meth:`save` / :meth:`load`) are JSON, readable by eye: token strings use GPT-2's
byte-to-character table (``Ġthe`` is `` the``), merges are ``"left right"`` strings in rank
order, as in Hugging Face ``tokenizer.json`` / ``merges.txt``.

Example::

    >>> tok = BPETokenizer.train("low lower lowest " * 50, vocab_size=270)
    >>> tok.decode(tok.encode("lowest low"))
    'lowest low'
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from tinyllm.tokenizers.bpe_trainer import train_bpe
from tinyllm.tokenizers.bytes_unicode import bytes_to_token_string, token_string_to_bytes
from tinyllm.tokenizers.pretokenize import (
    GPT2_PATTERN,
    compile_pattern,
    compile_special_tokens,
    pretokenize,
    split_on_special_tokens,
)

FILE_TYPE = "tinyllm.BPETokenizer"
FILE_VERSION = 1

# Chunks longer than this (in bytes) are merged with a heap instead of rescanning all pairs.
_LONG_CHUNK = 48
# The per-chunk cache is cleared when it holds this many chunks.
_CACHE_LIMIT = 1 << 17
_NO_RANK = 1 << 62


class BPETokenizer:
    """A byte-level BPE tokenizer.

    Build one with :meth:`train`, :meth:`load`, or the constructor:

    vocab: ``{id: token_bytes}`` for the ordinary tokens; must contain all 256 single bytes,
        every byte string at most once.
    merges: ``[(left_id, right_id), ...]`` in rank order; ``vocab[left] + vocab[right]``
        must be in ``vocab`` (that token is the merge's result).
    pattern: the pre-tokenization expression (``regex`` syntax); None disables
        pre-tokenization (merges may then cross spaces and punctuation).
    special_tokens: ``{text: id}``; ids must not collide with ``vocab``.
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[int, int]],
        pattern: str | None = GPT2_PATTERN,
        special_tokens: Mapping[str, int] | None = None,
    ) -> None:
        self.vocab: dict[int, bytes] = _check_vocab(vocab)
        self.pattern: str | None = pattern
        self._compiled = compile_pattern(pattern)
        id_of_bytes = {data: token_id for token_id, data in self.vocab.items()}
        self._byte_ids: list[int] = [id_of_bytes[bytes([b])] for b in range(256)]
        self._bytes_are_ids = self._byte_ids == list(range(256))

        # merge rule (left, right) -> (rank, result id); the first rule for a pair wins
        self.merges: list[tuple[int, int]] = []
        self._merge_rank: dict[tuple[int, int], int] = {}
        self._merge_result: dict[tuple[int, int], int] = {}
        for rank, merge in enumerate(merges):
            if len(merge) != 2:
                raise ValueError(
                    f"BPETokenizer: merge {rank} must be a (left_id, right_id) pair, got {merge!r}"
                )
            left, right = int(merge[0]), int(merge[1])
            if left not in self.vocab or right not in self.vocab:
                raise ValueError(
                    f"BPETokenizer: merge {rank} ({left}, {right}) uses an id not in the vocab"
                )
            result = id_of_bytes.get(self.vocab[left] + self.vocab[right])
            if result is None:
                raise ValueError(
                    f"BPETokenizer: merge {rank} ({left}, {right}) makes "
                    f"{self.vocab[left] + self.vocab[right]!r}, which is not in the vocab"
                )
            self.merges.append((left, right))
            if (left, right) not in self._merge_rank:
                self._merge_rank[left, right] = rank
                self._merge_result[left, right] = result

        self.special_tokens: dict[str, int] = _check_special_tokens(special_tokens, self.vocab)
        self._decoder: dict[int, bytes] = dict(self.vocab)
        for text, token_id in self.special_tokens.items():
            self._decoder[token_id] = text.encode("utf-8")
        self._special_all = compile_special_tokens(self.special_tokens)
        self._cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        text_or_iterator: str | Iterable[str],
        vocab_size: int,
        pattern: str | None = GPT2_PATTERN,
        special_tokens: Sequence[str] = (),
    ) -> BPETokenizer:
        """Train a tokenizer with ``vocab_size`` tokens in all.

        text_or_iterator: one text, or an iterable of texts (documents); no chunk spans two
            documents.
        vocab_size: 256 byte tokens + the merged tokens + ``len(special_tokens)`` (Hugging
            Face's convention). Training stops earlier when no adjacent pair is left.
        pattern: pre-tokenization expression; None trains on whole documents.
        special_tokens: texts that get their own ids after the merged tokens; their
            occurrences in the training text are cut out and never merged with anything.
        """
        specials = list(dict.fromkeys(special_tokens))
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(
                f"BPETokenizer.train: vocab_size must be an int, got {type(vocab_size).__name__}"
            )
        if vocab_size < 256 + len(specials):
            raise ValueError(
                f"BPETokenizer.train: vocab_size must be >= 256 + len(special_tokens) = "
                f"{256 + len(specials)}, got {vocab_size}"
            )
        compiled = compile_pattern(pattern)
        special_regex = compile_special_tokens(specials)
        documents = [text_or_iterator] if isinstance(text_or_iterator, str) else text_or_iterator

        chunk_counts: Counter[str] = Counter()
        for index, document in enumerate(documents):
            if not isinstance(document, str):
                raise TypeError(
                    f"BPETokenizer.train: text_or_iterator must be a str or yield str; item "
                    f"{index} is {type(document).__name__}"
                )
            for piece, is_special in split_on_special_tokens(document, special_regex):
                if not is_special:
                    chunk_counts.update(pretokenize(piece, compiled))
        word_counts = {chunk.encode("utf-8"): count for chunk, count in chunk_counts.items()}

        result = train_bpe(word_counts, vocab_size - 256 - len(specials))
        vocab = dict(enumerate(result.token_bytes))
        merges = [(left, right) for left, right, _ in result.merges]
        first_special = len(result.token_bytes)
        special_ids = {text: first_special + i for i, text in enumerate(specials)}
        return cls(vocab, merges, pattern=pattern, special_tokens=special_ids)

    # ------------------------------------------------------------------ encoding
    @property
    def vocab_size(self) -> int:
        """Number of ids: ordinary tokens plus special tokens."""
        return len(self._decoder)

    def encode(self, text: str, allowed_special: str | Collection[str] = "none_raise") -> list[int]:
        """Token ids of ``text``.

        allowed_special: which special tokens in ``text`` become their special id:
            ``"all"``; ``"none"`` (all are encoded as ordinary text); ``"none_raise"``
            (default: like ``"none"``, but raise ValueError if ``text`` contains one, as
            tiktoken does); or a collection of special token texts (the others are encoded
            as ordinary text).
        """
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode: text must be a str, got {type(text).__name__}")
        special_regex = self._special_regex(text, allowed_special)
        if special_regex is None:
            return self._encode_ordinary(text)
        ids: list[int] = []
        for piece, is_special in split_on_special_tokens(text, special_regex):
            if is_special:
                ids.append(self.special_tokens[piece])
            else:
                ids.extend(self._encode_ordinary(piece))
        return ids

    def encode_batch(
        self, texts: Iterable[str], allowed_special: str | Collection[str] = "none_raise"
    ) -> list[list[int]]:
        """:meth:`encode` of each text (sharing the chunk cache)."""
        return [self.encode(text, allowed_special=allowed_special) for text in texts]

    def _special_regex(self, text: str, allowed_special: str | Collection[str]):
        if allowed_special == "all":
            return self._special_all
        if allowed_special == "none":
            return None
        if allowed_special == "none_raise":
            for token in self.special_tokens:
                if token in text:
                    raise ValueError(
                        f"BPETokenizer.encode: text contains the special token {token!r}; pass "
                        "allowed_special='all' (or a set holding it) to encode it as a special "
                        "token, or allowed_special='none' to encode it as ordinary text"
                    )
            return None
        if isinstance(allowed_special, str):
            raise ValueError(
                "BPETokenizer.encode: allowed_special must be 'all', 'none', 'none_raise' or a "
                f"collection of special tokens, got {allowed_special!r}"
            )
        allowed = set(allowed_special)
        unknown = allowed - self.special_tokens.keys()
        if unknown:
            raise ValueError(
                f"BPETokenizer.encode: allowed_special names unknown special tokens "
                f"{sorted(unknown)!r}"
            )
        return compile_special_tokens(allowed)

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        for chunk in pretokenize(text, self._compiled):
            cached = cache.get(chunk)
            if cached is None:
                cached = tuple(self._encode_chunk(chunk.encode("utf-8")))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[chunk] = cached
            ids.extend(cached)
        return ids

    def _encode_chunk(self, data: bytes) -> list[int]:
        ids = list(data) if self._bytes_are_ids else [self._byte_ids[b] for b in data]
        if len(ids) < 2:
            return ids
        if len(ids) > _LONG_CHUNK:
            return self._encode_long_chunk(ids)
        rank_of = self._merge_rank.get
        while True:
            pairs = list(zip(ids, ids[1:]))
            ranks = [rank_of(pair, _NO_RANK) for pair in pairs]
            best = min(ranks)
            if best == _NO_RANK:
                return ids
            i = ranks.index(best)  # leftmost occurrence of the lowest rank
            ids[i : i + 2] = [self._merge_result[pairs[i]]]
            if len(ids) < 2:
                return ids

    def _encode_long_chunk(self, ids: list[int]) -> list[int]:
        """Same rule as the short path, O(n log n): a heap of (rank, position) over a linked
        list of symbols; a popped entry is skipped if its position no longer holds its pair."""
        n = len(ids)
        symbols = list(ids)
        next_pos = list(range(1, n + 1))
        next_pos[-1] = -1
        prev_pos = list(range(-1, n - 1))
        rank_of = self._merge_rank.get
        heap = []
        for i in range(n - 1):
            rank = rank_of((symbols[i], symbols[i + 1]))
            if rank is not None:
                heap.append((rank, i))
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = next_pos[i]
            if symbols[i] < 0 or j < 0:
                continue
            pair = (symbols[i], symbols[j])
            if rank_of(pair) != rank:
                continue
            merged = self._merge_result[pair]
            symbols[i] = merged
            symbols[j] = -1
            k = next_pos[j]
            next_pos[i] = k
            if k >= 0:
                prev_pos[k] = i
                right_rank = rank_of((merged, symbols[k]))
                if right_rank is not None:
                    heapq.heappush(heap, (right_rank, i))
            h = prev_pos[i]
            if h >= 0:
                left_rank = rank_of((symbols[h], merged))
                if left_rank is not None:
                    heapq.heappush(heap, (left_rank, h))
        return [s for s in symbols if s >= 0]

    # ------------------------------------------------------------------ decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes that ``ids`` stand for (special tokens as their UTF-8 text)."""
        decoder = self._decoder
        ids = list(ids)
        try:
            return b"".join([decoder[token_id] for token_id in ids])
        except (KeyError, TypeError):
            bad = next(t for t in ids if not _hashable(t) or t not in decoder)
            raise ValueError(
                f"BPETokenizer.decode: id {bad!r} is not in the vocabulary (size {self.vocab_size})"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; byte sequences that are not valid UTF-8 (a token list cut
        inside a character) decode to U+FFFD (``errors="replace"``)."""
        return self.decode_bytes(list(ids)).decode("utf-8", errors="replace")

    def id_to_bytes(self, token_id: int) -> bytes:
        """The bytes of one token."""
        return self.decode_bytes([token_id])

    def mergeable_ranks(self) -> dict[bytes, int]:
        """``{token_bytes: id}`` for the ordinary tokens, the form ``tiktoken.Encoding``
        takes as ``mergeable_ranks``."""
        return {data: token_id for token_id, data in self.vocab.items()}

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """The JSON-ready description that :meth:`save` writes."""
        names = {token_id: bytes_to_token_string(data) for token_id, data in self.vocab.items()}
        return {
            "type": FILE_TYPE,
            "version": FILE_VERSION,
            "pattern": self.pattern,
            "special_tokens": dict(sorted(self.special_tokens.items(), key=lambda kv: kv[1])),
            "vocab": {names[token_id]: token_id for token_id in sorted(self.vocab)},
            "merges": [f"{names[left]} {names[right]}" for left, right in self.merges],
        }

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as human-readable JSON (UTF-8)."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: object, source: str = "data") -> BPETokenizer:
        """Build a tokenizer from :meth:`to_dict`'s output; ValueError names what is wrong."""
        where = f"BPETokenizer.load: {source}"
        if not isinstance(data, dict):
            raise ValueError(f"{where}: top level must be a JSON object")
        missing = [key for key in ("type", "vocab", "merges") if key not in data]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        if data["type"] != FILE_TYPE:
            raise ValueError(f"{where}: 'type' must be {FILE_TYPE!r}, got {data['type']!r}")
        version = data.get("version", FILE_VERSION)
        if version != FILE_VERSION:
            raise ValueError(f"{where}: unsupported 'version' {version!r} (expected 1)")
        pattern = data.get("pattern", GPT2_PATTERN)
        if pattern is not None and not isinstance(pattern, str):
            raise ValueError(f"{where}: 'pattern' must be a string or null")

        raw_vocab = data["vocab"]
        if not isinstance(raw_vocab, dict):
            raise ValueError(f"{where}: 'vocab' must be an object {{token: id}}")
        vocab: dict[int, bytes] = {}
        id_of_name: dict[str, int] = {}
        for name, token_id in raw_vocab.items():
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise ValueError(
                    f"{where}: vocab id of {name!r} must be a non-negative int, got {token_id!r}"
                )
            try:
                token = token_string_to_bytes(name)
            except ValueError:
                raise ValueError(
                    f"{where}: vocab token {name!r} is not a byte-level token string"
                ) from None
            if not token:
                raise ValueError(f"{where}: vocab contains the empty token")
            if token_id in vocab:
                raise ValueError(f"{where}: vocab id {token_id} is used twice")
            vocab[token_id] = token
            id_of_name[name] = token_id

        raw_merges = data["merges"]
        if not isinstance(raw_merges, list):
            raise ValueError(f"{where}: 'merges' must be a list")
        merges: list[tuple[int, int]] = []
        for rank, merge in enumerate(raw_merges):
            if isinstance(merge, str):
                parts = merge.split(" ")
            elif isinstance(merge, list):
                parts = merge
            else:
                parts = None
            if (
                parts is None
                or len(parts) != 2
                or not all(isinstance(part, str) and part for part in parts)
            ):
                raise ValueError(
                    f"{where}: merge {rank} must be 'left right' (two tokens, one space), "
                    f"got {merge!r}"
                )
            for part in parts:
                if part not in id_of_name:
                    raise ValueError(f"{where}: merge {rank} {merge!r}: {part!r} is not in vocab")
            if parts[0] + parts[1] not in id_of_name:
                raise ValueError(
                    f"{where}: merge {rank} {merge!r}: result {parts[0] + parts[1]!r} is not in "
                    "vocab"
                )
            merges.append((id_of_name[parts[0]], id_of_name[parts[1]]))

        specials = data.get("special_tokens", {})
        if not isinstance(specials, dict):
            raise ValueError(f"{where}: 'special_tokens' must be an object {{text: id}}")
        try:
            return cls(vocab, merges, pattern=pattern, special_tokens=specials)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a file written by :meth:`save`. Raises ValueError naming the problem when
        the file is not valid JSON or does not describe a tokenizer."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"BPETokenizer.load: {path} is not UTF-8 text: {error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"BPETokenizer.load: {path} is not valid JSON: {error}") from None
        return cls.from_dict(data, source=str(path))

    def __repr__(self) -> str:
        pattern = "None" if self.pattern is None else "set"
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={len(self.special_tokens)}, pattern={pattern})"
        )


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _check_vocab(vocab: Mapping[int, bytes]) -> dict[int, bytes]:
    if not isinstance(vocab, Mapping):
        raise TypeError(
            f"BPETokenizer: vocab must be a mapping {{id: bytes}}, got {type(vocab).__name__}"
        )
    checked: dict[int, bytes] = {}
    seen: dict[bytes, int] = {}
    for token_id, data in vocab.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise ValueError(f"BPETokenizer: vocab id {token_id!r} must be a non-negative int")
        if not isinstance(data, bytes | bytearray) or not data:
            raise ValueError(f"BPETokenizer: vocab[{token_id}] must be non-empty bytes")
        data = bytes(data)
        if data in seen:
            raise ValueError(
                f"BPETokenizer: vocab ids {seen[data]} and {token_id} both stand for {data!r}"
            )
        seen[data] = token_id
        checked[token_id] = data
    missing = [b for b in range(256) if bytes([b]) not in seen]
    if missing:
        raise ValueError(
            f"BPETokenizer: vocab must contain all 256 single bytes; missing {len(missing)}, "
            f"e.g. byte {missing[0]}"
        )
    return checked


def _check_special_tokens(
    special_tokens: Mapping[str, int] | None, vocab: Mapping[int, bytes]
) -> dict[str, int]:
    if special_tokens is None:
        return {}
    if not isinstance(special_tokens, Mapping):
        raise TypeError("BPETokenizer: special_tokens must be a mapping {text: id}")
    checked: dict[str, int] = {}
    used: set[int] = set()
    for text, token_id in special_tokens.items():
        if not isinstance(text, str) or not text:
            raise ValueError(f"BPETokenizer: special token {text!r} must be a non-empty string")
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise ValueError(
                f"BPETokenizer: special token {text!r} has id {token_id!r}; it must be a "
                "non-negative int"
            )
        if token_id in vocab or token_id in used:
            raise ValueError(
                f"BPETokenizer: special token {text!r} has id {token_id}, which is already used"
            )
        used.add(token_id)
        checked[text] = token_id
    return checked
