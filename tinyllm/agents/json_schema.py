"""A JSON-schema subset compiled to a regex of its documents' canonical serialization.

Canonical serialization: ``json.dumps(doc, separators=(",", ":"), ensure_ascii=False)`` with
object keys in the order of the schema's ``properties`` (no whitespace). The regex accepts
exactly those serializations of the documents the schema allows (within the subset below), so
a mask built from it (``token_mask.py``) forces a model to emit valid JSON.

Supported keywords::

    {"type": "object", "properties": {...}, "required": [...]}   keys in property order;
                                     optional properties may be left out; no other keys
    {"type": "string", "minLength": m, "maxLength": n}           characters other than " \\ and
                                     controls, or the escapes \\" \\\\ \\/ \\b \\f \\n \\r \\t
    {"type": "integer"}                                          -?(0|[1-9][0-9]*)
    {"type": "number"}                                           JSON's number grammar
    {"type": "boolean"}, {"type": "null"}
    {"enum": [v1, v2, ...]}, {"const": v}                        any JSON values
    {"type": "array", "items": {...}, "minItems": m, "maxItems": n}

Anything else raises ``ValueError`` naming the keyword and the path in the schema.
"""

from __future__ import annotations

import json

from tinyllm.agents.regex import regex_escape

INTEGER = r"-?(?:0|[1-9][0-9]*)"
NUMBER = INTEGER + r"(?:\.[0-9]+)?(?:[eE][+\-]?[0-9]+)?"
BOOLEAN = r"(?:true|false)"
NULL = r"null"
STRING_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])'

_KNOWN = {
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "title",
    "description",
    "additionalProperties",
    "$schema",
}


def _count(lo: int, hi: int | None) -> str:
    if lo == 0 and hi is None:
        return "*"
    if lo == 1 and hi is None:
        return "+"
    return "{" + f"{lo},{'' if hi is None else hi}" + "}"


def _literal(value: object) -> str:
    return regex_escape(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def schema_to_regex(schema: dict, path: str = "#") -> str:
    """The regex of the canonical serializations of ``schema``'s documents.

    >>> schema_to_regex({"type": "boolean"})
    '(?:true|false)'
    """
    if not isinstance(schema, dict):
        raise ValueError(f"schema_to_regex: schema at {path} must be a dict, got {schema!r}")
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"schema_to_regex: unsupported keyword(s) {sorted(unknown)} at {path}")
    if "const" in schema:
        return _literal(schema["const"])
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list) or not values:
            raise ValueError(f"schema_to_regex: enum at {path} must be a non-empty list")
        return "(?:" + "|".join(_literal(v) for v in values) + ")"
    kind = schema.get("type")
    if kind == "integer":
        return INTEGER
    if kind == "number":
        return NUMBER
    if kind == "boolean":
        return BOOLEAN
    if kind == "null":
        return NULL
    if kind == "string":
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        return '"' + STRING_CHAR + _count(lo, None if hi is None else int(hi)) + '"'
    if kind == "array":
        if "items" not in schema:
            raise ValueError(f"schema_to_regex: array at {path} needs 'items'")
        item = "(?:" + schema_to_regex(schema["items"], path + "/items") + ")"
        lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
        hi = None if hi is None else int(hi)
        if hi is not None and hi < lo:
            raise ValueError(f"schema_to_regex: maxItems < minItems at {path}")
        if hi == 0:
            return r"\[\]"
        rest = _count(max(lo - 1, 0), None if hi is None else hi - 1)
        body = item + "(?:," + item + ")" + rest
        return r"\[" + (body if lo >= 1 else "(?:" + body + ")?") + r"\]"
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        missing = required - set(props)
        if missing:
            raise ValueError(
                f"schema_to_regex: required {sorted(missing)} not in properties at {path}"
            )
        parts = []
        for name, sub in props.items():
            value = schema_to_regex(sub, f"{path}/properties/{name}")
            parts.append((_literal(name) + ":(?:" + value + ")", name in required))
        return r"\{" + _members(parts) + r"\}"
    raise ValueError(f"schema_to_regex: unsupported or missing type {kind!r} at {path}")


def _members(parts: list[tuple[str, bool]]) -> str:
    """Members in order, optional ones may be absent, commas only between present ones.

    The first present member has no comma; branch on which member is first (it can be member
    i only when all before i are optional); after it every member is ",member", optional ones
    wrapped in ``(...)?``. Size O(k^2) for k properties.
    """
    branches = []
    for i, (first, _) in enumerate(parts):
        tail = "".join(f"(?:,{p})" if req else f"(?:,{p})?" for p, req in parts[i + 1 :])
        branches.append(first + tail)
        if parts[i][1]:  # a required member must be present: no later member can be first
            break
    all_optional = all(not req for _, req in parts)
    if all_optional:
        branches.append("")
    if not branches:
        return ""
    return "(?:" + "|".join(branches) + ")"
