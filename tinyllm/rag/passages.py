"""Splitting documents into retrieval passages.

A topic text is cut at blank lines into paragraphs. A paragraph longer than ``max_words`` is
cut at sentence ends (and a single over-long sentence at word boundaries) into pieces of at
most ``max_words`` words. Consecutive pieces are then merged until a passage reaches
``min_words``, never exceeding ``max_words``; a short tail is appended to the previous passage
when that stays within ``max_words``. Passages never cross topic boundaries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tinyllm.rag.text import count_words, split_sentences


@dataclass(frozen=True)
class Passage:
    """One retrieval unit: a global id, the topic it came from, and its text."""

    id: int
    topic: str
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def _pieces(paragraph: str, max_words: int) -> list[str]:
    """Cut one paragraph into pieces of at most max_words words (sentences kept whole when
    they fit)."""
    if count_words(paragraph) <= max_words:
        return [paragraph]
    pieces: list[str] = []
    current: list[str] = []
    current_words = 0
    for sentence in split_sentences(paragraph):
        words = sentence.split()
        while len(words) > max_words:  # an over-long "sentence" (e.g. a code block)
            if current:
                pieces.append(" ".join(current))
                current, current_words = [], 0
            pieces.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if current_words + len(words) > max_words and current:
            pieces.append(" ".join(current))
            current, current_words = [], 0
        if words:
            current.append(" ".join(words))
            current_words += len(words)
    if current:
        pieces.append(" ".join(current))
    return pieces


def split_passages(text: str, min_words: int = 100, max_words: int = 200) -> list[str]:
    """Passages of ``text``: paragraphs merged to ≥ ``min_words`` and ≤ ``max_words`` words
    (a topic shorter than ``min_words`` is one passage)."""
    if not 0 < min_words <= max_words:
        raise ValueError(
            f"split_passages: need 0 < min_words <= max_words, got {min_words}, {max_words}"
        )
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    pieces = [piece for p in paragraphs for piece in _pieces(p, max_words)]
    passages: list[str] = []
    current: list[str] = []
    current_words = 0
    for piece in pieces:
        words = count_words(piece)
        if current and current_words + words > max_words:
            passages.append("\n\n".join(current))
            current, current_words = [], 0
        current.append(piece)
        current_words += words
        if current_words >= min_words:
            passages.append("\n\n".join(current))
            current, current_words = [], 0
    if current:
        tail = "\n\n".join(current)
        if passages and count_words(passages[-1]) + current_words <= max_words:
            passages[-1] = passages[-1] + "\n\n" + tail
        else:
            passages.append(tail)
    return passages


def corpus_passages(
    min_words: int = 100,
    max_words: int = 200,
    topics: dict[str, str] | None = None,
    deduplicate: bool = True,
) -> list[Passage]:
    """Passages of every topic of ``topics`` (default: ``default_corpus_topics()``, the
    standard library's help topics), with ids 0, 1, ... in sorted topic order.

    Some help topics repeat others word for word (e.g. "exceptions" is a section of
    "execmodel"); with ``deduplicate`` a passage whose text was already seen is dropped, so
    every passage text is unique and retrieval has one right answer per passage."""
    if topics is None:
        from tinyllm.data.corpus import default_corpus_topics

        topics = default_corpus_topics()
    out: list[Passage] = []
    seen: set[str] = set()
    for topic in sorted(topics):
        for text in split_passages(topics[topic], min_words, max_words):
            if deduplicate and text in seen:
                continue
            seen.add(text)
            out.append(Passage(len(out), topic, text))
    return out
