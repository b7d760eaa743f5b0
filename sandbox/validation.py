"""Validate a prediction's input against a Cog OpenAPI schema, the way the Replicate API does.

The API answers bad input with 422 "Input validation failed" and one `invalid_fields`
entry per problem; the wording follows what the API sends (gojsonschema messages).
"""

from typing import Any
from urllib.parse import urlsplit

URI_SCHEMES = {"http", "https", "data"}


def json_type(value: Any) -> str:
    """The JSON Schema type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def resolve(prop: dict, schema: dict) -> dict:
    """Merge Cog's `allOf: [{"$ref": ...}]` enum references into the property itself."""
    merged = {k: v for k, v in prop.items() if k != "allOf"}
    for part in prop.get("allOf", []):
        ref = part.get("$ref", "")
        name = ref.rsplit("/", 1)[-1]
        target = schema.get("components", {}).get("schemas", {}).get(name, part)
        for key, value in target.items():
            merged.setdefault(key, value)
    return merged


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _type_matches(expected: str, given: str) -> bool:
    return expected == given or (expected == "number" and given == "integer")


def _check_value(name: str, field: str, value: Any, prop: dict) -> list[dict]:
    expected = prop.get("type")
    given = json_type(value)
    if expected and not _type_matches(expected, given):
        description = f"Invalid type. Expected: {expected}, given: {given}"
        return [{"type": "invalid_type", "field": field, "description": description}]
    problems = []
    if "enum" in prop and value not in prop["enum"]:
        allowed = ", ".join(f'"{v}"' if isinstance(v, str) else _number(v) for v in prop["enum"])
        description = f"{name} must be one of the following: {allowed}"
        problems.append({"type": "enum", "field": field, "description": description})
    if given in ("integer", "number"):
        if "minimum" in prop and value < prop["minimum"]:
            description = f"Must be greater than or equal to {_number(prop['minimum'])}"
            problems.append({"type": "number_gte", "field": field, "description": description})
        if "maximum" in prop and value > prop["maximum"]:
            description = f"Must be less than or equal to {_number(prop['maximum'])}"
            problems.append({"type": "number_lte", "field": field, "description": description})
    if prop.get("format") == "uri" and given == "string":
        parts = urlsplit(value)
        if parts.scheme not in URI_SCHEMES or (parts.scheme != "data" and not parts.netloc):
            description = "Does not match format 'uri'"
            problems.append({"type": "format", "field": field, "description": description})
    if given == "array" and isinstance(prop.get("items"), dict):
        for index, item in enumerate(value):
            problems += _check_value(name, f"{field}.{index}", item, prop["items"])
    return problems


def validate_input(schema: dict, data: Any) -> list[dict]:
    """Return the problems with `data` as `invalid_fields` entries; empty means valid.

    Unknown keys are ignored (as Cog does) and `null` counts as "not given", which lets
    forms send empty optional fields.
    """
    if not isinstance(data, dict):
        description = f"Invalid type. Expected: object, given: {json_type(data)}"
        return [{"type": "invalid_type", "field": "input", "description": description}]
    input_schema = schema["components"]["schemas"]["Input"]
    properties = input_schema.get("properties", {})
    problems = [
        {"type": "required", "field": "input", "description": f"{name} is required"}
        for name in input_schema.get("required", [])
        if data.get(name) is None
    ]
    for name, value in data.items():
        if name not in properties or value is None:
            continue
        problems += _check_value(name, f"input.{name}", value, resolve(properties[name], schema))
    return problems


def with_defaults(schema: dict, data: dict) -> dict:
    """The input a model's predict() sees: given values over schema defaults, nulls dropped."""
    properties = schema["components"]["schemas"]["Input"].get("properties", {})
    values = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    values.update({k: v for k, v in data.items() if k in properties and v is not None})
    # JSON has no integer type: 5.0 passes validation for an integer field, so hand over 5.
    for name, value in values.items():
        if isinstance(value, float) and properties[name].get("type") == "integer":
            values[name] = int(value)
    return values


def describe(problems: list[dict]) -> str:
    """The `detail` text the API puts next to `invalid_fields`."""
    return "".join(f"- {p['field']}: {p['description']}\n" for p in problems)
