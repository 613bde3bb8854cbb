"""WordPiece tokenizer for BERT: vocab.txt / tokenizer.json, [CLS]/[SEP], padding, truncation.

Encoding a text (the pipeline of Hugging Face ``tokenizers`` for BERT, which the tests hold
this to):

1. special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``, ``[MASK]`` when in the
   vocabulary) written in the raw text are cut out first and keep their ids;
2. the rest goes through BERT's basic tokenization (``bert_basic.py``: clean, CJK split,
   accent stripping and lower-casing when ``do_lower_case``, whitespace and punctuation split);
3. each word becomes WordPiece tokens by greedy longest-match-first: take the longest prefix
   that is in the vocabulary, then the longest ``##``-prefixed piece of the rest, and so on.
   A word longer than ``max_input_chars_per_word`` (100) characters, or one with a position
   where no piece matches, becomes a single ``[UNK]``: ``unaffable`` -> ``un ##aff ##able``;
4. ``[CLS] A [SEP]`` (``token_type_ids`` 0) or ``[CLS] A [SEP] B [SEP]`` (B and its ``[SEP]``
   get type 1).

Truncation follows ``transformers``' ``BertTokenizerFast`` (``encode(..., truncation=,
max_length=)``), which ignores the truncation stored in ``tokenizer.json`` (all-MiniLM-L6-v2's
says 128; the raw ``tokenizers.Tokenizer`` would apply it, ``transformers`` does not):

- ``truncation=None`` (default): truncate when ``max_length`` is given, else not (a text
  longer than ``model_max_length`` then gets a warning, as in Hugging Face: the model will
  reject it);
- ``truncation=True`` / ``"longest_first"``: truncate to ``max_length``, or to the
  tokenizer's ``model_max_length`` (512 for all-MiniLM-L6-v2, from ``tokenizer_config.json``)
  when ``max_length`` is None; neither known is an error;
- ``"only_first"`` / ``"only_second"``: cut only that text of a pair;
- ``False`` / ``"do_not_truncate"``: never (``max_length`` then only sets the padding width).

``max_length`` counts the special tokens: a single text keeps its first ``max_length - 2``
tokens; a pair shares ``L = max_length - 3`` by Hugging Face's "longest first" rule: with
``n1 <= n2`` the lengths of the shorter and the longer text (the second counts as the longer
when they are equal), if ``2 * n1 <= L`` the shorter stays whole and the longer keeps
``L - n1``; otherwise the shorter keeps ``L // 2`` and the longer ``L // 2 + L % 2``. Each
keeps its first tokens.

Padding (batches): ``"longest"`` pads to the longest row, ``"max_length"`` to ``max_length``;
pads are ``[PAD]`` with attention mask 0 and type id 0, on the right. Batches come back as
NumPy int64 arrays ``input_ids``, ``attention_mask``, ``token_type_ids`` of shape (B, T).

Decoding (Hugging Face's WordPiece decoder): drop special tokens (by default), glue ``##``
pieces to the previous token, put a space before the others, and tidy spaces before
punctuation and in English contractions (``cleanup``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tinyllm.tokenizers.bert_basic import BertBasicTokenizer
from tinyllm.tokenizers.pretokenize import compile_special_tokens, split_on_special_tokens

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")

_CLEANUPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" do not", " don't"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def read_vocab_file(path: str | Path) -> dict[str, int]:
    """``{token: line number}`` from a BERT ``vocab.txt`` (trailing whitespace stripped; a
    token listed twice keeps its last line, as in BERT and Hugging Face)."""
    path = Path(path)
    vocab: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            vocab[line.rstrip()] = index
    if not vocab:
        raise ValueError(f"read_vocab_file: {path} is empty")
    return vocab


class WordPieceTokenizer:
    """BERT's WordPiece tokenizer (module docstring for the pipeline).

    vocab: ``{token: id}``; must hold ``unk_token``, and ``cls_token`` / ``sep_token`` /
        ``pad_token`` for the features that use them.
    do_lower_case: lower-case (and, unless ``strip_accents`` says otherwise, strip accents).
    special_tokens: texts cut out of the raw text before normalization; default: those of
        unk/cls/sep/pad/mask that are in the vocabulary.
    model_max_length: the most tokens the model accepts (Hugging Face's name), used by
        ``truncation=True`` without ``max_length`` and for the too-long warning; None: unknown.
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        clean_text: bool = True,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        mask_token: str = "[MASK]",
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
        special_tokens: Iterable[str] | None = None,
        model_max_length: int | None = None,
    ) -> None:
        if not isinstance(vocab, Mapping) or not vocab:
            raise ValueError("WordPieceTokenizer: vocab must be a non-empty mapping {token: id}")
        for token, token_id in vocab.items():
            if not isinstance(token, str):
                raise ValueError(f"WordPieceTokenizer: vocab token {token!r} is not a string")
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise ValueError(
                    f"WordPieceTokenizer: vocab id of {token!r} must be a non-negative int, "
                    f"got {token_id!r}"
                )
        if unk_token not in vocab:
            raise ValueError(f"WordPieceTokenizer: unk_token {unk_token!r} is not in the vocab")
        if max_input_chars_per_word < 1:
            raise ValueError(
                "WordPieceTokenizer: max_input_chars_per_word must be >= 1, got "
                f"{max_input_chars_per_word}"
            )
        if model_max_length is not None and (
            isinstance(model_max_length, bool)
            or not isinstance(model_max_length, int)
            or model_max_length < 1
        ):
            raise ValueError(
                "WordPieceTokenizer: model_max_length must be a positive int or None, got "
                f"{model_max_length!r}"
            )
        self.model_max_length = model_max_length
        self.vocab: dict[str, int] = dict(vocab)
        self.id_to_token_map: dict[int, str] = {i: t for t, i in self.vocab.items()}
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        self.prefix = continuing_subword_prefix
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        self.basic = BertBasicTokenizer(
            lowercase=do_lower_case,
            strip_accents=strip_accents,
            clean_text=clean_text,
            handle_chinese_chars=tokenize_chinese_chars,
        )
        if special_tokens is None:
            named = (unk_token, cls_token, sep_token, pad_token, mask_token)
            special_tokens = [token for token in named if token in self.vocab]
        self.special_tokens: list[str] = list(dict.fromkeys(special_tokens))
        for token in self.special_tokens:
            if token not in self.vocab:
                raise ValueError(f"WordPieceTokenizer: special token {token!r} is not in vocab")
        self.special_ids: frozenset[int] = frozenset(self.vocab[t] for t in self.special_tokens)
        self._special_regex = compile_special_tokens(self.special_tokens)
        self._word_cache: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_vocab_file(cls, path: str | Path, **options) -> WordPieceTokenizer:
        """From a BERT ``vocab.txt``; ``options`` go to the constructor."""
        return cls(read_vocab_file(path), **options)

    @classmethod
    def from_tokenizer_json(
        cls, path: str | Path, model_max_length: int | None = None
    ) -> WordPieceTokenizer:
        """From a Hugging Face ``tokenizer.json`` with a WordPiece model and BertNormalizer
        (its truncation/padding settings are not used, as in ``transformers``: pass them per
        call; ``model_max_length`` lives in ``tokenizer_config.json``, so it is an argument)."""
        path = Path(path)
        where = f"WordPieceTokenizer.from_tokenizer_json: {path}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not valid JSON: {error}") from None
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or model.get("type") != "WordPiece":
            raise ValueError(f"{where}: 'model' must be a WordPiece model")
        if not isinstance(model.get("vocab"), dict):
            raise ValueError(f"{where}: 'model.vocab' must be an object {{token: id}}")
        normalizer = data.get("normalizer") or {}
        if normalizer and normalizer.get("type") != "BertNormalizer":
            raise ValueError(
                f"{where}: only a BertNormalizer is supported, got {normalizer.get('type')!r}"
            )
        added = [t["content"] for t in data.get("added_tokens") or [] if t.get("special")]
        return cls(
            model["vocab"],
            do_lower_case=normalizer.get("lowercase", True),
            strip_accents=normalizer.get("strip_accents"),
            tokenize_chinese_chars=normalizer.get("handle_chinese_chars", True),
            clean_text=normalizer.get("clean_text", True),
            unk_token=model.get("unk_token", "[UNK]"),
            continuing_subword_prefix=model.get("continuing_subword_prefix", "##"),
            max_input_chars_per_word=model.get("max_input_chars_per_word", 100),
            special_tokens=added or None,
            model_max_length=model_max_length,
        )

    @classmethod
    def from_file(cls, path: str | Path, **options) -> WordPieceTokenizer:
        """``tokenizer.json`` (by suffix ``.json``) or ``vocab.txt``."""
        if Path(path).suffix == ".json":
            if options:
                raise ValueError("WordPieceTokenizer.from_file: options apply to vocab.txt only")
            return cls.from_tokenizer_json(path)
        return cls.from_vocab_file(path, **options)

    # ------------------------------------------------------------------ tokens
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int:
        """The id of ``token`` (the ``[UNK]`` id when unknown)."""
        return self.vocab.get(token, self.vocab[self.unk_token])

    def id_to_token(self, token_id: int) -> str:
        try:
            return self.id_to_token_map[int(token_id)]
        except KeyError:
            raise ValueError(
                f"WordPieceTokenizer.id_to_token: id {token_id} is not in the vocabulary"
            ) from None

    def wordpiece(self, word: str) -> tuple[str, ...]:
        """Greedy longest-match-first split of one normalized word (``(unk_token,)`` when it
        is too long or cannot be covered)."""
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        vocab, prefix = self.vocab, self.prefix
        pieces: list[str] = []
        if len(word) > self.max_input_chars_per_word:
            pieces = [self.unk_token]
        elif word in vocab:
            pieces = [word]
        else:
            start = 0
            while start < len(word):
                end = len(word)
                piece = None
                while start < end:
                    candidate = word[start:end] if start == 0 else prefix + word[start:end]
                    if candidate in vocab:
                        piece = candidate
                        break
                    end -= 1
                if piece is None:
                    pieces = [self.unk_token]
                    break
                pieces.append(piece)
                start = end
        result = tuple(pieces)
        if len(self._word_cache) < 1 << 17:
            self._word_cache[word] = result
        return result

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` (special tokens written in it kept), no [CLS]/[SEP]."""
        if not isinstance(text, str):
            raise TypeError(
                f"WordPieceTokenizer.tokenize: text must be a str, got {type(text).__name__}"
            )
        tokens: list[str] = []
        for piece, is_special in split_on_special_tokens(text, self._special_regex):
            if is_special:
                tokens.append(piece)
                continue
            for word in self.basic(piece):
                tokens.extend(self.wordpiece(word))
        return tokens

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.token_to_id(token) for token in tokens]

    # ------------------------------------------------------------------ encoding
    def _special_id(self, token: str, argument: str) -> int:
        if token not in self.vocab:
            raise ValueError(f"WordPieceTokenizer.{argument}: {token!r} is not in the vocabulary")
        return self.vocab[token]

    def _truncation(self, truncation, max_length: int | None) -> tuple[str, int | None]:
        """(strategy, length) of an ``encode`` call's ``truncation`` and ``max_length``."""
        if truncation is None:
            strategy = "do_not_truncate" if max_length is None else "longest_first"
        elif truncation is True:
            strategy = "longest_first"
        elif truncation is False:
            strategy = "do_not_truncate"
        elif isinstance(truncation, str) and truncation in TRUNCATION_STRATEGIES:
            strategy = truncation
        else:
            raise ValueError(
                "WordPieceTokenizer.encode: truncation must be None, a bool or one of "
                f"{TRUNCATION_STRATEGIES}, got {truncation!r}"
            )
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))
        ):
            raise ValueError(
                f"WordPieceTokenizer.encode: max_length must be an int or None, got {max_length!r}"
            )
        if strategy == "do_not_truncate":
            return strategy, None
        if max_length is None:
            if self.model_max_length is None:
                raise ValueError(
                    f"WordPieceTokenizer.encode: truncation={truncation!r} needs max_length "
                    "(this tokenizer has no model_max_length)"
                )
            max_length = self.model_max_length
        return strategy, int(max_length)

    def encode_with_types(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool | str | None = None,
    ) -> tuple[list[int], list[int]]:
        """``(input_ids, token_type_ids)`` of one text or pair, truncated as ``truncation`` and
        ``max_length`` say (module docstring: as Hugging Face's ``BertTokenizerFast``)."""
        strategy, max_length = self._truncation(truncation, max_length)
        first = self.convert_tokens_to_ids(self.tokenize(text))
        second = None if text_pair is None else self.convert_tokens_to_ids(self.tokenize(text_pair))
        added = (2 if second is None else 3) if add_special_tokens else 0
        if max_length is not None:
            if max_length < added or max_length < 1:
                raise ValueError(
                    f"WordPieceTokenizer.encode: max_length={max_length} leaves no room for "
                    f"the {added} special tokens"
                )
            budget = max_length - added
            if second is None:
                if strategy == "only_second":
                    raise ValueError(
                        "WordPieceTokenizer.encode: truncation='only_second' needs a text_pair"
                    )
                first = first[:budget]
            elif strategy == "longest_first":
                keep_first, keep_second = truncate_pair_lengths(len(first), len(second), budget)
                first, second = first[:keep_first], second[:keep_second]
            else:
                cut, other = (first, second) if strategy == "only_first" else (second, first)
                keep = budget - len(other)
                if keep < 0:
                    raise ValueError(
                        f"WordPieceTokenizer.encode: truncation={strategy!r} with "
                        f"max_length={max_length}: the other text alone has {len(other)} "
                        f"tokens (+{added} special), more than max_length"
                    )
                cut = cut[:keep]
                first, second = (cut, other) if strategy == "only_first" else (other, cut)
        else:
            total = len(first) + len(second or []) + added
            if self.model_max_length is not None and total > self.model_max_length:
                warnings.warn(
                    f"WordPieceTokenizer.encode: {total} tokens, more than model_max_length "
                    f"{self.model_max_length}; the model will reject them: pass truncation=True "
                    "or max_length=",
                    stacklevel=3,
                )
        if not add_special_tokens:
            ids = first + (second or [])
            types = [0] * len(first) + [1] * len(second or [])
            return ids, types
        cls_id = self._special_id(self.cls_token, "encode")
        sep_id = self._special_id(self.sep_token, "encode")
        ids = [cls_id, *first, sep_id]
        types = [0] * len(ids)
        if second is not None:
            ids += [*second, sep_id]
            types += [1] * (len(second) + 1)
        return ids, types

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool | str | None = None,
    ) -> list[int]:
        """Token ids: ``[CLS] text [SEP] (text_pair [SEP])``; truncated to ``max_length`` when
        given (or to ``model_max_length`` with ``truncation=True``), as Hugging Face does."""
        return self.encode_with_types(text, text_pair, add_special_tokens, max_length, truncation)[
            0
        ]

    def encode_batch(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        padding: str = "longest",
        truncation: bool | str | None = None,
    ) -> dict[str, np.ndarray]:
        """Encode a batch into int64 arrays ``input_ids``, ``attention_mask``,
        ``token_type_ids``, each (B, T).

        padding: ``"longest"`` (pad to the longest row) or ``"max_length"`` (pad to
        ``max_length``, which must be given). truncation: as in :meth:`encode`.
        """
        if isinstance(texts, str):
            raise TypeError("WordPieceTokenizer.encode_batch: texts must be a list of str")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(
                f"WordPieceTokenizer.encode_batch: {len(texts)} texts but "
                f"{len(text_pairs)} text_pairs"
            )
        if padding not in ("longest", "max_length"):
            raise ValueError(
                "WordPieceTokenizer.encode_batch: padding must be 'longest' or 'max_length', "
                f"got {padding!r}"
            )
        if padding == "max_length" and max_length is None:
            raise ValueError(
                "WordPieceTokenizer.encode_batch: padding='max_length' needs max_length"
            )
        rows = [
            self.encode_with_types(
                text,
                None if text_pairs is None else text_pairs[i],
                add_special_tokens,
                max_length,
                truncation,
            )
            for i, text in enumerate(texts)
        ]
        B = len(rows)
        T = max_length if padding == "max_length" else max((len(ids) for ids, _ in rows), default=0)
        for b, (ids, _) in enumerate(rows):
            if len(ids) > T:
                raise ValueError(
                    f"WordPieceTokenizer.encode_batch: row {b} has {len(ids)} tokens, more than "
                    f"max_length={T} with padding='max_length' and truncation={truncation!r}"
                )
        pad_id = (
            self._special_id(self.pad_token, "encode_batch")
            if any(len(ids) < T for ids, _ in rows)
            else 0
        )
        input_ids = np.full((B, T), pad_id, dtype=np.int64)
        attention_mask = np.zeros((B, T), dtype=np.int64)
        token_type_ids = np.zeros((B, T), dtype=np.int64)
        for b, (ids, types) in enumerate(rows):
            input_ids[b, : len(ids)] = ids
            attention_mask[b, : len(ids)] = 1
            token_type_ids[b, : len(types)] = types
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }

    def __call__(self, texts: str | Sequence[str], **options) -> dict[str, np.ndarray]:
        """:meth:`encode_batch`; a single string is a batch of one."""
        return self.encode_batch([texts] if isinstance(texts, str) else texts, **options)

    # ------------------------------------------------------------------ decoding
    def decode(
        self, ids: Iterable[int], skip_special_tokens: bool = True, cleanup: bool = True
    ) -> str:
        """Text of ``ids``: ``##`` pieces glued on, spaces elsewhere, specials skipped."""
        tokens = [
            self.id_to_token(token_id)
            for token_id in ids
            if not (skip_special_tokens and int(token_id) in self.special_ids)
        ]
        parts: list[str] = []
        for i, token in enumerate(tokens):
            if i > 0:
                token = token[len(self.prefix) :] if token.startswith(self.prefix) else " " + token
            if cleanup:
                for dirty, clean in _CLEANUPS:
                    token = token.replace(dirty, clean)
            parts.append(token)
        return "".join(parts)

    def __repr__(self) -> str:
        return (
            f"WordPieceTokenizer(vocab_size={self.vocab_size}, "
            f"do_lower_case={self.basic.lowercase}, special_tokens={self.special_tokens})"
        )


def truncate_pair_lengths(n_first: int, n_second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text a pair keeps within ``budget`` (Hugging Face's "longest
    first"; see the module docstring)."""
    if n_first + n_second <= budget:
        return n_first, n_second
    swap = n_first > n_second
    short, long = (n_second, n_first) if swap else (n_first, n_second)
    if 2 * short <= budget:
        keep_short, keep_long = short, budget - short
    else:
        keep_short, keep_long = budget // 2, budget // 2 + budget % 2
    return (keep_long, keep_short) if swap else (keep_short, keep_long)
