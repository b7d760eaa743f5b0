"""Property-based tests: whatever a browser or program sends, the schema form and the
websocket message parser answer with a result or a clear error, never an exception.

Values come from hypothesis, biased towards what has broken consoles before: NUL, lone
surrogates, huge and non-finite numbers, deep nesting, unknown names.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import AsyncClient, Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictions import executors, untrusted, upstream
from predictions.models import CatalogModel, Prediction
from predictions.schema import InvalidInput, clean_input
from project.asgi import application

SCHEMAS = sorted((Path(__file__).parent / "fixtures" / "schemas").glob("*.json"))
NASTY = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "1e400", "nan", "-0", "9" * 400]

characters = st.characters(exclude_categories=())  # surrogates included
text = st.one_of(st.sampled_from(NASTY), st.text(characters, max_size=30))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
fuzz = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def catalogue_model(path: Path) -> CatalogModel:
    openapi = json.loads(path.read_text())
    input_schema, output_schema = upstream.split_openapi_schema(
        openapi.get("openapi_schema", openapi)
    )
    return CatalogModel(owner="ref", name=path.stem, input_schema=input_schema)


def inputs_for(model: CatalogModel) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts keyed mostly by the schema's own inputs, with any values."""
    names = list((model.input_schema or {}).get("properties", {})) or ["prompt"]
    keys = st.one_of(st.sampled_from(names), text)
    return st.dictionaries(keys, json_values, max_size=6)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_the_schema_form_cleans_any_input_or_says_what_is_wrong(path: Path) -> None:
    model = catalogue_model(path)

    @fuzz
    @given(data=inputs_for(model))
    def check(data: dict[str, Any]) -> None:
        try:
            cleaned = clean_input(model, data)
        except InvalidInput as exc:
            assert exc.errors
            assert all(messages and all(messages) for messages in exc.errors.values())
            return
        # What it accepts can be stored: no unstorable text, finite numbers, JSON.
        assert untrusted.problem(cleaned) is None
        json.dumps(cleaned, allow_nan=False)
        assert not any(isinstance(v, float) and not math.isfinite(v) for v in cleaned.values())

    check()


@pytest.fixture
def no_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    async def submit(prediction_id: object) -> None:
        pass

    monkeypatch.setattr(executors, "submit", submit)


@pytest.mark.usefixtures("no_runner")
def test_the_model_form_answers_any_post_without_a_server_error(
    client: Client, alice: User, settings: Any
) -> None:
    settings.SUBMIT_RATE_LIMIT = "100000/minute"
    model = catalogue_model(next(p for p in SCHEMAS if "flux-dev" in p.name))
    model.save()
    client.force_login(alice)
    names = list(model.input_schema["properties"])
    form_values = st.one_of(text, st.integers().map(str), st.floats().map(str))

    @fuzz
    @given(data=st.dictionaries(st.one_of(st.sampled_from(names), text), form_values))
    def check(data: dict[str, str]) -> None:
        # Form data is text: surrogates cannot survive the browser's UTF-8 encoding.
        body = {k.encode("utf-8", "replace").decode(): v for k, v in data.items()}
        body = {k: v.encode("utf-8", "replace").decode() for k, v in body.items()}
        response = client.post(f"/models/{model.owner}/{model.name}/", body)
        assert response.status_code in (303, 400), response.status_code

    check()
    for prediction in Prediction.objects.all():
        assert untrusted.problem(prediction.input) is None


# ---------------------------------------------------------------------------- websockets

messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["submit", "resync"]), text),
        "model": st.one_of(st.just("acme/echo"), text, json_values),
        "input": st.one_of(
            st.dictionaries(st.sampled_from(["prompt", "x"]), json_values), json_values
        ),
        "parent": st.one_of(st.none(), text, st.uuids().map(str)),
        "after": json_values,
    },
)
# Nearly right: what a page sends, with the values fuzzed.
submits = st.fixed_dictionaries(
    {
        "type": st.just("submit"),
        "model": st.just("acme/echo"),
        "input": st.fixed_dictionaries({"prompt": text}),
    }
)
frames = st.one_of(
    submits.map(json.dumps),
    messages.map(json.dumps),  # JSON text: lone surrogates arrive as \ud800 escapes
    json_values.map(json.dumps),
    text,
    st.just(""),
    st.just("[" * 5000),
)


async def exchange(path: str, cookie: bytes, sent: list[str]) -> list[dict[str, Any]]:
    """Open a socket, send the frames, and collect one answer to each (until it closes)."""
    channel_layers.backends.clear()  # a fresh layer for this example's event loop
    socket = WebsocketCommunicator(
        application,
        path,
        headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")],
    )
    connected, _ = await socket.connect()
    assert connected
    answers = []
    if path != "/ws/predictions/":
        answers.append(await socket.receive_json_from(timeout=5))  # the snapshot
    for frame in sent:
        # As the server receives it (the communicator refuses to send an empty frame).
        await socket.send_input({"type": "websocket.receive", "text": frame})
        answers.append(await socket.receive_json_from(timeout=5))
    await socket.disconnect()
    return answers


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_runner")
def test_the_websocket_message_parser_answers_every_frame(settings: Any) -> None:
    settings.SUBMIT_RATE_LIMIT = "100000/minute"
    CatalogModel.objects.create(
        owner="acme",
        name="echo",
        input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}},
    )
    user = User.objects.create_user(f"fuzz-{uuid.uuid4().hex[:6]}")
    prediction = Prediction.objects.create(owner=user, model_ref="acme/echo", input={})
    client = AsyncClient()
    asyncio.run(client.aforce_login(user))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    seen: set[str] = set()

    @fuzz
    @given(sent=st.lists(frames, min_size=1, max_size=4))
    def check(sent: list[str]) -> None:
        for path in ("/ws/predictions/", f"/ws/predictions/{prediction.pk}/"):
            answers = asyncio.run(exchange(path, cookie, sent))
            kinds = {answer["type"] for answer in answers}
            seen.update(kinds)
            assert kinds <= {"error", "submitted", "snapshot"}, answers

    check()
    assert seen == {"error", "submitted", "snapshot"}  # the fuzz reached every path
