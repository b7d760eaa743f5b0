"""Executors: the Celery task on its worker loop, the reconciler, the server lifecycle."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.utils import timezone

from predictions import executors, tasks
from predictions.models import Prediction
from tests.engine_helpers import MakeModel, expected_text

pytestmark = pytest.mark.django_db(transaction=True)


def text_prediction(model: Any, owner: User, prompt: str) -> Prediction:
    return Prediction.objects.create(
        owner=owner,
        model=model,
        model_ref=model.ref,
        input={"prompt": prompt, "seed": 1, "max_tokens": 20, "token_delay_ms": 2},
    )


def test_the_celery_task_runs_many_predictions_on_one_persistent_loop(
    sandbox_model: MakeModel, member: User
) -> None:
    model = async_to_sync(sandbox_model)("text")
    prompts = [f"worker {n} {uuid.uuid4().hex}" for n in range(6)]
    predictions = [text_prediction(model, member, prompt) for prompt in prompts]

    # One after another (asyncio.run per task would fail here: "Event loop is closed") …
    assert tasks.run_prediction(str(predictions[0].pk)) == "finished"
    assert tasks.run_prediction(str(predictions[1].pk)) == "finished"
    # … and several at once from pool threads, all on the same loop.
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(tasks.run_prediction, [str(p.pk) for p in predictions[2:]]))

    assert outcomes == ["finished"] * 4
    for prediction, prompt in zip(predictions, prompts, strict=True):
        prediction.refresh_from_db()
        assert prediction.status == "succeeded"
        assert prediction.text_output == expected_text(prompt, 1, 20)
    assert tasks.run_prediction(str(predictions[0].pk)) == "busy"  # a redelivery is harmless


def test_the_reconciler_resumes_only_predictions_whose_runner_went_quiet(
    member: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[str] = []
    monkeypatch.setattr(tasks.run_prediction, "delay", queued.append)
    long_ago = timezone.now() - timedelta(minutes=10)
    stale, fresh, done = (
        Prediction.objects.create(owner=member, model_ref="m/x", status=status)
        for status in ("processing", "processing", "succeeded")
    )
    Prediction.objects.filter(pk__in=[stale.pk, done.pk]).update(updated_at=long_ago)

    def others() -> list[tuple[str, object]]:
        rows = Prediction.objects.filter(pk__in=[fresh.pk, done.pk]).order_by("status")
        return [(p.status, p.updated_at) for p in rows]

    before = others()
    assert tasks.reconcile_predictions() == 1
    assert queued == [str(stale.pk)]
    # The live runner's row and the finished one are neither queued nor written to.
    assert others() == before
    assert [status for status, _ in before] == ["processing", "succeeded"]


async def test_with_celery_the_row_exists_before_the_task_is_queued(
    sandbox_model: MakeModel, member: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PREDICTION_EXECUTOR = "celery"
    seen: list[tuple[str, str]] = []

    def delay(prediction_id: str) -> None:
        # Called from a thread, as a broker publish would be: the row must be there.
        seen.append((prediction_id, Prediction.objects.get(pk=prediction_id).status))

    monkeypatch.setattr(tasks.run_prediction, "delay", delay)
    model = await sandbox_model("text")

    prediction = await executors.start_prediction(
        owner=member, model=model, input={"prompt": "queued"}, source="web"
    )

    assert seen == [(str(prediction.pk), "queued")]
    assert prediction.model_ref == "sandbox/text" and prediction.version == model.version


async def test_the_lifecycle_starts_and_stops_the_inline_executor_on_lifespan() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        raise AssertionError("lifespan must not reach the application")

    lifecycle = executors.ServerLifecycle(app)
    inbox: asyncio.Queue[dict] = asyncio.Queue()
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        inbox.put_nowait(message)
    started = asyncio.Event()
    original_start = executors.inline.start

    def start() -> None:
        original_start()
        started.set()

    executors.inline.start = start  # type: ignore[method-assign]
    try:
        await lifecycle({"type": "lifespan"}, inbox.get, send)
    finally:
        executors.inline.start = original_start  # type: ignore[method-assign]

    assert started.is_set()
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert executors.inline.loop is None  # stopped: its reconciler is gone
