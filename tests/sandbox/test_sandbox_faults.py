"""Fault injection: every mode, by token suffix and by header."""

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError

Factory = Callable[..., replicate.Client]
QUICK_TEXT = {"prompt": "faults", "max_tokens": 20, "token_delay_ms": 5, "seed": 1}


def fresh(spec: str) -> str:
    """The spec with its own counters (they are kept per spec string)."""
    return f"{spec},scope={uuid.uuid4().hex}"


async def test_latency_delays_every_answer(sandbox_client: Factory):
    client = sandbox_client(fresh("latency=300"))

    started = time.monotonic()
    await client.accounts.async_current()

    assert time.monotonic() - started >= 0.3


async def test_create_429_throttles_the_first_creates_only(sandbox_client: Factory):
    client = sandbox_client(fresh("create_429=2"))

    for _ in range(2):
        with pytest.raises(ReplicateError) as error:
            await client.async_run("sandbox/text", input=QUICK_TEXT)
        assert error.value.status == 429
    output = await client.async_run("sandbox/text", input=QUICK_TEXT)

    assert len(output) == QUICK_TEXT["max_tokens"]


async def test_faults_can_come_in_a_header(sandbox_client: Factory):
    client = sandbox_client(headers={"X-Sandbox-Faults": fresh("create_429=1")})

    with pytest.raises(ReplicateError) as error:
        await client.async_run("sandbox/text", input=QUICK_TEXT)
    output = await client.async_run("sandbox/text", input=QUICK_TEXT)

    assert error.value.status == 429
    assert len(output) == QUICK_TEXT["max_tokens"]


async def test_read_5xx_fails_the_first_gets_of_each_prediction(sandbox_client: Factory):
    plain = sandbox_client()
    faulty = sandbox_client(fresh("read_5xx=2"))
    first = await plain.models.predictions.async_create(model="sandbox/text", input=QUICK_TEXT)
    second = await plain.models.predictions.async_create(model="sandbox/text", input=QUICK_TEXT)

    for _ in range(2):
        with pytest.raises(ReplicateError) as error:
            await faulty.predictions.async_get(first.id)
        assert error.value.status == 500
    assert (await faulty.predictions.async_get(first.id)).id == first.id
    with pytest.raises(ReplicateError):
        await faulty.predictions.async_get(second.id)


async def test_read_503_is_retried_by_the_client_on_its_own(
    sandbox_url: str, sandbox_token: str, sandbox_client: Factory
):
    spec = fresh("read_503=2")
    prediction = await sandbox_client().models.predictions.async_create(
        model="sandbox/text", input=QUICK_TEXT
    )

    fetched = await sandbox_client(spec).predictions.async_get(prediction.id)
    async with httpx.AsyncClient() as http:
        raw = await http.get(
            f"{sandbox_url}/v1/predictions/{prediction.id}",
            headers={"Authorization": f"Bearer {sandbox_token}:{fresh('read_503=1')}"},
        )

    assert fetched.id == prediction.id
    assert raw.status_code == 503
    assert raw.headers["Retry-After"] == "0"


async def test_cut_after_drops_the_stream_but_the_prediction_finishes(sandbox_client: Factory):
    client = sandbox_client(fresh("cut_after=5"))
    text_input = {**QUICK_TEXT, "token_delay_ms": 10}

    prediction = await client.models.predictions.async_create(
        model="sandbox/text", input=text_input, stream=True
    )

    events = [event async for event in prediction.async_stream()]
    await asyncio.wait_for(prediction.async_wait(), timeout=5)

    assert len(events) == 5
    assert "done" not in [e.event.value for e in events]
    assert prediction.status == "succeeded"
    assert len(prediction.output) == text_input["max_tokens"]


@pytest.mark.slow
async def test_stuck_predictions_stay_starting_until_canceled(sandbox_client: Factory):
    client = sandbox_client(fresh("stuck"))

    prediction = await client.models.predictions.async_create(
        model="sandbox/text", input=QUICK_TEXT, wait=1
    )
    still = await client.predictions.async_get(prediction.id)
    canceled = await client.predictions.async_cancel(prediction.id)

    assert prediction.status == "starting"
    assert still.status == "starting"
    assert canceled.status == "canceled"
    assert canceled.started_at is None


async def test_a_malformed_fault_spec_is_a_400(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{sandbox_url}/v1/account",
            headers={"Authorization": f"Bearer {sandbox_token}", "X-Sandbox-Faults": "explode"},
        )

    assert response.status_code == 400
    assert response.json()["title"] == "Invalid fault specification"
