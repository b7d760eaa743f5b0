"""The model form (web POST and websocket submit alike) and the history filters."""

from datetime import date
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict

from predictions import forms, schema
from predictions.forms import HistoryFilterForm, PredictionForm
from predictions.models import CatalogModel
from predictions.presenters import snippet_input

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "x-order": 0},
        "steps": {"type": "integer", "minimum": 1, "maximum": 8, "x-order": 1},
        "style": {"type": "string", "enum": ["a", "b"], "x-order": 2},
        "image": {"type": "string", "format": "uri", "x-order": 3},
        "stops": {"type": "array", "items": {"type": "string"}, "x-order": 4},
        "safety": {"type": "boolean", "default": True, "x-order": 5},
    },
}


def model(**extra: Any) -> CatalogModel:
    return CatalogModel(owner="acme", name="thing", input_schema=SCHEMA, **extra)


def test_a_post_and_a_socket_message_get_the_same_errors() -> None:
    post = QueryDict("prompt=&steps=9&style=c&nope=1")
    message = {"prompt": "", "steps": 9, "style": "c", "nope": 1}

    web = PredictionForm(model(), SCHEMA, post)
    socket = PredictionForm(model(), SCHEMA, message)

    assert not web.is_valid() and not socket.is_valid()
    assert web.input_errors() == socket.input_errors()
    assert web.input_errors() == {
        "prompt": ["This field is required."],
        "steps": ["Ensure this value is at most 8."],
        "style": ["“c” is not one of the choices: a, b."],
        "nope": ["This model has no input called “nope”."],
    }


def test_a_valid_post_is_coerced_per_type_and_drops_empty_optionals() -> None:
    post = QueryDict("prompt=a%0D%0Afox&steps=3&style=&stops=x%0D%0Ay&safety=false&safety=true")

    form = PredictionForm(model(), SCHEMA, post)

    assert form.is_valid()
    assert form.cleaned_input == {
        "prompt": "a\nfox",
        "steps": 3,
        "stops": ["x", "y"],
        "safety": True,
    }


def test_hidden_inputs_take_the_admins_value_whatever_is_sent() -> None:
    thing = model(hidden_inputs=["safety"], default_input={"safety": False, "steps": 2})

    form = PredictionForm(thing, SCHEMA, {"prompt": "x", "safety": True})

    assert form.is_valid()
    assert form.cleaned_input == {"prompt": "x", "steps": 2, "safety": False}
    assert "safety" not in {spec.name for spec in form.shown_fields()}


def test_a_nul_spelled_in_json_is_refused_after_coercion() -> None:
    form = PredictionForm(model(), SCHEMA, {"prompt": "a\x00fox"})

    assert not form.is_valid()
    assert form.input_errors()["prompt"][0].startswith("This value cannot be saved:")


def test_a_model_without_a_schema_says_so_and_nothing_else() -> None:
    form = PredictionForm(model(), {}, {"prompt": "x"})

    assert not form.is_valid()
    assert form.input_errors() == {"__all__": [schema.NOT_FETCHED]}


def test_a_big_file_waits_for_a_valid_input_and_must_be_chosen_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forms, "DATA_URI_MAX_BYTES", 3)
    files = MultiValueDict({"image": [SimpleUploadedFile("fox.png", b"12345", "image/png")]})

    form = PredictionForm(model(), SCHEMA, QueryDict("prompt="), files)

    assert not form.is_valid()
    assert form.cleaned_input == {}
    assert [item.placeholder for item in form.pending] == ["https://upload.invalid/0"]
    form.forget_pending()
    image = next(spec for spec in form.shown_fields() if spec.name == "image")
    assert image.value == "" and image.errors == ["Choose “fox.png” again."]


def test_the_schema_is_parsed_once_per_form(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    parse = schema.fields_for
    monkeypatch.setattr(schema, "fields_for", lambda *a, **k: calls.append(1) or parse(*a, **k))

    form = PredictionForm(model(), SCHEMA, QueryDict("prompt=x&steps=0"))
    form.is_valid()
    form.shown_fields()
    form.general_errors()

    assert len(calls) == 1


def test_the_snippet_takes_the_posted_values_with_picked_files_by_name() -> None:
    frames = {"type": "array", "items": {"type": "string", "format": "uri"}, "x-order": 6}
    with_frames = {**SCHEMA, "properties": {**SCHEMA["properties"], "frames": frames}}
    post = QueryDict(
        "prompt=a+fox&steps=12&style=b&safety=false&safety=true&frames=https://x.test/1.png"
        "&file-name=image:fox.png&file-name=frames:a.png&file-name=frames:b:c.png&file-name=nope"
    )

    form = PredictionForm(model(), with_frames, post)
    values = snippet_input(form.shown_fields(), forms.chosen_file_names(post))
    fox, a, bc = (schema.ChosenFile(name) for name in ("fox.png", "a.png", "b:c.png"))

    # steps is out of range, safety is the model's default; "file-name" is no input.
    assert values == {
        "prompt": "a fox",
        "style": "b",
        "image": fox,
        "frames": ["https://x.test/1.png", a, bc],
    }
    assert form.input_errors() == {"steps": ["Ensure this value is at most 8."]}


def test_history_filters_ignore_what_does_not_parse() -> None:
    params = QueryDict("status=nope&since=2024-13-01&until=2024-02-03&per_page=7&q=%20fox%20")

    filters = HistoryFilterForm(params, AnonymousUser()).filters

    assert (filters.status, filters.since, filters.until) == ("", None, date(2024, 2, 3))
    assert (filters.per_page, filters.q, filters.active) == (forms.DEFAULT_PAGE_SIZE, "fox", True)


def test_only_staff_filter_by_owner() -> None:
    params = QueryDict("owner=7")

    member = HistoryFilterForm(params, User(is_staff=False)).filters
    staff = HistoryFilterForm(params, User(is_staff=True)).filters

    assert (member.owner, member.active) == ("", False)
    assert staff.owner == "7"
