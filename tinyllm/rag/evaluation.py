"""Judging retrieval on natural-language questions: the question set and hit@k / MRR.

The question set (``tinyllm/data/rag_questions.json``) holds questions about the default
corpus written as a user would ask them, each labelled with the help topics
(``pydoc_data.topics`` keys) whose text answers it, and a fixed ``dev`` / ``heldout`` split.
``tinyllm/data/rag_questions_fresh.json`` (split ``fresh``) is a second held-out set in the
same format, written after the first held-out half had been looked at three times, and
scored with defaults frozen before each look (twice: rounds 3 and 6).
``tinyllm/data/rag_questions_third.json`` (split ``third``) is a third one, written after
the fresh set's second look by a session that saw no retrieval results;
``tinyllm/data/rag_questions_fourth.json`` (split ``fourth``) a fourth, written the same way
before the third set's second look; ``tinyllm/data/rag_questions_fifth.json`` (split
``fifth``) a fifth, written the same way after the fourth set's first look;
``tinyllm/data/rag_questions_sixth.json`` (split ``sixth``) a sixth, written the same way
before the fifth set's first look.

A passage is relevant to a question when one of its *homes* is a labelled topic; the homes
of a passage are its own topic plus every topic whose text contains the passage's text
(whitespace-normalised): the help topics repeat sections word for word, and the passage
store keeps only the first copy, so a passage of "exceptions" also answers for "execmodel".

For a ranking r_1, r_2, ... of passages and a question q,

    hit@k(q) = 1 if some r_i with i <= k is relevant, else 0,
    RR(q)    = 1 / (rank of the first relevant passage), 0 if none in the ranking,

and hit@k, MRR are their means over the questions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources

from tinyllm.rag.passages import Passage

SPLITS = ("dev", "heldout")  # the halves of rag_questions.json
FRESH = "fresh"  # rag_questions_fresh.json: the second held-out set
THIRD = "third"  # rag_questions_third.json: the third held-out set
FOURTH = "fourth"  # rag_questions_fourth.json: the fourth held-out set
FIFTH = "fifth"  # rag_questions_fifth.json: the fifth held-out set
SIXTH = "sixth"  # rag_questions_sixth.json: the sixth held-out set
_FILES = {
    FRESH: "rag_questions_fresh.json",
    THIRD: "rag_questions_third.json",
    FOURTH: "rag_questions_fourth.json",
    FIFTH: "rag_questions_fifth.json",
    SIXTH: "rag_questions_sixth.json",
}


def load_questions(split: str | None = None) -> list[dict]:
    """The questions of ``split`` ("dev", "heldout", None for both; "fresh", "third",
    "fourth", "fifth" or "sixth" for the later held-out sets, the sixth written the same
    way before the fifth set's first look), each a dict with ``id``, ``question``,
    ``topics`` (list of topic keys), ``keyword`` and ``split``."""
    if split is not None and split not in (*SPLITS, *_FILES):
        raise ValueError(
            f"load_questions: split must be one of {(*SPLITS, *_FILES)} or None, got {split!r}"
        )
    name = _FILES.get(split, "rag_questions.json")
    questions = json.loads(resources.files("tinyllm.data").joinpath(name).read_text("utf-8"))
    return [q for q in questions["questions"] if split is None or q["split"] == split]


def passage_homes(passages: Sequence[Passage], topics: Mapping[str, str]) -> list[frozenset]:
    """For every passage, the set of topics whose (whitespace-normalised) text contains it,
    always including its own topic."""
    normalized = {key: " ".join(text.split()) for key, text in topics.items()}
    homes = []
    for passage in passages:
        body = " ".join(passage.text.split())
        homes.append(
            frozenset({passage.topic} | {key for key, text in normalized.items() if body in text})
        )
    return homes


def ranking_metrics(
    rankings: Sequence[Sequence[int]],
    gold_topics: Sequence[Sequence[str]],
    homes: Sequence[frozenset],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Mean hit@k for each k in ``ks`` and MRR of passage-id ``rankings`` (best first), one
    per question, against each question's labelled topics."""
    if len(rankings) != len(gold_topics):
        raise ValueError(
            f"ranking_metrics: {len(rankings)} rankings for {len(gold_topics)} questions"
        )
    if not rankings:
        raise ValueError("ranking_metrics: no questions")
    hits = {k: 0.0 for k in ks}
    reciprocal = 0.0
    for ranking, gold in zip(rankings, gold_topics):
        gold = set(gold)
        first = next((rank for rank, pid in enumerate(ranking, start=1) if homes[pid] & gold), None)
        if first is not None:
            reciprocal += 1.0 / first
            for k in ks:
                hits[k] += first <= k
    n = len(rankings)
    out = {f"hit@{k}": hits[k] / n for k in ks}
    out["mrr"] = reciprocal / n
    return out
