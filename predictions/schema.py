"""Cog input schemas: fields, and the rules each input's value must meet.

A catalogue model caches its version's `Input` schema (Cog's OpenAPI dialect). This module
turns it into an ordered list of `Field`s, and `clean_value` checks one value against its
field (type, range, choices, pattern, then untrusted.py's checks). `forms.PredictionForm`
runs it for the web form and the websocket `submit` alike; `clean_input` runs the same
rules over a whole input, as a plain function.

Form posts carry strings; websocket messages carry JSON values. Both are accepted and
coerced per schema type.
"""

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import untrusted, upstream

if TYPE_CHECKING:
    from .models import CatalogModel

# Fields whose name says "free text" get a textarea rather than a one-line box.
_LONG_TEXT = re.compile(
    r"prompt|text|context|question|message|instruction|system|template|history|caption|lyrics",
)
_TRUE_WORDS = {"true", "on", "1", "yes"}
_FALSE_WORDS = {"false", "off", "0", "no"}
# Show the allowed values in an error message only when the list is short enough to read.
_LIST_CHOICES_UP_TO = 12


class InvalidInput(Exception):
    """Input that does not match the schema: field name → messages ("__all__" for general)."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        self.errors: dict[str, list[str]] = {name: list(msgs) for name, msgs in errors.items()}
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in self.errors.items()))


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass
class Field:
    """One input of a model, ready for the form and for validation."""

    name: str
    label: str
    kind: str  # text, textarea, integer, number, boolean, choice, file, list, file_list, json
    required: bool = False
    help: str = ""
    default: Any = MISSING
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    choices: list[Any] = field(default_factory=list)
    item_kind: str = ""  # for lists: integer, number, text or file
    nullable: bool = False
    # An enum whose $ref target the cached schema lacks: any value of the base type passes.
    unresolved: bool = False
    order: int = 0
    value: Any = MISSING  # what the form shows: submitted, re-run, admin default or default
    errors: list[str] = field(default_factory=list)

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    @property
    def slider(self) -> bool:
        return self.kind in {"integer", "number"} and None not in (self.minimum, self.maximum)

    @property
    def step(self) -> str:
        if self.kind == "integer":
            return "1"
        if self.slider:
            # A hundred notches across the range, rounded to a readable decimal.
            span = float(self.maximum) - float(self.minimum)  # type: ignore[arg-type]
            if span <= 0:
                return "any"
            return f"{10 ** math.floor(math.log10(span / 100)):g}"
        return "any"

    @property
    def display(self) -> str:
        """The value as the text a form control holds."""
        return display_value(self, self.value)

    @property
    def is_data_uri(self) -> bool:
        return isinstance(self.value, str) and self.value.startswith("data:")

    @property
    def options(self) -> list[tuple[str, str, bool]]:
        """(value, label, selected) for a <select>; an empty first option when optional."""
        current = self.display
        options = [(str(c), str(c), str(c) == current) for c in self.choices]
        if not self.required and not self.has_default:
            options.insert(0, ("", "—", current == ""))
        return options

    @property
    def checked(self) -> bool:
        return self.value is True or (
            isinstance(self.value, str) and self.value.strip().lower() in _TRUE_WORDS
        )

    @property
    def input_id(self) -> str:
        return f"field-{self.name}"

    @property
    def described_by(self) -> str:
        """Ids of the help and error texts, for aria-describedby."""
        ids = [f"{self.input_id}-help"] if self.help else []
        if self.errors:
            ids.append(f"{self.input_id}-error")
        return " ".join(ids)

    @property
    def kept_file(self) -> dict[str, Any] | None:
        """A file carried over as a data: URI (a re-run, a form with errors): type and size."""
        if not self.is_data_uri:
            return None
        header, _, payload = str(self.value).partition(",")
        return {"type": header[5:].split(";", 1)[0] or "file", "size": len(payload) * 3 // 4}

    @property
    def accept(self) -> str:
        """A hint for the file picker, from the input's name; the model decides the rest."""
        for words, accept in (
            (("image", "mask", "img", "photo", "picture"), "image/*"),
            (("audio", "speaker", "voice", "sound", "music", "speech"), "audio/*"),
            (("video", "movie", "clip"), "video/*"),
        ):
            if any(word in self.name.lower() for word in words):
                return accept
        return ""


def display_value(spec: Field, value: Any) -> str:
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if spec.kind in {"list", "file_list"} and isinstance(value, list):
        return "\n".join(display_value(spec, item) for item in value)
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) and value.is_integer() else str(value)
    return json.dumps(value, ensure_ascii=False, indent=2)


def _resolved(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema with its `$ref`s resolved.

    The admin's refresh stores it so already (`upstream.split_openapi_schema`); an Input
    object kept with its `components` beside it is resolved here by the same function.
    """
    components = schema.get("components")
    if not isinstance(components, Mapping) or not isinstance(components.get("schemas"), Mapping):
        return schema
    own = {k: v for k, v in schema.items() if k != "components"}
    openapi = {"components": {"schemas": {**components["schemas"], "Input": own}}}
    return upstream.split_openapi_schema(openapi)[0]


def _dangling(prop: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """A `$ref` the schema could not resolve (left in place): drop it, and take the type
    from the default. Returns the property and whether a reference was missing."""
    parts = [prop, *(p for p in prop.get("allOf") or [] if isinstance(p, Mapping))]
    if not any("$ref" in part for part in parts):
        return dict(prop), False
    own = {k: v for k, v in prop.items() if k not in {"allOf", "$ref"}}
    if "type" not in own:
        default = own.get("default")
        own["type"] = _json_type(default) if default is not None else "string"
    return own, True


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _label(name: str, title: str) -> str:
    """Cog titles a field "Num Inference Steps" from its name; "Num inference steps" reads
    better. A hand-written title stays; an inlined enum's title is its class name."""
    generated = name.replace("_", " ").replace("-", " ").strip().lower()
    if not title or title == name or title.lower() == generated:
        return _humanize(name)
    return title


def _humanize(name: str) -> str:
    words = name.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def _nullable(prop: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Unwrap `anyOf: [X, {type: null}]` (newer Cog) into X; note `nullable: true`."""
    options = prop.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if isinstance(o, Mapping) and o.get("type") != "null"]
        if len(real) == 1 and len(real) < len(options):
            merged = {**real[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
            return merged, True
    return dict(prop), bool(prop.get("nullable"))


def _kind(name: str, prop: Mapping[str, Any]) -> tuple[str, str]:
    """The form control for a property, and for arrays the kind of their items."""
    kind = prop.get("type")
    if "enum" in prop:
        return "choice", ""
    if kind == "boolean":
        return "boolean", ""
    if kind in {"integer", "number"}:
        return kind, ""
    if kind == "string":
        if prop.get("format") == "uri":
            return "file", ""
        default = prop.get("default")
        long_default = isinstance(default, str) and ("\n" in default or len(default) > 80)
        if _LONG_TEXT.search(name) or long_default:
            return "textarea", ""
        return "text", ""
    if kind == "array":
        items: Mapping[str, Any] = prop["items"] if isinstance(prop.get("items"), Mapping) else {}
        item_type = items.get("type")
        if item_type == "string" and items.get("format") == "uri":
            return "file_list", "file"
        if item_type in {"string", "integer", "number"} and "enum" not in items:
            return "list", {"string": "text"}.get(item_type, item_type)
    return "json", ""


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pattern(value: Any) -> str | None:
    """The schema's `pattern` if Python can compile it; an invalid one is ignored."""
    if not isinstance(value, str):
        return None
    try:
        re.compile(value)
    except (re.error, OverflowError, RecursionError):
        return None
    return value


def fields_for(schema: Mapping[str, Any] | None, hidden: Iterable[str] = ()) -> list[Field]:
    """The schema's inputs in display order (`x-order`), without the hidden ones."""
    schema = _resolved(schema or {})
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    hidden = set(hidden)
    result = []
    for position, (name, raw) in enumerate(properties.items()):
        if name in hidden or not isinstance(raw, Mapping):
            continue
        prop, unresolved = _dangling(raw)
        prop, nullable = _nullable(prop)
        kind, item_kind = _kind(name, prop)
        if unresolved and kind == "textarea":
            kind = "text"  # an enum we cannot list: one value, typed in
        order = prop.get("x-order")
        title = str(raw.get("title") or prop.get("title") or "")
        help_text = str(prop.get("description") or "").strip()
        result.append(
            Field(
                name=name,
                label=_label(name, title),
                kind=kind,
                required=name in required,
                help="" if help_text == "An enumeration." else help_text,
                default=prop.get("default", MISSING),
                minimum=_number(prop.get("minimum")),
                maximum=_number(prop.get("maximum")),
                min_length=_count(prop.get("minLength")),
                max_length=_count(prop.get("maxLength")),
                pattern=_pattern(prop.get("pattern")),
                choices=list(prop.get("enum") or []),
                item_kind=item_kind,
                nullable=nullable,
                unresolved=unresolved,
                # Properties without x-order keep their place after the ordered ones.
                order=order if isinstance(order, int) else 10_000 + position,
            )
        )
    result.sort(key=lambda f: f.order)
    return result


def _is_empty(value: Any) -> bool:
    return value is MISSING or value is None or value == "" or value == []


def clean_input(
    model: "CatalogModel",
    data: Mapping[str, Any],
    input_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate and coerce a user's input for `model`; raise InvalidInput with field errors.

    Hidden inputs cannot be set by users: whatever they send is ignored and the admin's
    value (if any) is sent. Missing or empty optional fields are dropped so the model's
    own defaults apply upstream; missing fields take the admin's default first.
    `input_schema` is another version's (a re-run of an older version); default: current.
    """
    schema = (model.input_schema if input_schema is None else input_schema) or {}
    if not schema.get("properties"):
        raise InvalidInput({"__all__": [NOT_FETCHED]})
    hidden = set(model.hidden_inputs or [])
    admin_defaults = model.default_input if isinstance(model.default_input, dict) else {}
    specs = {spec.name: spec for spec in fields_for(schema)}
    errors: dict[str, list[str]] = {}
    for name in data:
        if name not in specs:
            shown = untrusted.scrub(name)
            errors[shown] = [unknown_input(shown)]
    cleaned: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in hidden:
            if name in admin_defaults:
                cleaned[name] = admin_defaults[name]
            continue
        try:
            value = clean_value(spec, data.get(name, MISSING), admin_defaults)
        except ValueError as exc:
            errors[name] = [str(exc)]
            continue
        if value is not MISSING:
            cleaned[name] = value
    if errors:
        raise InvalidInput(errors)
    return cleaned


NOT_FETCHED = "This model's input schema has not been fetched yet; ask an admin."


def unknown_input(shown: str) -> str:
    return f"This model has no input called “{shown}”."


def clean_value(spec: Field, value: Any, admin_defaults: Mapping[str, Any]) -> Any:
    """One input's value, coerced; MISSING when the model's own default applies.

    Raises ValueError with the message to show. An empty value takes the admin's default.
    """
    if _is_empty(value):
        value = admin_defaults.get(spec.name, MISSING)
    if spec.required and (_is_empty(value) or (isinstance(value, str) and not value.strip())):
        raise ValueError("This field is required.")
    if _is_empty(value):
        return MISSING
    cleaned = coerce(spec, value)
    # Checked after coercion: JSON text can spell NUL as an escape.
    reason = untrusted.problem(cleaned)
    if reason:
        raise ValueError(f"This value cannot be saved: {reason}.")
    return cleaned


def coerce(spec: Field, value: Any) -> Any:
    """One value, converted to the schema's type and checked; ValueError says what's wrong."""
    if spec.kind == "choice":
        return _choice(spec, value)
    if spec.kind == "integer":
        return _bounded(spec, _integer(value))
    if spec.kind == "number":
        return _bounded(spec, _float(value))
    if spec.kind == "boolean":
        return _boolean(value)
    if spec.kind in {"text", "textarea"}:
        return _text(spec, value)
    if spec.kind == "file":
        return _uri(value)
    if spec.kind in {"list", "file_list"}:
        return _list(spec, value)
    return _json(value)


def _whole(text: str, message: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts
        raise ValueError(message) from None


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("Enter a whole number.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        # "3" or "3.0"; never through float, which overflows on long numbers.
        match = re.fullmatch(r"([+-]?\d+)(\.0*)?", value.strip())
        if match:
            return _whole(match.group(1), "Enter a whole number.")
    raise ValueError("Enter a whole number.")


def _float(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError("Enter a number.")
    if isinstance(value, int):
        return value
    number: float
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return _whole(text, "Enter a number.")
        try:
            number = float(text)
        except ValueError:
            raise ValueError("Enter a number.") from None
    else:
        raise ValueError("Enter a number.")
    if not math.isfinite(number):
        raise ValueError("Enter a finite number.")
    return number


def _fmt(number: float) -> str:
    return f"{number:g}"


def _bounded(spec: Field, number: int | float) -> int | float:
    if spec.minimum is not None and number < spec.minimum:
        raise ValueError(f"Ensure this value is at least {_fmt(spec.minimum)}.")
    if spec.maximum is not None and number > spec.maximum:
        raise ValueError(f"Ensure this value is at most {_fmt(spec.maximum)}.")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("Choose yes or no.")


def _choice(spec: Field, value: Any) -> Any:
    for choice in spec.choices:
        # Form posts send "4" for an integer enum's 4; compare as text, return the real value.
        if value == choice and type(value) is type(choice):
            return choice
        if isinstance(value, str) and not isinstance(choice, str) and value.strip() == str(choice):
            return choice
    shown = str(value)
    if len(shown) > 40:
        shown = shown[:40] + "…"
    if len(spec.choices) <= _LIST_CHOICES_UP_TO:
        allowed = ", ".join(str(c) for c in spec.choices)
        raise ValueError(f"“{shown}” is not one of the choices: {allowed}.")
    raise ValueError(f"“{shown}” is not one of the {len(spec.choices)} choices.")


def _text(spec: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Enter text.")
    if spec.min_length is not None and len(value) < spec.min_length:
        raise ValueError(f"Enter at least {spec.min_length} characters.")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise ValueError(f"Enter at most {spec.max_length} characters (you entered {len(value)}).")
    if spec.pattern and not re.search(spec.pattern, value):
        raise ValueError("Enter a value in the expected format.")
    return value


def _uri(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("data:") and "," in text:
            return text
        if re.match(r"https?://[^\s/]+", text) and not any(c.isspace() for c in text):
            return text
    raise ValueError("Choose a file, or enter a URL starting with https://.")


def _list(spec: Field, value: Any) -> list[Any]:
    if isinstance(value, str):
        # Forms send lists as one item per line.
        value = [line.strip() for line in value.splitlines() if line.strip()]
    if not isinstance(value, list):
        raise ValueError("Enter one item per line.")
    item = Field(name=spec.name, label=spec.label, kind=spec.item_kind or "text")
    cleaned = []
    for index, entry in enumerate(value, start=1):
        try:
            cleaned.append(_uri(entry) if item.kind == "file" else coerce(item, entry))
        except ValueError as exc:
            raise ValueError(f"Item {index}: {exc}") from None
    return cleaned


def _no_constants(name: str) -> Any:
    raise ValueError(f"Enter valid JSON: {name} is not a JSON number.")


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_no_constants)
        except json.JSONDecodeError:
            raise ValueError("Enter valid JSON.") from None
        except RecursionError:
            raise ValueError("Enter valid JSON, nested less deeply.") from None
    # NaN and ±Infinity are not JSON (PostgreSQL refuses them); 1e400 parses as infinity.
    stack = [value]
    while stack:  # not recursive: a deeply nested value must not overflow the stack
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("Numbers must be finite (no NaN or Infinity).")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


@dataclass(frozen=True)
class ChosenFile:
    """A file picked in the browser but not sent (the snippet names it, not its bytes)."""

    name: str


def python_literal(value: Any, indent: int = 0) -> str:
    """A value as Python source, for the API snippet."""
    pad = " " * indent
    inner = " " * (indent + 4)
    if isinstance(value, ChosenFile):
        return f'open({json.dumps(value.name, ensure_ascii=False)}, "rb")'
    if value is None:
        return "None"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, str):
        if value.startswith("data:"):
            # A file's bytes are noise in a snippet; show how a program would pass a file.
            kind = value[5:].split(";", 1)[0].split("/")[0] or "input"
            return f'open("{kind}-file", "rb")'
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list):
        if not value:
            return "[]"
        items = ",\n".join(inner + python_literal(v, indent + 4) for v in value)
        return f"[\n{items},\n{pad}]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ",\n".join(
            f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {python_literal(v, indent + 4)}"
            for k, v in value.items()
        )
        return f"{{\n{items},\n{pad}}}"
    return json.dumps(value, ensure_ascii=False)


def api_snippet(model: "CatalogModel", input: Mapping[str, Any], console_url: str) -> str:
    """The `replicate` client code that runs the same model with the same input through
    this console's gateway, with the member's own key (`console_url`: scheme and host).

    By name: the gateway runs the version the catalogue runs (pinned, else the latest)."""
    return (
        "import asyncio\n\n"
        "import replicate\n\n"
        f"# Reads REPLICATE_API_TOKEN: your personal key, from {console_url}/account/keys/\n"
        f"client = replicate.Client(base_url={json.dumps(console_url + '/api')})\n\n\n"
        "async def main() -> None:\n"
        "    output = await client.async_run(\n"
        f"        {json.dumps(model.ref)},\n"
        f"        input={python_literal(dict(input), 8)},\n"
        "    )\n"
        "    print(output)\n\n\n"
        "asyncio.run(main())\n"
    )


# ---------------------------------------------------------------------------- admin checks


def admin_input_problems(
    input_schema: Mapping[str, Any], default_input: Any, hidden_inputs: Any
) -> dict[str, list[str]]:
    """What is wrong with an admin's default and hidden inputs under `input_schema`:
    {"default_input" | "hidden_inputs": [messages]}. Empty when they all apply."""
    specs = {spec.name: spec for spec in fields_for(input_schema)}
    problems: dict[str, list[str]] = {}
    defaults = default_input if isinstance(default_input, dict) else {}
    for name, value in defaults.items():
        if name not in specs:
            problems.setdefault("default_input", []).append(f"The model has no input “{name}”.")
            continue
        try:
            coerce(specs[name], value)
        except (ValueError, TypeError) as exc:
            problems.setdefault("default_input", []).append(f"{name}: {exc}")
    hidden = hidden_inputs if isinstance(hidden_inputs, list) else []
    for name in hidden:
        if name not in specs:
            problems.setdefault("hidden_inputs", []).append(f"The model has no input “{name}”.")
        elif specs[name].required and name not in defaults:
            problems.setdefault("hidden_inputs", []).append(
                f"“{name}” is required: give it a default above, or do not hide it."
            )
    return problems


def _describe(spec: Field) -> dict[str, str]:
    """The parts of an input that matter to someone filling the form, as text."""
    parts = {"type": spec.kind}
    if spec.has_default:
        parts["default"] = json.dumps(spec.default, ensure_ascii=False)
    if spec.minimum is not None or spec.maximum is not None:
        low = "" if spec.minimum is None else _fmt(spec.minimum)
        high = "" if spec.maximum is None else _fmt(spec.maximum)
        parts["range"] = f"{low}–{high}"
    if spec.choices:
        parts["choices"] = ", ".join(str(choice) for choice in spec.choices)
    if spec.required:
        parts["required"] = "yes"
    return parts


def schema_diff(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    default_input: Any = None,
    hidden_inputs: Any = None,
) -> list[str]:
    """What changed from the `old` to the `new` input schema, one sentence per change:
    added, removed and changed inputs (type, default, range, choices), then the admin's
    defaults and hidden inputs that no longer apply."""
    before = {spec.name: spec for spec in fields_for(old)}
    after = {spec.name: spec for spec in fields_for(new)}
    changes = [
        f"Added input “{name}” ({after[name].kind})." for name in after if name not in before
    ]
    changes += [f"Removed input “{name}”." for name in before if name not in after]
    for name in (n for n in after if n in before):
        was, now = _describe(before[name]), _describe(after[name])
        for aspect in ("type", "default", "range", "choices", "required"):
            if was.get(aspect) != now.get(aspect):
                old_value, new_value = was.get(aspect, "none"), now.get(aspect, "none")
                changes.append(f"Input “{name}”: {aspect} {old_value} → {new_value}.")
    problems = admin_input_problems(new or {}, default_input, hidden_inputs)
    changes += [f"Default input no longer applies: {p}" for p in problems.get("default_input", [])]
    changes += [f"Hidden input no longer applies: {p}" for p in problems.get("hidden_inputs", [])]
    return changes
