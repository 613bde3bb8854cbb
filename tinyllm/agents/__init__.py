"""Agents, model-independent core: constrained decoding, tools, ReAct, self-consistency,
tree of thought (Game of 24).

* ``regex.py``: a regex subset -> byte-level NFA -> lazy DFA (our own; no ``re`` internals).
* ``token_mask.py``: per-state token masks over a vocabulary (bytes or a BPE).
* ``json_schema.py``: a JSON-schema subset -> regex of canonical serializations.
* ``logits.py``: ``RegexLogitsProcessor`` / ``JSONLogitsProcessor`` (Hugging Face signature).
* ``tools.py`` / ``validate.py``: tool registry, call parsing, argument validation.
* ``react.py``: the ReAct loop over any ``generate(prompt) -> str``.
* ``self_consistency.py``: chain-of-thought sampling and majority vote.
* ``reflection.py``: retries with a memory of failed attempts (Reflexion).
* ``bench_mask.py``: per-step mask cost (``python -m tinyllm.agents.bench_mask``).
* ``game24.py`` / ``tot.py``: Game-of-24 solver and tree-of-thought BFS / DFS.

A model that uses the tools (imported on demand, not here: they load ``tinyllm.models``):

* ``toolkit.py``: the ``calc`` and BM25 ``lookup`` tools (``agent_registry()``).
* ``traces.py``: synthetic tasks, the held-out split, ReAct / direct traces with loss masks.
* ``finetune.py``: supervised fine-tuning of a byte-level Llama on the traces.
* ``policy.py``: the model as ``generate(prompt)``; the step grammar for constrained decoding.
* ``evaluate.py``: success rates of ReAct / direct, constrained or not, greedy or voted.
"""

from tinyllm.agents.json_schema import schema_to_regex
from tinyllm.agents.logits import JSONLogitsProcessor, RegexLogitsProcessor
from tinyllm.agents.react import ReActResult, react
from tinyllm.agents.reflection import ReflectionResult, reflexion
from tinyllm.agents.regex import DEAD, RegexAutomaton, regex_escape
from tinyllm.agents.self_consistency import extract_answer, majority_vote, self_consistency
from tinyllm.agents.token_mask import RegexGuide, TokenVocabulary
from tinyllm.agents.tools import (
    Observation,
    Tool,
    ToolCall,
    ToolRegistry,
    parse_react,
    parse_tool_calls,
)
from tinyllm.agents.tot import SearchResult, tot_bfs, tot_dfs
from tinyllm.agents.validate import validate

__all__ = [
    "DEAD",
    "JSONLogitsProcessor",
    "Observation",
    "ReActResult",
    "ReflectionResult",
    "RegexAutomaton",
    "RegexGuide",
    "RegexLogitsProcessor",
    "SearchResult",
    "TokenVocabulary",
    "Tool",
    "ToolCall",
    "ToolRegistry",
    "extract_answer",
    "majority_vote",
    "parse_react",
    "parse_tool_calls",
    "react",
    "reflexion",
    "regex_escape",
    "schema_to_regex",
    "self_consistency",
    "tot_bfs",
    "tot_dfs",
    "validate",
]
