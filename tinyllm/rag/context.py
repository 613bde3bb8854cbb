"""Chunk context: the topic title and section heading of every passage.

A help topic starts with its title underlined by ``*`` and is divided into sections whose
titles are underlined by ``=``, ``-``, ``*`` or ``~`` (the heading lines of
:func:`tinyllm.rag.cross_encoder.corpus_headings`). A passage's *section heading* is the last
heading at or before the passage's start in its topic, located on whitespace-normalised text
(the passage splitter keeps words and their order, so a passage's normalised text is a
substring of its topic's normalised text).

:func:`contextualize` prefixes each passage with that context, the usual chunk-context step of
RAG pipelines, so that BM25 and the dense encoder see the title words a passage itself may
never repeat:

    "<title>. <section heading>.\\n\\n<passage text>"   (the heading is left out when it is the
                                                        title)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from tinyllm.rag.passages import Passage

_UNDERLINE = re.compile(r"^([=\-*~])\1{2,}\s*$")


def is_heading(line: str, next_line: str) -> bool:
    """Whether ``line`` is a title underlined by ``next_line`` (a run of one of = - * ~ at
    least as long as the title, give or take two characters), as the help topics write them."""
    title = line.strip()
    return (
        bool(title)
        and bool(_UNDERLINE.match(next_line))
        and (len(next_line.strip()) >= len(title) - 2)
    )


def topic_headings(text: str) -> list[tuple[int, str]]:
    """``[(offset, heading), ...]`` of ``text``: every underlined title line, ``offset`` its
    character position in the whitespace-normalised text (``" ".join(text.split())``)."""
    lines = text.splitlines()
    out = []
    position = 0  # character position of the current line in ``text``
    for above, line in zip(lines, lines[1:]):
        if is_heading(above, line):
            title = above.strip()
            prefix = " ".join(text[:position].split())
            out.append((len(prefix) + (1 if prefix else 0), " ".join(title.split())))
        position += len(above) + 1
    return out


def topic_titles(topics: Mapping[str, str]) -> dict[str, str]:
    """``{topic: title}``: the first line of each topic when it is underlined, else the key."""
    out = {}
    for topic, text in topics.items():
        headings = topic_headings(text)
        out[topic] = headings[0][1] if headings and headings[0][0] == 0 else topic
    return out


def passage_context(passage: Passage, topics: Mapping[str, str]) -> tuple[str, str]:
    """``(title, section heading)`` of ``passage`` in its topic (the topic key stands for a
    missing title; the heading is the title when no section heading precedes the passage)."""
    if passage.topic not in topics:
        raise KeyError(f"passage_context: passage {passage.id} has unknown topic {passage.topic!r}")
    text = topics[passage.topic]
    return _context(passage, text, topic_headings(text))


def _context(passage: Passage, text: str, headings: list[tuple[int, str]]) -> tuple[str, str]:
    title = headings[0][1] if headings and headings[0][0] == 0 else passage.topic
    body = " ".join(text.split())
    start = body.find(" ".join(passage.text.split())[:200])
    heading = title
    if start >= 0:
        for offset, name in headings:
            if offset > start:
                break
            heading = name
    return title, heading


def contextualize(passages: Sequence[Passage], topics: Mapping[str, str]) -> list[str]:
    """The text of every passage with its title and section heading in front (see the module
    docstring)."""
    out = []
    headings: dict[str, list[tuple[int, str]]] = {}
    for passage in passages:
        if passage.topic not in topics:
            raise KeyError(
                f"contextualize: passage {passage.id} has unknown topic {passage.topic!r}"
            )
        if passage.topic not in headings:
            headings[passage.topic] = topic_headings(topics[passage.topic])
        title, heading = _context(passage, topics[passage.topic], headings[passage.topic])
        head = title if heading == title else f"{title}. {heading}"
        out.append(f"{head}.\n\n{passage.text}")
    return out
