"""The production shape, small: two daphne processes and a Celery worker on Redis (and this
session's database). A member submits on one web process and watches on the other; the
worker dies mid-stream, another takes over; the watcher ends with exactly the model's text,
and either web process's /metrics counts the run the worker finished."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest
import websockets
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User

from predictions.models import Prediction
from tests.engine_helpers import MakeModel, expected_text, upstream_predictions
from tests.test_burst import session_cookie
from tests.waiting import wait_until

if TYPE_CHECKING:
    from tests.console_server import ConsoleServer, Workers

pytestmark = [pytest.mark.services, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TOKENS = 300
SEED = 3
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex


async def watch(
    server: ConsoleServer, cookie: str, pk: str, ready: asyncio.Event
) -> tuple[str, str]:
    """Follow a prediction to `done` as the browser does (a gap asks for a resync): the
    text assembled from the events, and the final text."""
    url = f"ws://127.0.0.1:{server.port}/ws/predictions/{pk}/"
    async with websockets.connect(
        url, origin=server.url, additional_headers={"Cookie": cookie}
    ) as ws:
        text, seq = "", 0
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "snapshot":
                text, seq = message["prediction"]["text_output"], message["seq"]
                ready.set()
            elif message["type"] == "done":
                return text, message["prediction"]["text_output"]
            elif message.get("seq", 0) == seq + 1:
                seq = message["seq"]
                text += message.get("text", "") if message["type"] == "output" else ""
            elif message.get("seq", 0) > seq:
                await ws.send(json.dumps({"type": "resync", "after": seq}))
    raise AssertionError("socket closed before done")


def test_submit_on_one_web_process_watch_on_another_and_survive_a_killed_worker(
    console_servers: Callable[..., ConsoleServer],
    celery_workers: Workers,
    sandbox_model: MakeModel,
    member: User,
    sandbox_url: str,
    sandbox_token: str,
) -> None:
    async_to_sync(sandbox_model)("text")
    worker = celery_workers.start()
    env = {
        "PREDICTION_EXECUTOR": "celery",
        "REDIS_URL": celery_workers.env["REDIS_URL"],
        "CELERY_TASK_DEFAULT_QUEUE": celery_workers.queue,
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    submit_on, watch_on = console_servers(**env), console_servers(**env)
    cookie = f"sessionid={session_cookie(member)}"
    prompt = f"two webs {uuid.uuid4().hex[:8]}"

    # Submitted through the form on the first web process.
    with httpx.Client(base_url=submit_on.url, headers={"Cookie": cookie}, timeout=30) as client:
        csrf = client.get("/models/sandbox/text/").cookies["csrftoken"]
        client.headers["Cookie"] = f"{cookie}; csrftoken={csrf}"
        data = {"csrfmiddlewaretoken": csrf, "prompt": prompt, "seed": str(SEED)}
        data |= {"max_tokens": str(TOKENS), "token_delay_ms": "15"}
        answer = client.post("/models/sandbox/text/", data=data)
    assert answer.status_code == 303, answer.text[:300]
    pk = answer.headers["location"].rstrip("/").rsplit("/", 1)[-1]

    async def scenario() -> tuple[str, str]:
        ready = asyncio.Event()
        watcher = asyncio.create_task(watch(watch_on, cookie, pk, ready))
        await asyncio.wait_for(ready.wait(), 30)

        def mid_stream() -> bool:
            row = Prediction.objects.get(pk=pk)
            return bool(row.upstream_id and len(row.text_output) > 20 and row.is_active)

        await asyncio.to_thread(wait_until, mid_stream, 60.0)
        worker.kill()
        celery_workers.start()

        async def resume_until_done() -> None:
            # What beat does every 15 s in production, more often here.
            while not watcher.done():
                celery_workers.send("predictions.reconcile_predictions")
                await asyncio.sleep(1.0)

        resumer = asyncio.create_task(resume_until_done())
        try:
            return await asyncio.wait_for(watcher, 90)
        finally:
            resumer.cancel()

    assembled, final_text = asyncio.run(scenario())

    expected = expected_text(prompt, SEED, TOKENS)
    final = Prediction.objects.get(pk=pk)
    assert final.status == "succeeded"
    assert final_text == final.text_output == expected
    # Across a killed worker the live deltas may lag (`done` carries the whole final
    # prediction and the page shows that), but they never show text the model did not make.
    assert expected.startswith(assembled)
    listed = upstream_predictions(sandbox_url, sandbox_token)
    assert sum(1 for p in listed if p["input"].get("prompt") == prompt) == 1

    # Metrics are summed across processes: the first web process reports the run that
    # the second worker finished.
    metrics = httpx.get(
        f"{submit_on.url}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    )
    assert metrics.status_code == 200
    assert 'console_predictions_total{model="sandbox/text",status="succeeded"}' in metrics.text
    ready = httpx.get(f"{watch_on.url}/readyz", timeout=10).json()
    assert ready["checks"]["celery_workers"] == "ok"
