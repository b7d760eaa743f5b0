"""The stream wire format, read raw, exactly as replicate 1.0.7 needs it."""

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
import replicate
from django.test import AsyncClient
from pytest_django.fixtures import Settings

from sandbox import views
from tests.waiting import wait_for


async def read_events(url: str, token: str) -> tuple[list[dict], str]:
    """Every event of a stream as {"event", "id", "data"}, plus the raw text."""
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        raw = (await response.aread()).decode()
    events = []
    for block in raw.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields: dict = {"data": []}
        for line in lines:
            name, _, value = line.partition(": ")
            if name == "data":
                fields["data"].append(value)
            else:
                fields[name] = value
        fields["data"] = "\n".join(fields["data"])
        events.append(fields)
    return events, raw


async def create(url: str, token: str, model: str, model_input: dict) -> dict:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/v1/models/{model}/predictions",
            json={"input": model_input},
            headers={"Authorization": f"Bearer {token}"},
        )
    response.raise_for_status()
    return response.json()


async def test_every_event_has_an_id_and_an_allowed_name(sandbox_url: str, sandbox_token: str):
    text_input = {"prompt": "wire", "max_tokens": 200, "token_delay_ms": 0, "seed": 3}
    prediction = await create(sandbox_url, sandbox_token, "sandbox/text", text_input)

    events, raw = await read_events(prediction["urls"]["stream"], sandbox_token)

    assert raw.startswith(": hi\n\n")
    assert all(event.get("id") for event in events)
    assert len({event["id"] for event in events}) == len(events)
    assert {event["event"] for event in events} <= {"output", "logs", "error", "done"}
    assert events[-1] == {"event": "done", "id": events[-1]["id"], "data": "{}"}


async def test_a_token_with_newlines_goes_out_as_several_data_lines(
    sandbox_url: str, sandbox_token: str
):
    text_input = {"prompt": "wire", "max_tokens": 200, "token_delay_ms": 0, "seed": 3}
    prediction = await create(sandbox_url, sandbox_token, "sandbox/text", text_input)

    events, raw = await read_events(prediction["urls"]["stream"], sandbox_token)
    finished = await wait_for_status(sandbox_url, sandbox_token, prediction["id"])

    outputs = [event["data"] for event in events if event["event"] == "output"]
    assert outputs == finished["output"]
    multi_line = next(token for token in outputs if "\n" in token)
    assert "".join(f"data: {line}\n" for line in multi_line.split("\n")) in raw


async def wait_for_status(url: str, token: str, prediction_id: str) -> dict:
    async with httpx.AsyncClient() as http:

        async def finished() -> dict | None:
            response = await http.get(
                f"{url}/v1/predictions/{prediction_id}",
                headers={"Authorization": f"Bearer {token}"},
            )
            body = response.json()
            return body if body["status"] in ("succeeded", "failed", "canceled") else None

        return await wait_for(finished, within=10, every=0.02, what="prediction finished")


async def test_a_failure_sends_error_then_done_with_reason(sandbox_url: str, sandbox_token: str):
    fail_input = {"message": "boom", "steps": 1, "step_delay_ms": 0}
    prediction = await create(sandbox_url, sandbox_token, "sandbox/fail", fail_input)

    events, _ = await read_events(prediction["urls"]["stream"], sandbox_token)

    assert [e["event"] for e in events][-2:] == ["error", "done"]
    assert json.loads(events[-2]["data"]) == {"detail": "boom"}
    assert json.loads(events[-1]["data"]) == {"reason": "error"}


async def test_a_cancel_ends_the_stream_with_done_canceled(
    sandbox_url: str, sandbox_token: str, sandbox_client: Callable[..., replicate.Client]
):
    prediction = await create(sandbox_url, sandbox_token, "sandbox/slow", {"seconds": 30})
    reading = asyncio.create_task(read_events(prediction["urls"]["stream"], sandbox_token))

    await sandbox_client().predictions.async_cancel(prediction["id"])
    events, _ = await asyncio.wait_for(reading, timeout=5)

    assert events[-1]["event"] == "done"
    assert json.loads(events[-1]["data"]) == {"reason": "canceled"}


async def test_a_model_without_a_stream_has_no_stream_endpoint(
    sandbox_url: str, sandbox_token: str
):
    prediction = await create(sandbox_url, sandbox_token, "sandbox/image", {"prompt": "p"})

    async with httpx.AsyncClient() as http:
        response = await http.get(f"{sandbox_url}/v1/streams/{prediction['id']}")

    assert "stream" not in prediction["urls"]
    assert response.status_code == 404


# Through the whole project app, whose middleware tidies database connections.
@pytest.mark.django_db(transaction=True)
async def test_a_quiet_stream_sends_keepalive_comments(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    # In-process, so the keepalive interval can be shortened.
    settings.SANDBOX_API_TOKENS = ["r8_in_process"]
    monkeypatch.setattr(views, "SSE_KEEPALIVE_SECONDS", 0.05)
    headers = {"Authorization": "Bearer r8_in_process"}
    client = AsyncClient()
    created = await client.post(
        "/sandbox/v1/models/sandbox/slow/predictions",
        {"input": {"seconds": 5}},
        content_type="application/json",
        headers=headers,
    )
    prediction = created.json()
    assert created.status_code == 201, prediction

    stream_path = prediction["urls"]["stream"].removeprefix("http://testserver")
    response = await client.get(stream_path)  # a capability URL: no token needed
    chunks = aiter(response.streaming_content)
    seen = b""
    async with asyncio.timeout(2):
        while b": keepalive" not in seen:
            seen += await anext(chunks)
    await client.post(f"/sandbox/v1/predictions/{prediction['id']}/cancel", headers=headers)
    rest = [chunk async for chunk in chunks]

    assert b"event: logs" in seen  # the first progress line came before the quiet
    assert b'"reason": "canceled"' in b"".join(rest)
