"""Tools: a registry of named callables with JSON-schema arguments, call parsing, execution.

A tool is ``(name, description, parameters, function)``; ``parameters`` is a JSON schema of an
object (the keyword arguments). ``ToolRegistry.call(name, arguments)`` validates the arguments
(``jsonschema`` when installed, else ``validate.py``) and runs the function; every failure
(unknown tool, invalid arguments, an exception in the tool) comes back as an ``Observation``
with ``ok=False`` and a message meant for the model, never as an exception, so an agent loop can
feed it back and let the model correct itself.

Two call formats are parsed from model output:

* ReAct: ``Action: name`` then ``Action Input: {json}`` (``parse_react``);
* tagged: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (``parse_tool_calls``),
  as in Hermes/Qwen chat templates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tinyllm.agents.validate import validate


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict
    function: Callable[..., object]


@dataclass
class ToolCall:
    name: str
    arguments: object  # dict when well-formed; anything when the model wrote something else
    error: str | None = None  # a parse error, reported as the observation


@dataclass
class Observation:
    ok: bool
    content: str


def _schema_errors(arguments: object, schema: dict) -> list[str]:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is in the test extra
        return validate(arguments, schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"$.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}".replace("$.:", "$:")
        for e in validator.iter_errors(arguments)
    ]


@dataclass
class ToolRegistry:
    tools: dict[str, Tool] = field(default_factory=dict)

    def register(
        self, name: str, description: str, parameters: dict, function: Callable[..., object]
    ) -> Tool:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
            raise ValueError(f"ToolRegistry.register: bad tool name {name!r}")
        if name in self.tools:
            raise ValueError(f"ToolRegistry.register: tool {name!r} already registered")
        if parameters.get("type") != "object":
            raise ValueError(
                f"ToolRegistry.register: parameters of {name!r} must be an object schema"
            )
        tool = Tool(name, description, parameters, function)
        self.tools[name] = tool
        return tool

    def tool(self, name: str, description: str, parameters: dict):
        """Decorator form of :meth:`register`."""

        def wrap(function):
            self.register(name, description, parameters, function)
            return function

        return wrap

    def describe(self) -> str:
        """One line per tool, for a prompt: ``name: description. Arguments: {schema}``."""
        return "\n".join(
            f"{t.name}: {t.description} Arguments: {json.dumps(t.parameters, sort_keys=True)}"
            for t in self.tools.values()
        )

    def call(self, call: ToolCall) -> Observation:
        """Run ``call``; errors are observations (``ok=False``) naming what went wrong."""
        if call.error is not None:
            return Observation(False, f"Error: {call.error}")
        tool = self.tools.get(call.name)
        if tool is None:
            return Observation(
                False, f"Error: unknown tool {call.name!r}; available: {sorted(self.tools)}"
            )
        errors = _schema_errors(call.arguments, tool.parameters)
        if errors:
            return Observation(
                False, f"Error: invalid arguments for {call.name}: " + "; ".join(errors)
            )
        try:
            result = tool.function(**call.arguments)
        except Exception as exc:  # the tool's failure is the model's observation
            return Observation(False, f"Error: {call.name} raised {type(exc).__name__}: {exc}")
        return Observation(True, result if isinstance(result, str) else json.dumps(result))


_ACTION = re.compile(r"^\s*Action\s*:\s*(.*?)\s*$", re.MULTILINE)
_INPUT = re.compile(r"^\s*Action Input\s*:\s*(.*)", re.MULTILINE | re.DOTALL)
_FINAL = re.compile(r"^\s*Final Answer\s*:\s*(.*)", re.MULTILINE | re.DOTALL)


def parse_react(text: str) -> tuple[str | None, ToolCall | None]:
    """``(final_answer, None)``, ``(None, call)``, or ``(None, None)`` when neither is present.

    The text is cut at the first ``Observation:`` (the model must not write its own results).
    A final answer wins over an action only when it comes first.
    """
    text = text.split("Observation:", 1)[0]
    final = _FINAL.search(text)
    action = _ACTION.search(text)
    if final and (action is None or final.start() < action.start()):
        return final.group(1).strip(), None
    if action is None:
        return None, None
    name = action.group(1)
    rest = text[action.end() :]
    inp = _INPUT.search(rest)
    if inp is None:
        return None, ToolCall(name, None, error=f"no 'Action Input:' after 'Action: {name}'")
    raw = inp.group(1).strip()
    try:
        arguments, _ = json.JSONDecoder().raw_decode(raw)
    except json.JSONDecodeError as exc:
        return None, ToolCall(name, None, error=f"Action Input is not JSON ({exc.msg}): {raw!r}")
    if not isinstance(arguments, dict):
        return None, ToolCall(name, arguments, error="Action Input must be a JSON object")
    return None, ToolCall(name, arguments)


_TAGGED = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` in ``text``."""
    calls = []
    for body in _TAGGED.findall(text):
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as exc:
            calls.append(ToolCall("", None, error=f"tool call is not JSON ({exc.msg})"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            calls.append(ToolCall("", obj, error='tool call needs a string "name"'))
            continue
        arguments = obj.get("arguments", {})
        if not isinstance(arguments, dict):
            calls.append(ToolCall(obj["name"], arguments, error='"arguments" must be an object'))
            continue
        calls.append(ToolCall(obj["name"], arguments))
    return calls
