"""The gateway's event streams (`urls.stream`): the console's own events as Replicate's SSE,
exact however late a reader comes or however often it reconnects.

In this process, through the real ASGI application (tests/asgi_http.py streams its body),
with runners on the test's loop streaming from the sandbox over HTTP; and once through a
real daphne console (`processes`), read by both official clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.utils import timezone
from replicate.prediction import _json_to_prediction

from predictions import api_shapes, events, runner, sse
from predictions.models import CatalogModel, Prediction
from project.asgi import application
from tests.asgi_http import StreamingASGITransport
from tests.engine_helpers import MakeModel, expected_text, submit, wait_for, wait_until_finished
from tests.test_js_client import js_client  # noqa: F401 - the fixture (npm ci once)
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]

BASE = "http://testserver"


@dataclass
class Event:
    event: str
    id: str | None
    data: str


class Reader:
    """Reads server-sent events as the spec says, keeping each event's own `id:` line."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self) -> Event | None:
        """The next event; None when the stream ended."""
        kind, event_id, data = None, None, []
        async with asyncio.timeout(30):
            async for line in self.lines:
                if line == "":
                    if kind is not None:
                        return Event(kind, event_id, "\n".join(data))
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    kind = value
                elif name == "id":
                    event_id = value
                elif name == "data":
                    data.append(value)
        return None

    async def rest(self) -> list[Event]:
        seen = []
        while (event := await self.next()) is not None:
            seen.append(event)
        return seen


@contextlib.asynccontextmanager
async def open_stream(url: str, last_event_id: str | None = None) -> AsyncIterator[Reader]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    transport = StreamingASGITransport(application)
    async with (
        httpx.AsyncClient(transport=transport, base_url=BASE) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Reader(response)


def output_text(seen: list[Event]) -> str:
    return "".join(e.data for e in seen if e.event == "output")


def offsets(event: Event) -> tuple[int, int]:
    assert event.id is not None
    output, logs = event.id.split(":")[:2]
    return int(output), int(logs)


def assert_ids_are_offsets(seen: list[Event], start: tuple[int, int] = (0, 0)) -> None:
    """Each event's id is how much output and how many log characters the reader has."""
    output, logs = start
    for event in seen:
        if event.event == "output":
            output += len(event.data)
        elif event.event == "logs":
            logs += len(event.data) + 1  # a line, and the newline that ended it
        suffix = f":{event.event}" if event.event in ("error", "done") else ""
        assert event.id == f"{output}:{logs}{suffix}", (event, output, logs)


async def start_text(
    model: CatalogModel, user: User, tokens: int = 80, delay: int = 10, prompt: str = ""
) -> tuple[Prediction, str]:
    prompt = prompt or f"stream {uuid.uuid4().hex}"
    prediction = await submit(
        model, user, prompt=prompt, seed=5, max_tokens=tokens, token_delay_ms=delay
    )
    return prediction, expected_text(prompt, 5, tokens)


async def test_a_finished_prediction_streams_its_whole_text_its_logs_then_done(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction, expected = await start_text(await sandbox_model("text"), member, delay=0)
    final = await wait_until_finished(prediction.pk)

    async with open_stream(api_shapes.stream_url(prediction.pk)) as reader:
        seen = await reader.rest()

    assert [e.event for e in seen] == ["output", "logs", "logs", "done"]
    assert seen[0].data == expected == final.text_output
    assert "".join(e.data + "\n" for e in seen if e.event == "logs") == final.logs
    assert seen[-1].data == "{}"
    assert_ids_are_offsets(seen)
    assert reader.comments[0] == ": hi"


async def test_a_live_stream_gives_exactly_the_text_with_offsets_as_ids(
    sandbox_model: MakeModel, member: User
) -> None:
    # A prompt whose text has line breaks (the sandbox's text follows from the prompt).
    model = await sandbox_model("text")
    prediction, expected = await start_text(model, member, prompt="stream lines 0")

    async with open_stream(api_shapes.stream_url(prediction.pk)) as reader:
        seen = await reader.rest()

    assert output_text(seen) == expected
    assert len([e for e in seen if e.event == "output"]) > 1  # it streamed
    assert {e.event for e in seen} <= {"output", "logs", "done"}
    assert seen[-1].event == "done" and seen[-1].data == "{}"
    assert_ids_are_offsets(seen)
    # Text with newlines went out as several data: lines, and came back whole.
    assert "\n" in expected


async def test_a_reader_reconnecting_with_last_event_id_gets_exactly_the_rest(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction, expected = await start_text(await sandbox_model("text"), member, tokens=120)
    url = api_shapes.stream_url(prediction.pk)

    async with open_stream(url) as reader:
        first = []
        while len([e for e in first if e.event == "output"]) < 3:
            event = await reader.next()
            assert event is not None and event.event != "done"
            first.append(event)
    last_id = first[-1].id
    assert last_id is not None
    async with open_stream(url, last_event_id=last_id) as reader:
        rest = await reader.rest()

    assert output_text(first) + output_text(rest) == expected
    assert rest[-1].event == "done"
    assert_ids_are_offsets(rest, start=offsets(first[-1]))
    # And one that comes back after the end gets only the end.
    async with open_stream(url, last_event_id=rest[-2].id) as reader:
        assert [(e.event, e.id) for e in await reader.rest()] == [("done", rest[-1].id)]


async def test_a_failed_prediction_ends_with_error_then_done(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("fail")
    prediction = await submit(model, member, message="boom on purpose", steps=3, step_delay_ms=0)
    final = await wait_until_finished(prediction.pk)

    async with open_stream(api_shapes.stream_url(prediction.pk)) as reader:
        seen = await reader.rest()

    assert final.status == "failed"
    assert output_text(seen) == final.text_output == "partial 1 partial 2 partial 3 "
    assert [e.event for e in seen[-2:]] == ["error", "done"]
    assert json.loads(seen[-2].data) == {"detail": final.error}
    assert "boom on purpose" in final.error
    assert json.loads(seen[-1].data) == {"reason": "error"}
    assert_ids_are_offsets(seen)


async def test_a_canceled_prediction_ends_with_done_canceled(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction = await submit(await sandbox_model("slow"), member, seconds=30)

    async with open_stream(api_shapes.stream_url(prediction.pk)) as reader:
        first = await reader.next()  # a log line: it is running
        assert first is not None and first.event == "logs"
        await runner.cancel(await Prediction.objects.aget(pk=prediction.pk))
        seen = [first, *await reader.rest()]

    assert (await Prediction.objects.aget(pk=prediction.pk)).status == "canceled"
    assert seen[-1].event == "done"
    assert json.loads(seen[-1].data) == {"reason": "canceled"}
    assert "error" not in [e.event for e in seen]
    assert_ids_are_offsets(seen)


async def test_gaps_are_filled_from_the_replay_log_then_from_a_newer_row(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("text")
    prediction = await Prediction.objects.acreate(
        owner=member, model=model, model_ref=model.ref, status="processing"
    )
    async with open_stream(api_shapes.stream_url(prediction.pk)) as reader:
        # Event 1 is logged but the channel layer drops it; event 2 arrives.
        await events.replay_log().append(prediction.pk, {"type": "output", "seq": 1, "text": "a"})
        await events.publish(prediction.pk, {"type": "output", "seq": 2, "text": "b\nc"})
        # (Events due together go out as one: ids are offsets, not event numbers.)
        seen = [await reader.next()]
        while output_text(seen) != "ab\nc":
            seen.append(await reader.next())
        assert seen[-1].id == "4:0"

        # Event 3 is nowhere (a runner that took over skipped it): the stream waits for a
        # row written past it, and goes on from that.
        await events.publish(prediction.pk, {"type": "output", "seq": 4, "text": "e"})
        await Prediction.objects.filter(pk=prediction.pk).aupdate(
            text_output="ab\ncde", logs="one\n", event_seq=4
        )
        healed = [await reader.next(), await reader.next()]
        assert [(e.event, e.data, e.id) for e in healed if e] == [
            ("output", "de", "6:0"),
            ("logs", "one", "6:4"),
        ]
        await events.publish(prediction.pk, {"type": "logs", "seq": 5, "text": "two\nthr"})
        assert await reader.next() == Event("logs", "6:8", "two")
        await Prediction.objects.filter(pk=prediction.pk).aupdate(
            status="succeeded", text_output="ab\ncde", logs="one\ntwo\nthree", event_seq=7
        )
        done = {"type": "done", "seq": 7, "prediction": await final_snapshot(prediction)}
        await events.publish(prediction.pk, done)
        assert await reader.rest() == [
            Event("logs", "6:13", "three"),
            Event("done", "6:13:done", "{}"),
        ]


async def final_snapshot(prediction: Prediction) -> dict[str, Any]:
    from predictions.database import db

    def read() -> dict[str, Any]:
        return events.serialize_prediction(Prediction.objects.get(pk=prediction.pk))

    return await db(read)()


async def test_an_idle_stream_sends_keepalive_comments(
    sandbox_model: MakeModel, member: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.05)
    model = await sandbox_model("text")
    prediction = await Prediction.objects.acreate(
        owner=member, model=model, model_ref=model.ref, status="processing"
    )
    async with open_stream(api_shapes.stream_url(prediction.pk)) as reader:

        async def kept_alive() -> bool:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await reader.next()
            return reader.comments.count(": keepalive") >= 2

        assert await wait_for(kept_alive, within=10)


async def test_a_reader_that_goes_away_leaves_the_group(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("text")
    prediction = await Prediction.objects.acreate(
        owner=member, model=model, model_ref=model.ref, status="processing"
    )
    group = events.prediction_group(prediction.pk)
    layer = get_channel_layer()
    async with open_stream(api_shapes.stream_url(prediction.pk)):

        async def joined() -> bool:
            return await group_size(layer, group) > 0

        assert await wait_for(joined)

    async def left() -> bool:
        return await group_size(layer, group) == 0

    assert await wait_for(left)


async def group_size(layer: Any, group: str) -> int:
    """How many channels are in `group`, on the in-memory layer or in Redis (where
    channels_redis keeps a group as a sorted set)."""
    if hasattr(layer, "groups"):
        return len(layer.groups.get(group, {}))
    connection = layer.connection(layer.consistent_hash(group))
    return int(await connection.zcard(layer._group_key(group)))


async def test_an_unknown_or_forged_token_is_a_json_404(member: User) -> None:
    prediction = await Prediction.objects.acreate(owner=member, model_ref="sandbox/text")
    good = api_shapes.stream_url(prediction.pk)
    forged = good[:-3] + ("abc" if not good.endswith("abc") else "xyz")
    other = api_shapes.stream_url(uuid.uuid4())  # signed, but no such prediction
    transport = StreamingASGITransport(application)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        for url in (forged, other, "/api/v1/streams/nonsense"):
            response = await client.get(url, headers={"Accept": "text/event-stream"})
            assert response.status_code == 404, url
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["detail"] == "The requested resource could not be found"
        refused = await client.post(good)
        assert refused.status_code == 405 and refused.json()["status"] == 405


async def test_the_official_python_client_reads_the_stream(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction, expected = await start_text(await sandbox_model("text"), member)
    # Until the gateway's create exists: the prediction as the gateway will describe it.
    client = replicate.Client(
        api_token="not-needed",
        base_url=f"{BASE}/api",
        transport=StreamingASGITransport(application),
    )
    described = _json_to_prediction(
        client,
        {
            "id": str(prediction.pk),
            "model": "sandbox/text",
            "version": "hidden",
            "status": "starting",
            "input": prediction.input,
            "urls": {"stream": BASE + api_shapes.stream_url(prediction.pk)},
        },
    )

    seen = [event async for event in described.async_stream()]

    assert "".join(str(event) for event in seen) == expected
    assert seen[-1].event.value == "done"
    assert {event.event.value for event in seen} <= {"output", "logs", "done"}


async def test_the_official_python_client_raises_the_models_error(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction = await submit(await sandbox_model("fail"), member, message="nope", steps=1)
    client = replicate.Client(
        api_token="not-needed",
        base_url=f"{BASE}/api",
        transport=StreamingASGITransport(application),
    )
    described = _json_to_prediction(
        client,
        {
            "id": str(prediction.pk),
            "model": "sandbox/fail",
            "version": "hidden",
            "status": "starting",
            "input": prediction.input,
            "urls": {"stream": BASE + api_shapes.stream_url(prediction.pk)},
        },
    )

    with pytest.raises(RuntimeError) as raised:
        async for _ in described.async_stream():
            pass

    assert "nope" in json.loads(str(raised.value))["detail"]


@pytest.mark.processes
def test_both_official_clients_read_a_stream_from_a_real_console_server(
    console_servers: Any,
    sandbox_model: MakeModel,
    member: User,
    js_client: Path,  # noqa: F811
) -> None:
    """Over real HTTP from a daphne console (inline executor): Replicate's Python client
    live, and its JavaScript client (Node) replaying the finished prediction."""
    model = async_to_sync(sandbox_model)("text")
    prompt = f"real http {uuid.uuid4().hex}"
    prediction = Prediction.objects.create(
        owner=member,
        model=model,
        model_ref=model.ref,
        input={"prompt": prompt, "seed": 3, "max_tokens": 60, "token_delay_ms": 10},
    )
    # Left "queued" long ago: the server's start-up reconciler runs it.
    Prediction.objects.filter(pk=prediction.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    server = console_servers()
    url = server.url + api_shapes.stream_url(prediction.pk)
    described = _json_to_prediction(
        replicate.Client(api_token="not-needed", base_url=f"{server.url}/api"),
        {
            "id": str(prediction.pk),
            "model": model.ref,
            "version": "hidden",
            "status": "starting",
            "input": prediction.input,
            "urls": {"stream": url},
        },
    )

    live = list(described.stream())

    expected = expected_text(prompt, 3, 60)
    assert "".join(str(event) for event in live) == expected
    assert live[-1].event.value == "done"
    wait_until(lambda: not Prediction.objects.get(pk=prediction.pk).is_active)

    result = subprocess.run(
        ["node", "scenarios.mjs", "stream-url"],
        cwd=js_client,
        env={**os.environ, "STREAM_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["text"] == expected
    assert seen["events"][0] == ["output", f"{len(expected)}:0"]
    assert seen["events"][-1][0] == "done"
