"""Untrusted text from browsers, programs and Replicate: refused with a clear error on the
way in, made storable (visibly) on the way out; nothing stalls, nothing is lost.

Runs on SQLite (`make test`) and PostgreSQL (`make test-services`), where a NUL in a row
write is an error: exactly the case that used to leave predictions stuck.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

from predictions import untrusted
from predictions.models import ApiToken, CatalogModel, OutputFile, Prediction
from project.asgi import application
from tests.engine_helpers import submit, wait_until_finished

PROMPT_SCHEMA = {
    "type": "object",
    "required": ["prompt"],
    "properties": {"prompt": {"type": "string", "title": "Prompt", "x-order": 0}},
}
TEXT_OUTPUT = {
    "type": "array",
    "items": {"type": "string"},
    "x-cog-array-type": "iterator",
    "x-cog-array-display": "concatenate",
}


def hostile_model(base_url: str, name: str, output_schema: dict[str, Any]) -> CatalogModel:
    token = ApiToken(label=f"hostile {uuid.uuid4().hex[:6]}", base_url=base_url)
    token.set_token("r8_hostile_0123456789")
    token.save()
    return CatalogModel.objects.create(
        owner="hostile",
        name=name,
        input_schema=PROMPT_SCHEMA,
        output_schema=output_schema,
        token=token,
    )


async def run_hostile(base_url: str, owner: User, prompt: str, text: bool = False) -> Prediction:
    schema = TEXT_OUTPUT if text else {"type": "object"}
    model = await sync_to_async(hostile_model)(base_url, f"m-{uuid.uuid4().hex[:8]}", schema)
    prediction = await submit(model, owner, prompt=prompt)
    return await wait_until_finished(prediction.pk, within=30)


async def page(user: User, url: str) -> Any:
    client = AsyncClient()
    await client.aforce_login(user)
    return await client.get(url)


# ---------------------------------------------------------------------------- model output

hostile = pytest.mark.django_db(transaction=True)


@hostile
@pytest.mark.usefixtures("inline_runs")
async def test_nul_and_lone_surrogates_in_streamed_text_and_logs_are_replaced_visibly(
    hostile_upstream: str, member: User
) -> None:
    done = await run_hostile(hostile_upstream, member, "nul-text", text=True)

    assert done.status == Prediction.Status.SUCCEEDED
    assert done.text_output == "Hello\ufffd world\ufffd!"
    assert done.logs == "step\ufffd 1\nstep \ufffd2\n"
    response = await page(member, f"/predictions/{done.pk}/")
    assert response.status_code == 200
    assert "Hello\ufffd world\ufffd!" in response.content.decode()


@hostile
@pytest.mark.usefixtures("inline_runs")
async def test_a_failure_message_with_unstorable_characters_is_kept_readable(
    hostile_upstream: str, member: User
) -> None:
    done = await run_hostile(hostile_upstream, member, "nul-error")

    assert done.status == Prediction.Status.FAILED
    assert done.error == "broke\ufffd at \ufffd here"
    assert "about to fail\ufffd" in done.logs


@hostile
@pytest.mark.usefixtures("inline_runs")
async def test_output_nested_too_deep_to_store_finishes_with_a_note(
    hostile_upstream: str, member: User
) -> None:
    done = await run_hostile(hostile_upstream, member, "deep")

    assert done.status == Prediction.Status.SUCCEEDED
    depth, node = 0, done.output
    while isinstance(node, dict):
        node, depth = node["deeper"], depth + 1
    assert node == untrusted.TOO_DEEP
    assert untrusted.MAX_DEPTH - 2 <= depth <= untrusted.MAX_DEPTH  # of the 200 it had
    assert (await page(member, f"/predictions/{done.pk}/")).status_code == 200


@hostile
@pytest.mark.usefixtures("inline_runs")
async def test_nan_and_infinity_in_output_are_kept_as_words(
    hostile_upstream: str, member: User
) -> None:
    done = await run_hostile(hostile_upstream, member, "not-finite")

    assert done.status == Prediction.Status.SUCCEEDED
    assert done.output == {"score": "nan", "max": "inf"}


@hostile
@pytest.mark.usefixtures("inline_runs")
async def test_html_and_svg_files_are_archived_but_served_as_downloads_that_run_nothing(
    hostile_upstream: str, member: User
) -> None:
    done = await run_hostile(hostile_upstream, member, "files")

    assert done.status == Prediction.Status.SUCCEEDED
    assert await OutputFile.objects.filter(prediction=done).acount() == 2
    for position in (0, 1):
        response = await page(member, f"/predictions/{done.pk}/files/{position}/")
        assert response.status_code == 200
        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"].startswith("attachment")
        assert "sandbox" in response["Content-Security-Policy"]


@hostile
@pytest.mark.usefixtures("inline_runs")
async def test_markup_in_output_and_logs_is_shown_as_text(
    hostile_upstream: str, member: User
) -> None:
    done = await run_hostile(hostile_upstream, member, "markup")

    html = (await page(member, f"/predictions/{done.pk}/")).content.decode()
    assert "<script>alert('out')" not in html
    assert "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(" in html
    assert "<b>bold</b>" not in html


@hostile
@pytest.mark.usefixtures("inline_runs")
async def test_a_create_whose_answer_was_lost_is_found_and_followed_not_made_twice(
    hostile_upstream: str, member: User
) -> None:
    done = await run_hostile(hostile_upstream, member, "lost-create")

    assert done.status == Prediction.Status.SUCCEEDED
    assert done.output == "made once"
    async with httpx.AsyncClient() as client:
        listed = await client.get(f"{hostile_upstream}/v1/predictions")
    upstream = listed.json()["results"]
    ours = [p for p in upstream if p["model"] == done.model_ref]
    assert [p["id"] for p in ours] == [done.upstream_id]


# ---------------------------------------------------------------------------- input


@pytest.mark.parametrize("bad", ["nul \x00 inside", "\x00"])
def test_a_nul_in_a_form_field_is_a_field_error_and_starts_nothing(
    client: Client, alice: User, bad: str
) -> None:
    CatalogModel.objects.create(owner="acme", name="echo", input_schema=PROMPT_SCHEMA)
    client.force_login(alice)

    response = client.post("/models/acme/echo/", {"prompt": bad})

    assert response.status_code == 400
    assert "cannot be saved: it contains a NUL character" in response.content.decode()
    assert not Prediction.objects.exists()


def test_nul_spelled_as_a_json_escape_is_refused_too(client: Client, alice: User) -> None:
    schema = {
        "type": "object",
        "properties": {"options": {"type": "object", "title": "Options", "x-order": 0}},
    }
    CatalogModel.objects.create(owner="acme", name="json", input_schema=schema)
    client.force_login(alice)

    response = client.post("/models/acme/json/", {"options": '{"key": "a\\u0000b"}'})

    assert response.status_code == 400
    assert "NUL character" in response.content.decode()
    assert not Prediction.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"model": "acme/echo", "input": {"prompt": "a\x00b"}}, "prompt"),
        ({"model": "acme/echo", "input": {"prompt": "a\ud800b"}}, "prompt"),
        ({"model": "acme/ec\x00ho", "input": {"prompt": "hi"}}, ""),
        ({"model": "acme/echo", "input": {"prompt": "hi"}, "parent": "\ud800"}, ""),
    ],
)
async def test_a_websocket_submit_with_unstorable_text_gets_an_error_and_stays_open(
    message: dict[str, Any], field: str
) -> None:
    await CatalogModel.objects.acreate(owner="acme", name="echo", input_schema=PROMPT_SCHEMA)
    user = await User.objects.acreate(username=f"ws-{uuid.uuid4().hex[:6]}")
    client = AsyncClient()
    await client.aforce_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    socket = WebsocketCommunicator(
        application,
        "/ws/predictions/",
        headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")],
    )
    connected, _ = await socket.connect()
    assert connected

    await socket.send_json_to({"type": "submit", **message})
    reply = await socket.receive_json_from(timeout=5)
    await socket.send_json_to({"type": "submit", "model": "acme/echo", "input": {}})
    still_there = await socket.receive_json_from(timeout=5)
    await socket.disconnect()

    assert reply["type"] == "error"
    if field:  # an input gets a field error; the rest of the message a plain one
        assert field in reply["errors"]
        assert "cannot be saved" in reply["errors"][field][0]
    else:
        assert "cannot be used" in reply["message"]
    assert still_there["errors"] == {"prompt": ["This field is required."]}
    assert not await Prediction.objects.aexists()


@pytest.mark.parametrize(
    "url",
    [
        "/predictions/?q=a%00b",
        "/predictions/?model=%00",
        "/?x=%00",
        "/?%00=x",
        "/models/%00/x/",
        "/models/sandbox/text%00/",
    ],
)
def test_a_nul_in_the_address_is_a_400_with_a_message(
    client: Client, alice: User, url: str
) -> None:
    client.force_login(alice)

    response = client.get(url)

    assert response.status_code == 400
    assert "NUL character" in response.content.decode()


def test_the_admin_search_refuses_a_nul_too(admin_client: Client) -> None:
    response = admin_client.get("/admin/predictions/prediction/?q=%00")

    assert response.status_code == 400


def test_a_webhook_whose_id_holds_a_nul_is_refused_without_a_500(client: Client) -> None:
    response = client.post(
        "/webhooks/replicate/", '{"id": "abc\\u0000", "status": "succeeded"}', "application/json"
    )

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("default_input", '{"prompt": "a\\u0000b"}'),
        ("default_input", '{"a\\u0000": 1}'),
        ("default_input", '{"prompt": "\\ud800"}'),
        ("default_input", '{"seed": NaN}'),
        ("hidden_inputs", '["\\u0000"]'),
    ],
)
def test_the_admin_refuses_defaults_that_cannot_be_stored(
    admin_client: Client, field: str, value: str
) -> None:
    form = {
        "owner": "acme",
        "name": "echo",
        "title": "Echo",
        "default_input": "{}",
        "hidden_inputs": "[]",
        "deadline_seconds": "1800",
        "enabled": "on",
        field: value,
    }

    response = admin_client.post("/admin/predictions/catalogmodel/add/", form)

    assert response.status_code == 200
    assert "cannot be saved" in response.content.decode()
    assert not CatalogModel.objects.filter(name="echo").exists()
