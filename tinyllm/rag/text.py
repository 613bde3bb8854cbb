"""Plain-text helpers for lexical retrieval: tokenizers, stop words, sentence splitter.

``tokenize`` lower-cases and splits on the regular expression ``\\w+`` (runs of letters,
digits and underscores), so "Dict.get(key)" -> ["dict", "get", "key"]. It does no stemming:
the same function must tokenize documents and queries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"\w+")
# Python's operator symbols, longest first; a - or / between two word characters is a hyphen
# or a slash of prose ("user-defined", "try/finally"), not an operator
OPERATOR = re.compile(
    r"\*\*=?|//=?|>>=?|<<=?|->|:=|\.\.\.|[-+*/%@&|^]=|[<>!=]=|(?<!\w)[-/]|[-/](?!\w)|[+*%@&|^~<>=]"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n\s*\n")

# a small English stop-word list (function words only)
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    may might must shall""".split()
)


def tokenize(text: str, stopwords: Iterable[str] | None = None) -> list[str]:
    """Lower-cased ``\\w+`` tokens of ``text``, without the given stop words."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize: text must be a str, got {type(text).__name__}")
    tokens = _WORD.findall(text.lower())
    if stopwords is None:
        return tokens
    stop = stopwords if isinstance(stopwords, (set, frozenset)) else frozenset(stopwords)
    return [token for token in tokens if token not in stop]


def operator_tokens(text: str) -> list[str]:
    """Python's operator symbols in ``text``, in order: "x <<= 2 & y" -> ["<<=", "&"]; the
    word tokenizer drops them, so a lexical index over these finds "1.5 << 2"."""
    if not isinstance(text, str):
        raise TypeError(f"operator_tokens: text must be a str, got {type(text).__name__}")
    return OPERATOR.findall(text)


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences: after . ! ? followed by space and a capital/digit/quote,
    and at blank lines. Whitespace inside a sentence is kept; empty pieces are dropped."""
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece and piece.strip()]


def count_words(text: str) -> int:
    """Number of whitespace-separated words (the default token budget unit)."""
    return len(text.split())
