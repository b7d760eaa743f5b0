"""Forms from Cog input schemas and server-side validation (predictions/schema.py).

No database: CatalogModel instances are built in memory. The real-world schemas in
shared/reference/schemas are used when present; the two below are trimmed copies of real
ones (flux-dev and mixtral) so the core cases never depend on files outside the repo.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from predictions import upstream
from predictions.forms import PredictionForm
from predictions.models import CatalogModel
from predictions.schema import (
    Field,
    InvalidInput,
    api_snippet,
    clean_input,
    fields_for,
    python_literal,
)

# Real model-version schemas recorded from Replicate (see fixtures/schemas/README.md).
REFERENCE_FILES = sorted((Path(__file__).parent / "fixtures" / "schemas").glob("*.json"))

# Trimmed from black-forest-labs/flux-dev: enums as allOf + $ref, a file input.
FLUX_OPENAPI: dict[str, Any] = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "title": "Input",
                "required": ["prompt"],
                "properties": {
                    "seed": {"type": "integer", "title": "Seed", "x-order": 7},
                    "image": {"type": "string", "title": "Image", "format": "uri", "x-order": 2},
                    "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
                    "go_fast": {
                        "type": "boolean",
                        "title": "Go Fast",
                        "default": True,
                        "x-order": 11,
                    },
                    "guidance": {
                        "type": "number",
                        "title": "Guidance",
                        "default": 3,
                        "maximum": 10,
                        "minimum": 0,
                        "x-order": 6,
                    },
                    "megapixels": {
                        "allOf": [{"$ref": "#/components/schemas/megapixels"}],
                        "default": "1",
                        "x-order": 12,
                        "description": "Approximate number of megapixels",
                    },
                    "num_outputs": {
                        "type": "integer",
                        "title": "Num Outputs",
                        "default": 1,
                        "maximum": 4,
                        "minimum": 1,
                        "x-order": 4,
                    },
                    "aspect_ratio": {
                        "allOf": [{"$ref": "#/components/schemas/aspect_ratio"}],
                        "default": "1:1",
                        "x-order": 1,
                    },
                },
            },
            "megapixels": {"enum": ["1", "0.25"], "type": "string", "title": "megapixels"},
            "aspect_ratio": {
                "enum": ["1:1", "16:9", "21:9", "3:2", "2:3"],
                "type": "string",
                "title": "aspect_ratio",
            },
        }
    }
}

# Trimmed from mistralai/mixtral-8x7b-instruct-v0.1: many numeric knobs, a prompt template.
MIXTRAL_INPUT: dict[str, Any] = {
    "type": "object",
    "title": "Input",
    "required": ["prompt"],
    "properties": {
        "top_k": {"type": "integer", "title": "Top K", "default": 50, "x-order": 4},
        "top_p": {"type": "number", "title": "Top P", "default": 0.9, "x-order": 3},
        "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
        "temperature": {"type": "number", "title": "Temperature", "default": 0.6, "x-order": 2},
        "max_new_tokens": {
            "type": "integer",
            "title": "Max New Tokens",
            "default": 512,
            "x-order": 1,
        },
        "prompt_template": {
            "type": "string",
            "title": "Prompt Template",
            "default": "<s>[INST] {prompt} [/INST] ",
            "x-order": 7,
        },
        "presence_penalty": {"type": "number", "default": 0, "x-order": 5},
        "stop": {"type": "array", "items": {"type": "string"}, "x-order": 8},
        "seed": {"type": "integer", "nullable": True, "minimum": 0, "x-order": 9},
    },
}


def flux_raw() -> dict[str, Any]:
    """The Input object with its components beside it (refs resolvable from the root)."""
    return {
        **FLUX_OPENAPI["components"]["schemas"]["Input"],
        "components": FLUX_OPENAPI["components"],
    }


def flux_resolved() -> dict[str, Any]:
    """As the admin's "refresh schema" stores it: refs resolved, enums inline."""
    return upstream.split_openapi_schema(FLUX_OPENAPI)[0]


def model_for(schema: dict[str, Any], **extra: Any) -> CatalogModel:
    return CatalogModel(owner="acme", name="thing", input_schema=schema, **extra)


def form_fields(model: CatalogModel, values: dict[str, Any] | None = None) -> list[Field]:
    """The fields the model's form shows, as the page draws them."""
    return PredictionForm(model, model.input_schema, initial=values).shown_fields()


# ---------------------------------------------------------------------------- forms


@pytest.mark.parametrize("schema", [flux_raw(), flux_resolved()], ids=["raw", "resolved"])
def test_it_orders_fields_by_x_order_and_resolves_enum_refs(schema: dict[str, Any]) -> None:
    fields = form_fields(model_for(schema))

    assert [f.name for f in fields] == [
        "prompt",
        "aspect_ratio",
        "image",
        "num_outputs",
        "guidance",
        "seed",
        "go_fast",
        "megapixels",
    ]
    by_name = {f.name: f for f in fields}
    assert by_name["prompt"].kind == "textarea" and by_name["prompt"].required
    assert by_name["aspect_ratio"].kind == "choice"
    assert by_name["aspect_ratio"].choices == ["1:1", "16:9", "21:9", "3:2", "2:3"]
    # The enum's own title ("aspect_ratio") is a class name, not a label.
    assert by_name["aspect_ratio"].label == "Aspect ratio"
    assert by_name["megapixels"].help == "Approximate number of megapixels"
    assert by_name["image"].kind == "file" and by_name["image"].accept == "image/*"
    assert by_name["num_outputs"].slider and by_name["num_outputs"].step == "1"
    assert by_name["guidance"].slider and by_name["guidance"].step == "0.1"
    assert not by_name["seed"].slider and not by_name["seed"].required
    assert by_name["go_fast"].kind == "boolean" and by_name["go_fast"].checked


def test_a_missing_enum_definition_becomes_a_text_field_of_the_defaults_type() -> None:
    schema = {k: v for k, v in flux_raw().items() if k != "components"}

    by_name = {f.name: f for f in fields_for(schema)}

    assert by_name["aspect_ratio"].kind == "text"
    assert by_name["aspect_ratio"].unresolved
    assert (
        clean_input(model_for(schema), {"prompt": "x", "aspect_ratio": "7:3"})["aspect_ratio"]
        == "7:3"
    )


def test_hidden_inputs_are_not_shown_and_admin_defaults_prefill() -> None:
    model = model_for(
        flux_resolved(),
        hidden_inputs=["go_fast", "seed"],
        default_input={"num_outputs": 2, "go_fast": False},
    )

    fields = {f.name: f for f in form_fields(model)}

    assert "go_fast" not in fields and "seed" not in fields
    assert fields["num_outputs"].display == "2"
    assert fields["guidance"].display == "3"
    assert fields["aspect_ratio"].options[0] == ("1:1", "1:1", True)


def test_submitted_values_win_over_defaults_when_the_form_is_shown_again() -> None:
    fields = {f.name: f for f in form_fields(model_for(flux_resolved()), {"guidance": "7.5"})}

    assert fields["guidance"].display == "7.5"


def test_an_optional_enum_without_default_offers_an_empty_choice() -> None:
    schema = {
        "properties": {"voice": {"enum": ["a", "b"], "type": "string", "x-order": 0}},
    }

    (voice,) = fields_for(schema)

    assert voice.options[0] == ("", "—", True)


# ---------------------------------------------------------------------------- clean_input


def test_form_strings_are_coerced_to_the_schema_types() -> None:
    model = model_for(flux_resolved())

    cleaned = clean_input(
        model,
        {
            "prompt": "a red fox",
            "aspect_ratio": "16:9",
            "num_outputs": "2",
            "guidance": "3.5",
            "go_fast": "false",
            "seed": "",
            "image": "",
        },
    )

    assert cleaned == {
        "prompt": "a red fox",
        "aspect_ratio": "16:9",
        "num_outputs": 2,
        "guidance": 3.5,
        "go_fast": False,
    }


def test_json_values_from_the_websocket_pass_as_they_are() -> None:
    cleaned = clean_input(
        model_for(flux_resolved()), {"prompt": "x", "num_outputs": 4, "go_fast": True}
    )

    assert cleaned == {"prompt": "x", "num_outputs": 4, "go_fast": True}


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "prompt", "This field is required."),
        ({"prompt": "   "}, "prompt", "This field is required."),
        ({"prompt": "x", "num_outputs": "0"}, "num_outputs", "at least 1"),
        ({"prompt": "x", "num_outputs": "5"}, "num_outputs", "at most 4"),
        ({"prompt": "x", "num_outputs": "2.5"}, "num_outputs", "whole number"),
        ({"prompt": "x", "num_outputs": True}, "num_outputs", "whole number"),
        ({"prompt": "x", "guidance": "lots"}, "guidance", "Enter a number"),
        ({"prompt": "x", "guidance": "nan"}, "guidance", "finite"),
        ({"prompt": "x", "aspect_ratio": "5:1"}, "aspect_ratio", "not one of the choices: 1:1"),
        ({"prompt": "x", "go_fast": "maybe"}, "go_fast", "yes or no"),
        ({"prompt": "x", "image": "not a url"}, "image", "URL"),
        ({"prompt": "x", "image": "file:///etc/passwd"}, "image", "URL"),
        ({"prompt": 5}, "prompt", "Enter text"),
        ({"prompt": "x", "steps": "4"}, "steps", "no input called “steps”"),
    ],
)
def test_invalid_input_names_the_field_and_the_reason(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        clean_input(model_for(flux_resolved()), data)

    assert field in caught.value.errors
    assert message in " ".join(caught.value.errors[field])


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        clean_input(model_for(flux_resolved()), {"num_outputs": "9", "guidance": "x"})

    assert set(caught.value.errors) == {"prompt", "num_outputs", "guidance"}


# Bad input that once crashed the view (500) instead of naming the field.
SPECIMENS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {"type": "integer"},
        "scale": {"type": "number", "minimum": 0},
        "extra": {"type": "object"},
        "sizes": {"type": "array", "items": {"type": "number"}},
    },
}


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"steps": "9" * 5000}, "steps", "whole number"),
        ({"steps": "9" * 5000 + ".0"}, "steps", "whole number"),
        ({"steps": float("inf")}, "steps", "whole number"),
        ({"scale": "9" * 5000}, "scale", "Enter a number"),
        ({"scale": "1" * 400 + ".5"}, "scale", "finite"),
        ({"scale": "inf"}, "scale", "finite"),
        ({"scale": "-Infinity"}, "scale", "finite"),
        ({"scale": float("nan")}, "scale", "finite"),
        ({"sizes": "1\nnan"}, "sizes", "Item 2: Enter a finite number."),
        ({"extra": '{"a": NaN}'}, "extra", "NaN is not a JSON number"),
        ({"extra": '{"a": [-Infinity]}'}, "extra", "Infinity is not a JSON number"),
        ({"extra": '{"a": 1e400}'}, "extra", "finite"),
        ({"extra": {"a": [float("nan")]}}, "extra", "finite"),  # websocket JSON
        ({"extra": "[" * 100_000}, "extra", "nested less deeply"),
    ],
)
def test_overflowing_and_non_finite_numbers_are_field_errors(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        clean_input(model_for(SPECIMENS), data)

    assert message in " ".join(caught.value.errors[field])


def test_long_whole_numbers_with_a_zero_fraction_stay_exact() -> None:
    cleaned = clean_input(model_for(SPECIMENS), {"steps": "1" * 400 + ".0", "scale": "3.0"})

    assert cleaned == {"steps": int("1" * 400), "scale": 3.0}


@pytest.mark.parametrize("pattern", ["(unclosed", "a{99999999999}", 42])
def test_a_pattern_python_cannot_compile_is_ignored(pattern: Any) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}

    assert fields_for(schema)[0].pattern is None
    assert clean_input(model_for(schema), {"code": "anything"}) == {"code": "anything"}


def test_a_valid_pattern_is_still_checked() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[a-z]+$"}}}

    with pytest.raises(InvalidInput):
        clean_input(model_for(schema), {"code": "ABC"})
    assert clean_input(model_for(schema), {"code": "abc"}) == {"code": "abc"}


def test_hidden_inputs_take_the_admin_value_and_ignore_the_users() -> None:
    model = model_for(
        flux_resolved(), hidden_inputs=["go_fast", "seed"], default_input={"go_fast": False}
    )

    cleaned = clean_input(model, {"prompt": "x", "go_fast": "true", "seed": "7"})

    assert cleaned == {"prompt": "x", "go_fast": False}


def test_admin_defaults_fill_what_the_user_left_empty() -> None:
    model = model_for(flux_resolved(), default_input={"num_outputs": 3, "prompt": "house style"})

    assert clean_input(model, {"num_outputs": ""}) == {"num_outputs": 3, "prompt": "house style"}
    assert clean_input(model, {"prompt": "mine", "num_outputs": "1"}) == {
        "prompt": "mine",
        "num_outputs": 1,
    }


def test_data_uris_and_urls_are_accepted_for_files() -> None:
    model = model_for(flux_resolved())

    cleaned = clean_input(model, {"prompt": "x", "image": "data:image/png;base64,iVBORw0KGgo="})
    assert cleaned["image"].startswith("data:image/png")
    cleaned = clean_input(model, {"prompt": "x", "image": " https://example.com/a.png "})
    assert cleaned["image"] == "https://example.com/a.png"


def test_an_llm_with_many_numeric_knobs() -> None:
    model = model_for(MIXTRAL_INPUT)
    fields = {f.name: f for f in fields_for(MIXTRAL_INPUT)}

    assert fields["prompt_template"].kind == "textarea"
    assert fields["presence_penalty"].label == "Presence penalty"  # no title: from the name
    assert fields["stop"].kind == "list"
    assert fields["seed"].nullable and fields["seed"].minimum == 0
    cleaned = clean_input(
        model,
        {
            "prompt": "Hi\nthere",
            "top_k": "40",
            "top_p": "0.95",
            "temperature": "1",
            "max_new_tokens": "128",
            "presence_penalty": "-0.5",
            "stop": "</s>\n\nUser:",
            "seed": None,
        },
    )
    assert cleaned == {
        "prompt": "Hi\nthere",
        "top_k": 40,
        "top_p": 0.95,
        "temperature": 1,
        "max_new_tokens": 128,
        "presence_penalty": -0.5,
        "stop": ["</s>", "User:"],
    }
    with pytest.raises(InvalidInput) as caught:
        clean_input(model, {"prompt": "x", "seed": "-1", "stop": ["a", 3]})
    assert caught.value.errors == {
        "seed": ["Ensure this value is at least 0."],
        "stop": ["Item 2: Enter text."],
    }


def test_a_model_without_a_fetched_schema_refuses_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        clean_input(model_for({}), {"prompt": "x"})

    assert "__all__" in caught.value.errors


def test_integer_enums_come_back_as_integers() -> None:
    schema = {"properties": {"steps": {"type": "integer", "enum": [4, 8], "default": 4}}}

    assert clean_input(model_for(schema), {"steps": "8"}) == {"steps": 8}
    with pytest.raises(InvalidInput):
        clean_input(model_for(schema), {"steps": "5"})


def test_whitespace_defaults_survive_a_round_trip() -> None:
    schema = {"properties": {"prompt_separator": {"type": "string", "default": "\n\n"}}}

    assert clean_input(model_for(schema), {"prompt_separator": "\n\n"}) == {
        "prompt_separator": "\n\n"
    }


# ---------------------------------------------------------------------------- snippet


def test_the_api_snippet_is_python_for_async_run_through_the_gateway() -> None:
    model = model_for(flux_resolved(), version="a" * 64)

    snippet = api_snippet(
        model, {"prompt": 'say "hi"', "go_fast": False, "seed": None}, "https://console.example"
    )

    assert 'replicate.Client(base_url="https://console.example/api")' in snippet
    assert "https://console.example/account/keys/" in snippet
    assert '"acme/thing",' in snippet  # by name: the gateway runs the catalogue's version
    assert "await client.async_run(" in snippet
    assert '"prompt": "say \\"hi\\""' in snippet
    assert '"go_fast": False' in snippet and '"seed": None' in snippet
    compile(snippet, "snippet", "exec")


def test_data_uris_become_open_calls_in_the_snippet() -> None:
    assert python_literal("data:image/png;base64,AAAA") == 'open("image-file", "rb")'


# ---------------------------------------------------------------------------- real schemas


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("stored", ["resolved", "raw"])
def test_every_reference_schema_gives_a_form_and_accepts_its_own_defaults(
    path: Path, stored: str
) -> None:
    openapi = json.loads(path.read_text())["openapi_schema"]
    schema = (
        upstream.split_openapi_schema(openapi)[0]
        if stored == "resolved"
        else {**openapi["components"]["schemas"]["Input"], "components": openapi["components"]}
    )
    properties = schema["properties"]

    fields = form_fields(model_for(schema))

    assert {f.name for f in fields} == set(properties)
    orders = [f.order for f in fields]
    assert orders == sorted(orders)
    for f in fields:
        assert f.kind != "json", f"{f.name} fell back to JSON"
        assert not f.unresolved
        if f.kind == "choice":
            assert f.choices
            if f.has_default:
                assert f.default in f.choices
    # The form as first shown, submitted as is (required inputs filled in), is valid.
    data = {f.name: f.display for f in fields}
    for f in fields:
        if f.required and not data[f.name]:
            data[f.name] = "https://example.com/in.png" if f.kind == "file" else "hello"
    cleaned = clean_input(model_for(schema), data)
    assert set(cleaned) <= set(properties)
