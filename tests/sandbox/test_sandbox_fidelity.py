"""The sandbox follows Replicate's real rules: community models, versions, listings, shapes.

Everything goes over HTTP to a real sandbox process, through the official client where it
has a call for it and through httpx where the test is about the wire.
"""

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError

from sandbox.demo_models import MODELS
from tests.waiting import wait_for

Factory = Callable[..., replicate.Client]
COMMUNITY = "sandbox-community/echo"


def auth(token: str, faults: str = "") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}:{faults}" if faults else f"Bearer {token}"}


async def wait_terminal(client: replicate.Client, prediction_id: str, within: float = 15) -> Any:
    async def terminal() -> Any:
        prediction = await client.predictions.async_get(prediction_id)
        return prediction if prediction.status in ("succeeded", "failed", "canceled") else None

    return await wait_for(terminal, within, what="prediction finished")


async def test_a_community_model_is_not_official_and_has_several_versions(
    sandbox_client: Factory,
):
    client = sandbox_client()
    model = await client.models.async_get(COMMUNITY)
    versions = await model.versions.async_list()
    raw = await client._async_request("GET", f"/v1/models/{COMMUNITY}")  # fields the client drops

    assert raw.json()["is_official"] is False
    assert len(versions.results) >= 3
    assert model.latest_version.id == versions.results[0].id


async def test_creating_a_community_model_by_name_is_404_as_on_replicate(
    sandbox_url: str, sandbox_token: str
):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}/v1/models/{COMMUNITY}/predictions",
            json={"input": {"text": "hi"}},
            headers=auth(sandbox_token),
        )

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"detail": "The requested resource could not be found", "status": 404}


async def test_a_community_model_needs_its_version_in_the_version_field(sandbox_client: Factory):
    client = sandbox_client()
    with pytest.raises(ReplicateError) as caught:
        await client.predictions.async_create(version=COMMUNITY, input={"text": "hi"})

    assert caught.value.status == 422
    assert caught.value.title == "Invalid version or not permitted"


@pytest.mark.parametrize("ref", sorted(MODELS))
async def test_every_model_runs_by_version_id_and_by_owner_name_version(
    sandbox_client: Factory, ref: str
):
    client = sandbox_client()
    demo = MODELS[ref]
    oldest = demo.versions[-1]
    inputs = {
        "sandbox/text": {"prompt": "hi", "max_tokens": 3, "token_delay_ms": 0},
        "sandbox/image": {"prompt": "hi", "width": 64, "height": 64, "num_inference_steps": 1},
        "sandbox/slow": {"seconds": 1},
        "sandbox/fail": {"steps": 0},
        COMMUNITY: {"text": "hi"},
    }[ref]

    by_id = await client.predictions.async_create(version=oldest.id, input=inputs)
    by_ref = await client.predictions.async_create(version=f"{ref}:{oldest.id}", input=inputs)

    for created in (by_id, by_ref):
        assert created.model == ref
        assert created.version == oldest.id
        finished = await wait_terminal(client, created.id)
        assert finished.status == ("failed" if ref == "sandbox/fail" else "succeeded")


async def test_the_version_that_ran_shows_in_the_community_output(sandbox_client: Factory):
    client = sandbox_client()
    versions = {v.label: v.id for v in MODELS[COMMUNITY].versions}

    created = await client.predictions.async_create(
        version=versions["v1"], input={"text": "hi", "separator": "-"}
    )
    finished = await wait_terminal(client, created.id)

    assert finished.output == "echo v1: hi"


async def test_models_are_listed_in_cursor_pages(sandbox_client: Factory):
    client = sandbox_client()
    pages = [page async for page in replicate.async_paginate(client.models.async_list)]
    listed = [f"{m.owner}/{m.name}" for page in pages for m in page.results]

    assert len(pages) > 1
    assert pages[0].next and "cursor=" in pages[0].next
    assert sorted(listed) == sorted(MODELS)


async def test_a_model_object_has_replicate_s_fields(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        model = (
            await http.get(f"{sandbox_url}/v1/models/sandbox/image", headers=auth(sandbox_token))
        ).json()
        page = await http.get(model["url"])
        example = model["default_example"]
        picture = await http.get(example["output"][0])

    assert model["created_at"].endswith("Z")
    assert "weights_url" in model
    assert "/v1/" not in model["url"] and page.status_code == 200
    assert "sandbox/image" in page.text
    assert example["status"] == "succeeded"
    assert example["model"] == "sandbox/image"
    assert picture.headers["content-type"] == "image/webp"


async def test_every_model_has_a_real_default_example(sandbox_client: Factory):
    client = sandbox_client()
    for ref in MODELS:
        model = await client.models.async_get(ref)
        assert model.default_example is not None, ref
        assert model.default_example.input == MODELS[ref].example_input
        assert model.default_example.output, ref


async def test_422_and_429_carry_their_reason_phrases(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        invalid = await http.post(
            f"{sandbox_url}/v1/models/sandbox/text/predictions",
            json={"input": {}},
            headers=auth(sandbox_token),
        )
        throttled = await http.post(
            f"{sandbox_url}/v1/models/sandbox/text/predictions",
            json={"input": {"prompt": "x"}},
            headers={
                **auth(sandbox_token),
                "X-Sandbox-Faults": f"create_429=1,scope={time.time()}",
            },
        )

    assert (invalid.status_code, invalid.reason_phrase) == (422, "Unprocessable Entity")
    assert (throttled.status_code, throttled.reason_phrase) == (429, "Too Many Requests")


async def test_a_cancel_answer_has_webhook_completed(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        created = await http.post(
            f"{sandbox_url}/v1/models/sandbox/slow/predictions",
            json={"input": {"seconds": 30}},
            headers=auth(sandbox_token),
        )
        canceled = await http.post(created.json()["urls"]["cancel"], headers=auth(sandbox_token))

    assert canceled.json()["status"] == "canceled"
    assert "webhook_completed" in canceled.json()
    assert set(canceled.json()["metrics"]) >= {"predict_time", "total_time"}


async def test_metrics_are_reported_as_replicate_does(sandbox_client: Factory):
    client = sandbox_client()
    text = await client.models.predictions.async_create(
        model="sandbox/text", input={"prompt": "one two three", "max_tokens": 5}, wait=10
    )
    image = await client.models.predictions.async_create(
        model="sandbox/image",
        input={"prompt": "p", "width": 64, "height": 64, "num_outputs": 2},
        wait=10,
    )
    text, image = await wait_terminal(client, text.id), await wait_terminal(client, image.id)

    assert text.metrics["input_token_count"] == 3
    assert text.metrics["output_token_count"] == 5
    assert text.metrics["time_to_first_token"] >= 0
    assert text.metrics["tokens_per_second"] > 0
    assert image.metrics["image_count"] == 2
    for metrics in (text.metrics, image.metrics):
        assert metrics["total_time"] >= metrics["predict_time"] > 0


async def test_a_stream_url_is_a_capability_that_keeps_the_creation_faults(
    sandbox_url: str, sandbox_token: str
):
    faults = f"cut_after=3,scope={time.time()}"
    async with httpx.AsyncClient() as http:
        created = await http.post(
            f"{sandbox_url}/v1/models/sandbox/text/predictions",
            json={"input": {"prompt": "p", "max_tokens": 10, "token_delay_ms": 0}},
            headers=auth(sandbox_token, faults),
        )
        stream_url = created.json()["urls"]["stream"]
        # No token at all: the URL itself is the permission.
        body = (await http.get(stream_url, timeout=10)).text
        guessed = await http.get(f"{sandbox_url}/v1/streams/{created.json()['id']}")

    assert created.json()["id"] not in stream_url
    assert body.count("event: ") == 3  # cut after 3 events, as the creating token asked
    assert "event: done" not in body
    assert guessed.status_code == 404


async def test_file_metadata_sent_as_a_json_file_part_is_kept(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}/v1/files",
            files={
                "content": ("notes.txt", b"hello", "text/plain"),
                "metadata": ("blob", json.dumps({"purpose": "test"}), "application/json"),
            },
            headers=auth(sandbox_token),
        )

    assert response.status_code == 201
    assert response.json()["metadata"] == {"purpose": "test"}
    assert response.json()["name"] == "notes.txt"


@pytest.mark.slow
async def test_cancel_after_aborts_what_never_started_and_cancels_what_runs(
    sandbox_url: str, sandbox_token: str, sandbox_client: Factory
):
    client = sandbox_client()
    scope = f"scope={time.time()}"
    async with httpx.AsyncClient() as http:
        never = await http.post(
            f"{sandbox_url}/v1/models/sandbox/slow/predictions",
            json={"input": {"seconds": 60}},
            headers={**auth(sandbox_token, f"stuck,{scope}"), "Cancel-After": "5s"},
        )
        running = await http.post(
            f"{sandbox_url}/v1/models/sandbox/slow/predictions",
            json={"input": {"seconds": 60}},
            headers={**auth(sandbox_token), "Cancel-After": "5"},
        )
        too_short = await http.post(
            f"{sandbox_url}/v1/models/sandbox/slow/predictions",
            json={"input": {"seconds": 60}},
            headers={**auth(sandbox_token), "Cancel-After": "2s"},
        )
        assert never.json()["deadline"] and running.json()["deadline"]
        finished = await wait_terminal(client, running.json()["id"], within=15)
        aborted = (await http.get(never.json()["urls"]["get"], headers=auth(sandbox_token))).json()

    assert finished.status == "canceled"
    assert aborted["status"] == "aborted"
    assert too_short.status_code == 400
