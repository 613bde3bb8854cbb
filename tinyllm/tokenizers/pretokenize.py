"""Pre-tokenization: cut text into chunks ("words") that BPE merges never cross.

Byte-level BPE does not merge across the boundaries that a regular expression draws first.
GPT-2's expression (openai/gpt-2 ``src/encoder.py``) keeps English contractions, runs of
letters, runs of digits and runs of other symbols apart, each optionally led by one space,
and leaves runs of whitespace on their own (``\\s+(?!\\S)`` gives all but the last space of
a run, so the last one can lead the next word)::

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

``\\p{L}`` and ``\\p{N}`` need the third-party ``regex`` module; the standard ``re`` module
has no Unicode property classes. GPT-4's ``cl100k_base`` expression is provided as well.

Special tokens (``<|endoftext|>``) are cut out *before* the expression runs, so the
expression can never split them: :func:`split_on_special_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import regex

# GPT-2 / r50k (also the Hugging Face ByteLevel pre-tokenizer's expression).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# GPT-4 / cl100k_base (tiktoken_ext/openai_public.py).
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


def compile_pattern(pattern: str | None) -> regex.Pattern | None:
    """Compile a pre-tokenization expression with the ``regex`` module (None stays None)."""
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(
            f"compile_pattern: pattern must be a str or None, got {type(pattern).__name__}"
        )
    try:
        return regex.compile(pattern)
    except regex.error as error:
        raise ValueError(f"compile_pattern: invalid pattern {pattern!r}: {error}") from None


def pretokenize(text: str, compiled: regex.Pattern | None) -> list[str]:
    """The chunks of ``text``: every match of ``compiled``, in order; ``[text]`` when None.

    With GPT-2's expression the matches tile the text (their concatenation is ``text``).
    """
    if compiled is None:
        return [text] if text else []
    return compiled.findall(text)


def compile_special_tokens(special_tokens: Iterable[str]) -> re.Pattern | None:
    """An expression that matches any of ``special_tokens``, longest first (None if empty).

    Longest first, so that of two special tokens where one is a prefix of the other the
    longer one wins, as with the leftmost-longest matching that tiktoken and Hugging Face use.
    """
    tokens = sorted(set(special_tokens), key=lambda token: (-len(token), token))
    if not tokens:
        return None
    if any(not token for token in tokens):
        raise ValueError("compile_special_tokens: a special token must not be empty")
    return re.compile("|".join(re.escape(token) for token in tokens))


def split_on_special_tokens(text: str, compiled: re.Pattern | None) -> list[tuple[str, bool]]:
    """Cut ``text`` at special tokens: ``[(piece, is_special), ...]`` in order.

    Empty ordinary pieces are dropped; concatenating the pieces gives ``text`` back.
    """
    if compiled is None:
        return [(text, False)] if text else []
    pieces: list[tuple[str, bool]] = []
    start = 0
    for match in compiled.finditer(text):
        if match.start() > start:
            pieces.append((text[start : match.start()], False))
        pieces.append((match.group(), True))
        start = match.end()
    if start < len(text):
        pieces.append((text[start:], False))
    return pieces
