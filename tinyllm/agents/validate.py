"""Validate a JSON document against the JSON-schema subset of ``json_schema.py``.

``validate(instance, schema)`` returns a list of error strings (empty: valid), each naming the
path in the document. ``jsonschema`` (the reference implementation) is used by
``check_arguments`` when installed; this validator is the fallback and the tests hold the two in
agreement. Subset: type (object, string, integer, number, boolean, null, array), properties,
required, additionalProperties (bool), items, enum, const, minLength/maxLength,
minItems/maxItems. Booleans are not integers or numbers (as in JSON Schema).
"""

from __future__ import annotations

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _equal(a: object, b: object) -> bool:
    """JSON equality: 1 == 1.0 but True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return (
        type(a) is type(b)
        and a == b
        or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)
    )


def validate(instance: object, schema: dict, path: str = "$") -> list[str]:
    """Errors of ``instance`` against ``schema`` (empty list: valid)."""
    errors: list[str] = []
    if "const" in schema and not _equal(instance, schema["const"]):
        errors.append(f"{path}: {instance!r} is not the constant {schema['const']!r}")
    if "enum" in schema and not any(_equal(instance, v) for v in schema["enum"]):
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']!r}")
    kind = schema.get("type")
    if kind is not None:
        if kind not in _TYPES:
            raise ValueError(f"validate: unsupported type {kind!r} in the schema at {path}")
        if not _TYPES[kind](instance):
            errors.append(f"{path}: {instance!r} is not of type {kind!r}")
            return errors
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{path}: {instance!r} is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: {instance!r} is longer than {schema['maxLength']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in instance:
                errors.append(f"{path}: missing required property {name!r}")
        for name, value in instance.items():
            if name in props:
                errors += validate(value, props[name], f"{path}.{name}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected property {name!r}")
    return errors
