"""The runner against the sandbox over HTTP, in the test process (inline executor)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.utils import timezone

from predictions import events, runner, upstream
from predictions.models import OutputFile, Prediction
from tests.engine_helpers import (
    MakeModel,
    creates_for,
    expected_text,
    submit,
    wait_for,
    wait_until_finished,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]


class Watcher:
    """Listens on a prediction's group like a consumer does and keeps every event."""

    def __init__(self, prediction_id: uuid.UUID) -> None:
        self.group = events.prediction_group(prediction_id)
        self.layer = get_channel_layer()
        self.events: list[dict[str, Any]] = []

    async def __aenter__(self) -> Watcher:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.layer.group_discard(self.group, self.channel)

    async def until_done(self) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while True:
                event = (await self.layer.receive(self.channel))["event"]
                self.events.append(event)
                if event["type"] == events.DONE:
                    return event

    def text(self) -> str:
        return "".join(e["text"] for e in self.events if e["type"] == events.OUTPUT)


async def test_a_streamed_text_prediction_arrives_whole_and_in_order(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("text")
    prompt = f"streams {uuid.uuid4().hex}"
    prediction = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        input={"prompt": prompt, "max_tokens": 60, "seed": 7, "token_delay_ms": 5},
    )
    async with Watcher(prediction.pk) as watcher:
        await runner.run_prediction(prediction.pk)
        done = await watcher.until_done()

    final = await Prediction.objects.aget(pk=prediction.pk)
    assert final.status == "succeeded"
    assert final.text_output == expected_text(prompt, 7, 60) == "".join(final.output)
    # Deltas, not the whole text each time; numbered 1, 2, 3 … with nothing missing.
    assert watcher.text() == final.text_output
    assert [e["seq"] for e in watcher.events] == list(range(1, len(watcher.events) + 1))
    assert watcher.events[0]["type"] == "status"
    assert done["prediction"]["text_output"] == final.text_output
    assert done["seq"] == final.event_seq
    # Tokens were batched (60 tokens 5 ms apart: ~300 ms, so a handful of events).
    assert len([e for e in watcher.events if e["type"] == "output"]) < 30
    assert final.upstream_id and final.completed_at and final.metrics.get("predict_time")


async def test_every_status_event_says_when_the_prediction_started(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("text")
    prediction = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        input={"prompt": "timeline", "max_tokens": 10, "seed": 3, "token_delay_ms": 40},
    )
    async with Watcher(prediction.pk) as watcher:
        await runner.run_prediction(prediction.pk)
        await watcher.until_done()

    final = await Prediction.objects.aget(pk=prediction.pk)
    assert final.started_at is not None
    statuses = [e for e in watcher.events if e["type"] == events.STATUS]
    assert [e["status"] for e in statuses] == ["starting", "processing"]
    # Not started yet, then the row's own start, so a page draws the timeline from events.
    assert [e["started_at"] for e in statuses] == [None, final.started_at.isoformat()]


async def test_a_pinned_version_runs_that_version(sandbox_model: MakeModel, member: User) -> None:
    model = await sandbox_model("text", pinned=True)

    prediction = await submit(model, member, prompt="pinned", max_tokens=5, token_delay_ms=0)

    final = await wait_until_finished(prediction.pk)
    assert final.status == "succeeded"
    assert final.version == model.version
    assert final.text_output == "".join(final.output)


async def test_image_outputs_are_copied_into_our_storage(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("image")

    prediction = await submit(
        model, member, prompt="a lantern", num_outputs=2, num_inference_steps=2, output_format="png"
    )

    final = await wait_until_finished(prediction.pk)
    assert final.status == "succeeded"
    files = [f async for f in OutputFile.objects.filter(prediction=final).order_by("position")]
    assert [f.position for f in files] == [0, 1]
    assert final.output == [f"/predictions/{final.pk}/files/{n}/" for n in (0, 1)]
    for output_file in files:
        content = output_file.file.read()
        assert content.startswith(b"\x89PNG")
        assert output_file.content_type == "image/png"
        assert output_file.size == len(content)
        assert output_file.sha256 == hashlib.sha256(content).hexdigest()
        assert "/delivery/" in output_file.original_url
    assert "100%|" in final.logs


async def test_a_failing_model_fails_with_its_own_message(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("fail")

    prediction = await submit(model, member, message="Out of crayons", steps=2, step_delay_ms=10)

    final = await wait_until_finished(prediction.pk)
    assert final.status == "failed"
    assert final.error == "Out of crayons"
    assert "step 2/2" in final.logs


@pytest.mark.slow
async def test_rate_limited_creates_are_retried_and_create_one_prediction(
    sandbox_model: MakeModel, member: User, sandbox_url: str, sandbox_token: str
) -> None:
    model = await sandbox_model("text", faults="create_429=2")
    prompt = f"throttled {uuid.uuid4().hex}"

    prediction = await submit(model, member, prompt=prompt, max_tokens=5, token_delay_ms=0)

    final = await wait_until_finished(prediction.pk)
    assert final.status == "succeeded"
    assert await creates_for(sandbox_url, sandbox_token, prompt) == 1


@pytest.mark.slow
async def test_creates_stop_being_retried_with_a_clear_error(
    sandbox_model: MakeModel, member: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "CREATE_ATTEMPTS", 2)
    model = await sandbox_model("text", faults="create_429=5")

    prediction = await submit(model, member, prompt="never", max_tokens=5)

    final = await wait_until_finished(prediction.pk)
    assert final.status == "failed"
    assert final.error.startswith("Could not start the prediction after 2 attempts: Rate limited")
    assert final.upstream_id is None


@pytest.mark.slow
async def test_a_cut_stream_and_failing_reads_still_give_the_exact_text(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("text", faults="cut_after=4,read_5xx=2")
    prompt = f"cut {uuid.uuid4().hex}"

    prediction = await submit(model, member, prompt=prompt, seed=3, max_tokens=80, token_delay_ms=5)

    final = await wait_until_finished(prediction.pk)
    assert final.status == "succeeded"
    assert final.text_output == expected_text(prompt, 3, 80)


@pytest.mark.slow
async def test_a_deadline_too_short_for_cancel_after_is_kept_by_the_console(
    sandbox_model: MakeModel, member: User, sandbox_client: Any
) -> None:
    model = await sandbox_model("text", faults="stuck", deadline_seconds=1)

    prediction = await submit(model, member, prompt="stuck", max_tokens=5)

    final = await wait_until_finished(prediction.pk)
    assert final.status == "canceled"
    assert final.error == (
        "Stopped after 1 second: sandbox/text did not finish within its deadline, "
        "so the console canceled it."
    )
    remote = await sandbox_client().predictions.async_get(final.upstream_id)
    assert remote.status == "canceled"


@pytest.mark.slow
async def test_cancel_asks_upstream_and_the_final_state_comes_from_it(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("slow")
    prediction = await submit(model, member, seconds=30)
    await wait_for(
        lambda: Prediction.objects.filter(pk=prediction.pk, status="processing").aexists()
    )

    row = await Prediction.objects.aget(pk=prediction.pk)
    assert await runner.cancel(row) is True
    assert row.is_canceling

    final = await wait_until_finished(prediction.pk, within=10)
    assert final.status == "canceled"
    assert final.cancel_requested_at is not None
    assert final.error == ""


async def test_cancel_before_any_runner_started_cancels_here(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("text")
    prediction = await Prediction.objects.acreate(
        owner=member, model=model, model_ref=model.ref, input={"prompt": "x"}
    )

    assert await runner.cancel(prediction) is True

    assert prediction.status == "canceled"
    assert await runner.run_prediction(prediction.pk) == "busy"
    assert await runner.cancel(prediction) is False


async def test_a_second_runner_for_the_same_prediction_stands_aside(
    sandbox_model: MakeModel, member: User, sandbox_url: str, sandbox_token: str
) -> None:
    model = await sandbox_model("text")
    prompt = f"twice {uuid.uuid4().hex}"
    prediction = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        input={"prompt": prompt, "max_tokens": 20, "token_delay_ms": 5},
    )

    outcomes = await asyncio.gather(*(runner.run_prediction(prediction.pk) for _ in range(3)))

    assert sorted(outcomes) == ["busy", "busy", "finished"]
    assert await creates_for(sandbox_url, sandbox_token, prompt) == 1


@pytest.mark.slow
async def test_a_runner_stopped_midway_hands_back_and_the_next_resumes_without_a_new_create(
    sandbox_model: MakeModel, member: User, sandbox_url: str, sandbox_token: str
) -> None:
    model = await sandbox_model("text")
    prompt = f"resume {uuid.uuid4().hex}"
    prediction = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        input={"prompt": prompt, "seed": 5, "max_tokens": 300, "token_delay_ms": 10},
    )
    first = asyncio.create_task(runner.run_prediction(prediction.pk))
    await wait_for(
        lambda: Prediction.objects.filter(pk=prediction.pk).exclude(text_output="").aexists()
    )

    first.cancel()  # as at server shutdown
    with pytest.raises(asyncio.CancelledError):
        await first
    handed_back = await Prediction.objects.aget(pk=prediction.pk)
    assert handed_back.is_active and handed_back.upstream_id
    assert await runner.run_prediction(prediction.pk) == "finished"

    final = await Prediction.objects.aget(pk=prediction.pk)
    assert final.status == "succeeded"
    assert final.text_output == expected_text(prompt, 5, 300)
    assert final.upstream_id == handed_back.upstream_id
    assert await creates_for(sandbox_url, sandbox_token, prompt) == 1


async def test_a_runner_stopped_while_creating_still_records_what_it_created(
    sandbox_model: MakeModel,
    member: User,
    sandbox_url: str,
    sandbox_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = await sandbox_model("text", faults="latency=400")  # the create takes 400 ms
    prompt = f"mid-create {uuid.uuid4().hex}"
    prediction = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        input={"prompt": prompt, "seed": 8, "max_tokens": 10, "token_delay_ms": 0},
    )
    on_the_wire = asyncio.Event()
    send = httpx.AsyncClient.send

    async def send_and_tell(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        """Set `on_the_wire` once the create's body is written (httpcore's trace hook)."""

        async def trace(name: str, info: dict[str, Any]) -> None:
            if name == "http11.send_request_body.complete":
                on_the_wire.set()

        if request.method == "POST" and request.url.path.endswith("/predictions"):
            request.extensions = {**request.extensions, "trace": trace}
        return await send(self, request, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", send_and_tell)
    first = asyncio.create_task(runner.run_prediction(prediction.pk))
    await asyncio.wait_for(on_the_wire.wait(), 10)  # its answer is 400 ms away

    first.cancel()  # shutdown while the create request is in flight
    with pytest.raises(asyncio.CancelledError):
        await first

    handed_back = await Prediction.objects.aget(pk=prediction.pk)
    assert handed_back.upstream_id  # the create landed and its id was kept
    assert await runner.run_prediction(prediction.pk) == "finished"
    final = await Prediction.objects.aget(pk=prediction.pk)
    assert final.text_output == expected_text(prompt, 8, 10)
    assert await creates_for(sandbox_url, sandbox_token, prompt) == 1


async def test_without_a_token_the_prediction_fails_saying_so(member: User) -> None:
    from predictions.models import CatalogModel

    model = await CatalogModel.objects.acreate(owner="nobody", name="tokenless")

    prediction = await submit(model, member, prompt="x")

    final = await wait_until_finished(prediction.pk)
    assert final.status == "failed"
    assert "No Replicate API token is configured" in final.error


def test_progress_is_read_from_tqdm_lines() -> None:
    logs = "Using seed: 1\n 40%|████      | 4/10 [00:04<00:06, 1.00it/s]\n"

    assert events.parse_progress(logs) == {"percent": 40.0, "current": 4, "total": 10}
    assert events.parse_progress("no progress here\n") is None


async def test_a_runner_that_died_before_saving_the_upstream_id_is_resumed_not_repeated(
    sandbox_model: MakeModel, member: User, sandbox_url: str, sandbox_token: str
) -> None:
    model = await sandbox_model("text")
    prompt = f"orphan {uuid.uuid4().hex}"
    model_input = {"prompt": prompt, "seed": 4, "max_tokens": 30, "token_delay_ms": 5}
    # What a runner killed right after its create leaves: a claimed row naming no upstream
    # prediction, gone quiet, and the prediction running upstream.
    row = await Prediction.objects.acreate(
        owner=member, model=model, model_ref=model.ref, input=model_input, status="starting"
    )
    quiet = timezone.now() - timedelta(seconds=2 * runner.lease_seconds())
    await Prediction.objects.filter(pk=row.pk).aupdate(updated_at=quiet)
    creds = await sync_to_async(upstream.credentials_for)(model.token)
    created = await upstream.create_prediction(
        creds, model_ref=model.ref, version="", input=model_input, stream=True
    )

    assert await runner.run_prediction(row.pk) == "finished"

    final = await Prediction.objects.aget(pk=row.pk)
    assert final.upstream_id == created.id
    assert final.status == "succeeded"
    assert final.text_output == expected_text(prompt, 4, 30)
    assert await creates_for(sandbox_url, sandbox_token, prompt) == 1
