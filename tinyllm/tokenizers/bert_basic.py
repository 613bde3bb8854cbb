"""BERT's basic tokenization: normalize the text, then cut it into words and punctuation.

This is the step before WordPiece (google-research/bert ``tokenization.py``,
``BasicTokenizer``; Hugging Face ``tokenizers`` ``BertNormalizer`` + ``BertPreTokenizer``,
whose order and character classes are followed here):

1. clean (``clean_text``): drop U+0000, U+FFFD and control characters (Unicode categories
   C*: Cc, Cf, Cn, Co, Cs, except tab, newline and carriage return, which count as
   whitespace); replace every whitespace character (Unicode ``White_Space``) with ``" "``;
2. CJK (``handle_chinese_chars``): put spaces around every CJK ideograph, so each becomes
   its own word (Hangul, Hiragana and Katakana are not in these blocks);
3. strip accents (``strip_accents``; by default on exactly when lower-casing): NFD, then
   drop the non-spacing marks (category Mn): ``café`` -> ``cafe``;
4. lower-case (``lowercase``) character by character (``Σ`` -> ``σ`` even at the end of a
   word, unlike ``str.lower``);
5. split on whitespace (dropped) and around punctuation (kept, one character per word):
   ASCII 33-47, 58-64, 91-96, 123-126 (so ``$ + < = > ^ ` | ~`` count although Unicode
   calls them symbols) and every Unicode category P* character.
"""

from __future__ import annotations

import unicodedata

# Unicode White_Space (Rust's char::is_whitespace).
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# The CJK Unified Ideographs blocks (with extensions and compatibility ideographs).
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_whitespace(ch: str) -> bool:
    """Unicode White_Space (tab, newline and carriage return included)."""
    return ch in WHITESPACE


def is_control(ch: str) -> bool:
    """A C* category character other than tab, newline, carriage return."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch)[0] == "C"


def is_punctuation(ch: str) -> bool:
    """ASCII punctuation (33-47, 58-64, 91-96, 123-126) or a Unicode P* character."""
    code = ord(ch)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(ch)[0] == "P"


def is_cjk(ch: str) -> bool:
    """A CJK ideograph (the ranges in ``CJK_RANGES``)."""
    code = ord(ch)
    return any(low <= code <= high for low, high in CJK_RANGES)


class BertBasicTokenizer:
    """Normalization and word splitting with BERT's rules (module docstring).

    strip_accents: None means "same as lowercase" (BERT's and Hugging Face's default).
    """

    def __init__(
        self,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
    ) -> None:
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self.clean_text = bool(clean_text)
        self.handle_chinese_chars = bool(handle_chinese_chars)
        # per-character rewrite for steps 1-2 ("" drops it) and class for step 5
        self._rewrite: dict[str, str] = {}
        self._kind: dict[str, int] = {}

    def _rewrite_char(self, ch: str) -> str:
        out = self._rewrite.get(ch)
        if out is None:
            out = ch
            if self.clean_text:
                if ch == "\x00" or ch == "\ufffd" or is_control(ch):
                    out = ""
                elif ch in WHITESPACE:
                    out = " "
            if out and self.handle_chinese_chars and is_cjk(ch):
                out = f" {ch} "
            self._rewrite[ch] = out
        return out

    def normalize(self, text: str) -> str:
        """Steps 1-4: clean, space out CJK, strip accents, lower-case."""
        if self.clean_text or self.handle_chinese_chars:
            text = "".join([self._rewrite_char(ch) for ch in text])
        if self.strip_accents:
            text = unicodedata.normalize("NFD", text)
            text = "".join([ch for ch in text if unicodedata.category(ch) != "Mn"])
        if self.lowercase:
            # str.lower() maps a final capital sigma to "ς"; character by character it is "σ"
            text = "".join([ch.lower() for ch in text]) if "Σ" in text else text.lower()
        return text

    def split(self, text: str) -> list[str]:
        """Step 5: words and single punctuation characters, whitespace dropped."""
        words: list[str] = []
        current: list[str] = []
        kind_of = self._kind
        for ch in text:
            kind = kind_of.get(ch)
            if kind is None:
                kind = 0 if ch in WHITESPACE else 1 if is_punctuation(ch) else 2
                kind_of[ch] = kind
            if kind == 2:
                current.append(ch)
                continue
            if current:
                words.append("".join(current))
                current = []
            if kind == 1:
                words.append(ch)
        if current:
            words.append("".join(current))
        return words

    def __call__(self, text: str) -> list[str]:
        """Normalize ``text`` and split it into words."""
        return self.split(self.normalize(text))
