"""Question-like training pairs made from a corpus by rule, with no labelled questions.

Every rule turns a piece of a topic into a question whose answer is that topic (the topics are
the classes of :mod:`tinyllm.rag.query_adapter`'s InfoNCE loss):

- the topic title T and each section heading H:  "What is T?", "How do I use T?",
  "How does T work?" (and the same for H);
- an identifier X written in a passage as a call ``name()`` / ``obj.name()``, a dunder
  ``__name__`` or a dotted name ``module.attr``:  "What does X do?", "When is X used?";
- an exception or warning name E (``...Error``, ``...Exception``, ``...Warning``) in a
  passage:  "Why does E happen?", "What causes E?", "How do I fix E?".

An identifier or exception name answers for every topic whose text contains it, and only names
found in at most ``max_topics`` topics are used (a name found everywhere says nothing about
the topic). At most ``per_topic`` questions per topic are kept, drawn with ``seed``, so that
long topics do not dominate. The rules are general: they look at headings and at the
spelling of names, never at the question set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from tinyllm.rag.context import topic_headings, topic_titles

_CALL = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\(\)")
_DUNDER = re.compile(r"\b__[a-z][a-z0-9_]*__\b")
_DOTTED = re.compile(r"\b[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]+\b")
_EXCEPTION = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Warning)\b")

TITLE_TEMPLATES = ("What is {}?", "How do I use {}?", "How does {} work?")
NAME_TEMPLATES = ("What does {} do?", "When is {} used?")
EXCEPTION_TEMPLATES = ("Why does {} happen?", "What causes {}?", "How do I fix {}?")


def _phrase(heading: str) -> str:
    """A heading as it reads inside a sentence: a leading capital lowered unless the first
    word looks like a name (all capitals, or a capital inside)."""
    first = heading.split()[0] if heading.split() else ""
    if first[:1].isupper() and first[1:].islower():
        return first.lower() + heading[len(first) :]
    return heading


def _names(text: str) -> tuple[set[str], set[str]]:
    """(identifiers, exception names) written in ``text``."""
    identifiers = set(_CALL.findall(text)) | set(_DUNDER.findall(text))
    identifiers |= {m for m in _DOTTED.findall(text) if not re.fullmatch(r"[a-z]\.[a-z]", m)}
    return identifiers, set(_EXCEPTION.findall(text))


def template_questions(
    topics: Mapping[str, str], per_topic: int = 24, max_topics: int = 3, seed: int = 0
) -> list[tuple[str, frozenset]]:
    """``[(question, answering topics), ...]`` built by the rules of the module docstring,
    in a deterministic order (topics sorted, then the drawn order)."""
    if per_topic < 1 or max_topics < 1:
        raise ValueError(
            f"template_questions: per_topic and max_topics must be >= 1, got {per_topic}, "
            f"{max_topics}"
        )
    titles = topic_titles(topics)
    found = {topic: _names(text) for topic, text in topics.items()}
    homes: dict[str, set[str]] = {}
    for topic, (identifiers, exceptions) in found.items():
        for name in identifiers | exceptions:
            homes.setdefault(name, set()).add(topic)
    rng = np.random.default_rng(seed)
    out: list[tuple[str, frozenset]] = []
    for topic in sorted(topics):
        heads = [titles[topic]] + [h for _, h in topic_headings(topics[topic])[1:]]
        candidates: list[tuple[str, frozenset]] = []
        for heading in dict.fromkeys(heads):
            for template in TITLE_TEMPLATES:
                candidates.append((template.format(_phrase(heading)), frozenset({topic})))
        identifiers, exceptions = found[topic]
        for names, templates in ((identifiers, NAME_TEMPLATES), (exceptions, EXCEPTION_TEMPLATES)):
            for name in sorted(names):
                if len(homes[name]) <= max_topics:
                    for template in templates:
                        candidates.append((template.format(name), frozenset(homes[name])))
        candidates = list(dict.fromkeys(candidates))
        if len(candidates) > per_topic:
            keep = sorted(rng.choice(len(candidates), per_topic, replace=False).tolist())
            candidates = [candidates[i] for i in keep]
        out.extend(candidates)
    # a question made from two topics (a shared name) is kept once, answering for both
    merged: dict[str, frozenset] = {}
    for question, answers in out:
        merged[question] = merged.get(question, frozenset()) | answers
    return list(merged.items())
