"""The two tools the fine-tuned agent uses: an arithmetic calculator and a corpus lookup.

* ``calc({"expr": "347*29"})``: integer arithmetic (``+ - * // %``, unary minus, parentheses)
  evaluated by walking Python's ``ast`` (no ``eval``); anything else is an error message.
* ``lookup({"query": "word"})``: the best BM25 passage (``tinyllm.rag.BM25``) of the default
  corpus's passages (``tinyllm.rag.corpus_passages``), as ``"<topic>: <first words>"``.

``agent_registry()`` registers both with JSON schemas whose strings have a ``maxLength``, so a
step constrained by the schema (``policy.step_regex``) has a bounded length.
"""

from __future__ import annotations

import ast
import operator
from functools import lru_cache

from tinyllm.agents.tools import ToolRegistry

CALC_SCHEMA = {
    "type": "object",
    "properties": {"expr": {"type": "string", "minLength": 1, "maxLength": 40}},
    "required": ["expr"],
    "additionalProperties": False,
}
LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 30}},
    "required": ["query"],
    "additionalProperties": False,
}
SNIPPET_CHARS = 32  # characters of the passage shown after its topic

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _evaluate(node: ast.AST) -> int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError(f"unsupported expression element {type(node).__name__}")


def calc(expr: str) -> str:
    """The value of an integer expression, as text.

    >>> calc("347*29")
    '10063'
    >>> calc("(2+3)*-4")
    '-20'
    """
    if len(expr) > CALC_SCHEMA["properties"]["expr"]["maxLength"]:
        raise ValueError("expression too long")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    return str(_evaluate(tree))


class CorpusLookup:
    """BM25 over the default corpus's passages; ``__call__(query)`` returns the best passage."""

    def __init__(self) -> None:
        from tinyllm.rag import BM25, corpus_passages

        self.passages = corpus_passages()
        self.index = BM25().fit([p.text for p in self.passages])

    def best(self, query: str):
        """The top passage for ``query`` (None when no passage shares a term with it)."""
        scores, ids = self.index.search(query, k=1)
        if len(ids) == 0 or scores[0] <= 0:
            return None
        return self.passages[int(ids[0])]

    def __call__(self, query: str) -> str:
        passage = self.best(query)
        if passage is None:
            return "no passage matches"
        snippet = " ".join(passage.text.split())[:SNIPPET_CHARS]
        return f"{passage.topic}: {snippet}"


@lru_cache(maxsize=1)
def corpus_lookup() -> CorpusLookup:
    """The shared lookup index (built once per process: ~0.3 s)."""
    return CorpusLookup()


def agent_registry() -> ToolRegistry:
    """A registry with ``calc`` and ``lookup``."""
    registry = ToolRegistry()
    registry.register("calc", "Evaluate an integer arithmetic expression.", CALC_SCHEMA, calc)
    registry.register(
        "lookup",
        "Find the help-topic passage of the Python docs that best matches a query.",
        LOOKUP_SCHEMA,
        lambda query: corpus_lookup()(query),
    )
    return registry
