"""Synthetic tool-use tasks and the ReAct traces a small model is fine-tuned on.

Two task families, each answered by one tool call:

* arithmetic: "What is 347 * 29?" -> ``calc({"expr": "347 * 29"})`` -> the value;
* lookup: "Which help topic mentions 'abracadabra'?" -> ``lookup({"query": "abracadabra"})``
  -> the topic of the best BM25 passage. Only words that occur in exactly one help topic of
  the default corpus are asked about, so that topic is the one right answer.

Held-out questions are disjoint from the training ones by their keys: an arithmetic operand is
held out when ``crc32(str(n)) % 10 == 0`` (training questions use no held-out operand,
held-out questions only held-out operands); a lookup word is held out when
``crc32(word) % 20 == 0``.

The arguments are verbatim spans of the question and the answer a verbatim span of the
observation, so what the model must learn is where to copy from (a 2-layer model can: an
induction-style copy), not arithmetic or spelling changes.

A ReAct trace is rendered exactly as ``react()`` builds its transcript, so the fine-tuned model
sees at training time what the loop shows it at run time::

    Question: What is 347 * 29?            <- REACT_TEMPLATE (the prompt; no loss)
    Thought: I need the calculator.        <- the model's step (loss)
    Action: calc
    Action Input: {"expr":"347 * 29"}
    Observation: 10063                     <- "Observation:" has loss (the model's stop
    Thought: I know the answer.               signal), the tool's text and newline do not
    Final Answer: 10063
    <EOS>

A direct trace is ``DIRECT_TEMPLATE`` followed by `` <answer>\\n<EOS>`` (loss on the answer).
Tokens are UTF-8 bytes; ``EOS = 256`` (vocabulary 257).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tinyllm.agents.tools import ToolRegistry

EOS = 256
VOCAB_SIZE = 257
REACT_TEMPLATE = "Question: {question}\n"
DIRECT_TEMPLATE = "Question: {question}\nFinal Answer:"
FINAL_THOUGHT = "I know the answer."
OPERATORS = ("+", "-", "*")
CALC_THOUGHT = "I need the calculator."
LOOKUP_THOUGHT = "I need to look it up."
OPERAND_RANGE = (2, 999)


@dataclass(frozen=True)
class Task:
    """One question with the tool call that answers it; ``answer`` comes from running the tool."""

    kind: str  # "calc" | "lookup"
    question: str
    tool: str
    arguments: dict
    thought: str


def is_held_out_operand(n: int) -> bool:
    return zlib.crc32(str(n).encode()) % 10 == 0


def is_held_out_word(word: str) -> bool:
    return zlib.crc32(word.encode()) % 20 == 0


def operands(held_out: bool) -> np.ndarray:
    """The operands of one split (training: never a held-out one)."""
    lo, hi = OPERAND_RANGE
    return np.array([n for n in range(lo, hi + 1) if is_held_out_operand(n) == held_out])


@lru_cache(maxsize=1)
def lookup_words() -> tuple[str, ...]:
    """Words (4-12 letters, not stop words) whose letter run occurs in exactly one help topic
    and is a whole ``\\w+`` token there (what BM25 indexes), sorted."""
    from tinyllm.data.corpus import default_corpus_topics
    from tinyllm.rag.text import STOPWORDS, tokenize

    topics_of: dict[str, set[str]] = {}
    for topic, text in default_corpus_topics().items():
        for word in set(re.findall(r"[a-z]+", text.lower())):
            topics_of.setdefault(word, set()).add(topic)
    tokens_of = {t: set(tokenize(text)) for t, text in default_corpus_topics().items()}
    return tuple(
        sorted(
            w
            for w, topics in topics_of.items()
            if len(topics) == 1
            and 4 <= len(w) <= 12
            and w not in STOPWORDS
            and w in tokens_of[next(iter(topics))]
        )
    )


def calc_task(a: int, op: str, b: int) -> Task:
    expr = f"{a} {op} {b}"  # a verbatim span of the question: the model copies it
    return Task("calc", f"What is {expr}?", "calc", {"expr": expr}, CALC_THOUGHT)


def lookup_task(word: str) -> Task:
    question = f"Which help topic mentions '{word}'?"
    return Task("lookup", question, "lookup", {"query": word}, LOOKUP_THOUGHT)


def sample_tasks(n: int, rng: np.random.Generator, held_out: bool = False) -> list[Task]:
    """``n`` tasks of the split, half arithmetic and half lookup (alternating)."""
    nums = operands(held_out)
    words = [w for w in lookup_words() if is_held_out_word(w) == held_out]
    tasks = []
    for i in range(n):
        if i % 2 == 0:
            a, b = (int(x) for x in rng.choice(nums, 2))
            op = OPERATORS[int(rng.integers(len(OPERATORS)))]
            tasks.append(calc_task(a, op, b))
        else:
            tasks.append(lookup_task(str(words[int(rng.integers(len(words)))])))
    return tasks


def held_out_tasks(n_per_kind: int, seed: int = 1234) -> list[Task]:
    """A fixed held-out set: ``n_per_kind`` distinct arithmetic and lookup questions."""
    rng = np.random.default_rng(seed)
    nums = operands(True)
    words = [w for w in lookup_words() if is_held_out_word(w)]
    if n_per_kind > len(words):
        raise ValueError(f"held_out_tasks: only {len(words)} held-out lookup words")
    calc, seen = [], set()
    while len(calc) < n_per_kind:
        a, b = (int(x) for x in rng.choice(nums, 2))
        op = OPERATORS[len(calc) % len(OPERATORS)]
        if (a, op, b) not in seen:
            seen.add((a, op, b))
            calc.append(calc_task(a, op, b))
    chosen = rng.choice(len(words), n_per_kind, replace=False)
    lookup = [lookup_task(words[int(i)]) for i in sorted(chosen)]
    return [t for pair in zip(calc, lookup, strict=True) for t in pair]


def step_text(thought: str, tool: str, arguments: dict) -> str:
    """One action step as the model writes it (canonical JSON: no spaces, schema key order)."""
    args = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
    return f"Thought: {thought}\nAction: {tool}\nAction Input: {args}"


def final_text(answer: str) -> str:
    return f"Thought: {FINAL_THOUGHT}\nFinal Answer: {answer}"


def react_segments(task: Task, registry: ToolRegistry) -> tuple[list[tuple[str, bool]], str]:
    """The trace as (text, trained) segments, and the answer (the tool's observation)."""
    from tinyllm.agents.tools import ToolCall

    result = registry.call(ToolCall(task.tool, dict(task.arguments)))
    if not result.ok:
        raise ValueError(f"react_segments: the tool failed on {task}: {result.content}")
    segments = [
        (REACT_TEMPLATE.format(question=task.question), False),
        (step_text(task.thought, task.tool, task.arguments) + "\nObservation:", True),
        (f" {result.content}\n", False),
        (final_text(answer_of(task, result.content)) + "\n", True),
    ]
    return segments, answer_of(task, result.content)


def answer_of(task: Task, observation: str) -> str:
    """The final answer a tool observation gives: the value (calc) or the topic (lookup)."""
    return observation if task.kind == "calc" else observation.split(":", 1)[0]


def direct_segments(task: Task, answer: str) -> list[tuple[str, bool]]:
    return [(DIRECT_TEMPLATE.format(question=task.question), False), (f" {answer}\n", True)]


def encode_segments(segments: list[tuple[str, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Byte ids with EOS appended, and a bool mask of the positions that carry loss (as
    targets: the mask is over ids, the EOS is trained)."""
    ids, trained = [], []
    for text, train in segments:
        data = text.encode("utf-8")
        ids.extend(data)
        trained.extend([train] * len(data))
    ids.append(EOS)
    trained.append(True)
    return np.asarray(ids, dtype=np.int64), np.asarray(trained, dtype=bool)


def training_example(
    task: Task, registry: ToolRegistry, direct: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, trained mask) of a ReAct trace, or of a direct answer (``direct``)."""
    segments, answer = react_segments(task, registry)
    return encode_segments(direct_segments(task, answer) if direct else segments)


def expected_answer(task: Task) -> str:
    """The right answer computed without the tools (the tests' independent check): Python's
    integer arithmetic on the operands, or the one topic whose text contains the word."""
    if task.kind == "calc":
        a, op, b = re.fullmatch(r"(\d+) ([+\-*]) (\d+)", task.arguments["expr"]).groups()
        return str({"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op])
    from tinyllm.data.corpus import default_corpus_topics

    word = task.arguments["query"]
    pattern = re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", re.IGNORECASE)
    hits = [t for t, text in default_corpus_topics().items() if pattern.search(text)]
    if len(hits) != 1:
        raise ValueError(f"expected_answer: {word!r} occurs in topics {hits}")
    return hits[0]
