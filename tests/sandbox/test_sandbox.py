"""The sandbox through the official replicate client, against a real daphne process."""

import asyncio
import base64
import hashlib
import io
import time
from collections.abc import Callable

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ModelError

from sandbox.demo_models import MODELS, text_tokens
from tests.sandbox_server import TEST_TOKEN
from tests.waiting import wait_for

TEXT = {"prompt": "Tell me about rivers", "max_tokens": 40, "token_delay_ms": 1, "seed": 7}


@pytest.fixture
def replicate_client(sandbox_client: Callable[..., replicate.Client]) -> replicate.Client:
    return sandbox_client()


def latest_version(ref: str) -> str:
    return MODELS[ref].latest_version.id


async def test_async_run_by_name_returns_the_whole_answer(replicate_client: replicate.Client):
    output = await replicate_client.async_run("sandbox/text", input=TEXT)

    assert output == text_tokens(TEXT["prompt"], TEXT["seed"], TEXT["max_tokens"])


async def test_async_run_with_a_version_yields_the_same_tokens_one_by_one(
    replicate_client: replicate.Client,
):
    ref = f"sandbox/text:{latest_version('sandbox/text')}"

    tokens = [token async for token in await replicate_client.async_run(ref, input=TEXT)]

    assert tokens == text_tokens(TEXT["prompt"], TEXT["seed"], TEXT["max_tokens"])


async def test_text_depends_only_on_prompt_and_seed(replicate_client: replicate.Client):
    base = {"prompt": "same prompt", "max_tokens": 20, "token_delay_ms": 0}

    first = await replicate_client.async_run("sandbox/text", input={**base, "seed": 1})
    again = await replicate_client.async_run("sandbox/text", input={**base, "seed": 1})
    other = await replicate_client.async_run("sandbox/text", input={**base, "seed": 2})
    unseeded = await replicate_client.async_run("sandbox/text", input=base)

    assert first == again
    assert first != other
    assert unseeded == await replicate_client.async_run("sandbox/text", input=base)


async def test_text_has_exactly_max_tokens_with_spaces_newlines_and_unicode(
    replicate_client: replicate.Client,
):
    text_input = {"prompt": "x", "max_tokens": 300, "token_delay_ms": 0, "seed": 3}

    tokens = await replicate_client.async_run("sandbox/text", input=text_input)

    assert len(tokens) == 300
    assert any("\n" in token for token in tokens)
    assert any(not token.isascii() for token in tokens)
    assert sum(token.startswith(" ") for token in tokens) > 200


async def test_async_stream_tokens_concatenate_to_the_final_output(
    replicate_client: replicate.Client,
):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/text", input=TEXT, stream=True
    )

    events = [event async for event in prediction.async_stream()]
    await prediction.async_reload()

    outputs = [str(event) for event in events if event.event.value == "output"]
    assert outputs == prediction.output
    assert "".join(outputs) == "".join(text_tokens(TEXT["prompt"], TEXT["seed"], 40))
    assert events[-1].event.value == "done"
    assert events[-1].data == "{}"


async def test_client_async_stream_matches_async_run(replicate_client: replicate.Client):
    streamed = [
        str(event)
        async for event in await replicate_client.async_stream("sandbox/text", input=TEXT)
    ]

    assert "".join(streamed) == "".join(await replicate_client.async_run("sandbox/text", TEXT))


async def test_a_late_subscriber_gets_every_event_replayed(replicate_client: replicate.Client):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/text", input=TEXT, wait=True
    )
    assert prediction.status == "succeeded"

    events = [event async for event in prediction.async_stream()]

    assert [str(e) for e in events if e.event.value == "output"] == prediction.output
    assert events[-1].event.value == "done"


async def test_a_failing_stream_raises_with_the_error_detail(replicate_client: replicate.Client):
    fail_input = {"message": "out of cheese", "steps": 2, "step_delay_ms": 0}

    with pytest.raises(RuntimeError, match='"detail": "out of cheese"'):
        async for _ in await replicate_client.async_stream("sandbox/fail", input=fail_input):
            pass


async def test_a_failing_run_raises_model_error_with_logs(replicate_client: replicate.Client):
    with pytest.raises(ModelError) as failure:
        await replicate_client.async_run("sandbox/fail", input={"steps": 2, "step_delay_ms": 0})

    assert str(failure.value) == "Sandbox model failed on purpose"
    assert failure.value.prediction.status == "failed"
    assert "step 2/2" in failure.value.prediction.logs


@pytest.mark.slow
async def test_a_prediction_goes_from_starting_through_processing_to_succeeded(
    replicate_client: replicate.Client,
):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/slow", input={"seconds": 1, "message": "ok"}
    )
    assert prediction.status == "starting"
    assert prediction.output is None
    seen = {prediction.status}

    async def finished() -> bool:
        await prediction.async_reload()
        seen.add(prediction.status)
        return prediction.status == "succeeded"

    await wait_for(finished, within=5, what="prediction succeeded")

    assert seen == {"starting", "processing", "succeeded"}
    assert prediction.output == "ok"
    assert prediction.progress is not None and prediction.progress.percentage == 1.0
    assert prediction.metrics["predict_time"] >= 0.9
    assert prediction.metrics["total_time"] >= prediction.metrics["predict_time"]
    assert prediction.completed_at.endswith("Z")
    assert prediction.urls["stream"].startswith("http://127.0.0.1:")
    assert prediction.version == latest_version("sandbox/slow")


@pytest.mark.slow
async def test_prefer_wait_answers_starting_without_output_when_the_window_ends(
    replicate_client: replicate.Client,
):
    started = time.monotonic()

    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/slow", input={"seconds": 3}, wait=1
    )

    assert 0.9 < time.monotonic() - started < 2.5
    assert prediction.status == "starting"
    assert prediction.output is None
    await replicate_client.predictions.async_cancel(prediction.id)


async def test_prefer_wait_answers_with_the_complete_prediction(
    sandbox_url: str, sandbox_token: str
):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}/v1/models/sandbox/text/predictions",
            json={"input": TEXT},
            headers={"Authorization": f"Bearer {sandbox_token}", "Prefer": "wait=10"},
        )

    body = response.json()
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "wait=10"
    assert body["status"] == "succeeded"
    assert len(body["output"]) == TEXT["max_tokens"]
    assert set(body) >= {"id", "model", "version", "urls", "logs", "metrics", "data_removed"}
    assert "deployment" not in body


async def test_cancel_stops_a_running_prediction(replicate_client: replicate.Client):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/slow", input={"seconds": 30}
    )

    canceled = await replicate_client.predictions.async_cancel(prediction.id)
    reloaded = await replicate_client.predictions.async_get(prediction.id)

    assert canceled.status == "canceled"
    assert reloaded.status == "canceled"
    assert reloaded.completed_at is not None


async def test_images_are_served_as_files_in_the_requested_format(
    replicate_client: replicate.Client,
):
    image_input = {
        "prompt": "a lighthouse at dusk",
        "width": 96,
        "height": 64,
        "num_outputs": 2,
        "num_inference_steps": 2,
        "output_format": "png",
    }

    urls = await replicate_client.async_run("sandbox/image", input=image_input)

    assert len(urls) == 2 and urls[0] != urls[1]
    async with httpx.AsyncClient() as http:
        for url in urls:
            response = await http.get(url)
            assert response.headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(response.content)).size == (96, 64)


async def test_image_prediction_has_progress_logs_and_no_stream(
    replicate_client: replicate.Client,
):
    image_input = {"prompt": "p", "width": 64, "height": 64, "num_inference_steps": 3}

    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/image", input=image_input, wait=True
    )

    assert "stream" not in prediction.urls
    assert "100%|██████████| 3/3" in prediction.logs
    assert prediction.output[0].endswith(".webp")


async def test_image_uses_an_uploaded_file_or_data_uri_as_init_image(
    replicate_client: replicate.Client,
):
    picture = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(picture, format="PNG")
    uploaded = await replicate_client.files.async_create(io.BytesIO(picture.getvalue()))
    data_uri = "data:image/png;base64," + base64.b64encode(picture.getvalue()).decode()

    for image in (uploaded.urls["get"], data_uri):
        prediction = await replicate_client.models.predictions.async_create(
            model="sandbox/image",
            input={"prompt": "p", "image": image, "width": 64, "height": 64},
            wait=True,
        )
        assert prediction.status == "succeeded", prediction.error
        assert "Loaded init image" in prediction.logs


async def test_an_init_image_elsewhere_is_refused_and_fails_the_prediction(
    replicate_client: replicate.Client,
):
    # Fetching any URL would let a prediction's input reach internal services (SSRF).
    with pytest.raises(ModelError, match="only data: URIs and this sandbox's own"):
        await replicate_client.async_run(
            "sandbox/image", input={"prompt": "p", "image": "http://127.0.0.1:9/missing.png"}
        )


async def test_models_have_cog_schemas_and_two_stable_versions(
    replicate_client: replicate.Client,
):
    for ref, local in MODELS.items():
        model = await replicate_client.models.async_get(ref)
        versions = await model.versions.async_list()

        assert model.latest_version.id == local.latest_version.id
        assert len(model.latest_version.id) == 64
        assert [v.id for v in versions] == [v.id for v in local.versions]
        assert len(versions) >= 2
        schema = model.latest_version.openapi_schema
        assert schema["openapi"] == "3.0.2"
        assert all(
            "x-order" in p for p in schema["components"]["schemas"]["Input"]["properties"].values()
        )
        fetched = await model.versions.async_get(versions[1].id)
        assert fetched.cog_version


async def test_text_output_schema_is_a_concatenated_iterator(replicate_client: replicate.Client):
    model = await replicate_client.models.async_get("sandbox/text")

    output = model.latest_version.openapi_schema["components"]["schemas"]["Output"]

    assert output["x-cog-array-type"] == "iterator"
    assert output["x-cog-array-display"] == "concatenate"


async def test_image_schema_has_an_enum_by_reference_and_a_uri_input(
    replicate_client: replicate.Client,
):
    model = await replicate_client.models.async_get("sandbox/image")

    schemas = model.latest_version.openapi_schema["components"]["schemas"]

    assert schemas["Input"]["properties"]["output_format"]["allOf"] == [
        {"$ref": "#/components/schemas/output_format"}
    ]
    assert schemas["output_format"]["enum"] == ["webp", "jpg", "png"]
    assert schemas["Input"]["properties"]["image"]["format"] == "uri"
    assert schemas["Output"]["items"]["format"] == "uri"


async def test_deployment_predictions_run_the_model_of_that_name(
    replicate_client: replicate.Client,
):
    prediction = await replicate_client.deployments.predictions.async_create(
        "sandbox/text", input=TEXT, wait=True
    )

    assert prediction.model == "sandbox/text"
    assert len(prediction.output) == TEXT["max_tokens"]


async def test_a_deployment_prediction_names_its_deployment(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}/v1/deployments/sandbox/text/predictions",
            json={"input": TEXT},
            headers={"Authorization": f"Bearer {sandbox_token}"},
        )
        unknown = await http.post(
            f"{sandbox_url}/v1/deployments/sandbox/nope/predictions",
            json={"input": TEXT},
            headers={"Authorization": f"Bearer {sandbox_token}"},
        )

    assert response.status_code == 201
    assert response.json()["deployment"] == "sandbox/text"
    assert unknown.status_code == 404


async def test_a_version_reference_may_name_the_model(replicate_client: replicate.Client):
    prediction = await replicate_client.predictions.async_create(
        version="sandbox/text", input=TEXT, wait=True
    )

    assert prediction.version == latest_version("sandbox/text")


async def test_the_account_is_the_sandbox_user(replicate_client: replicate.Client):
    account = await replicate_client.accounts.async_current()

    assert (account.type, account.username) == ("user", "sandbox")


async def test_files_can_be_uploaded_listed_fetched_and_deleted(
    replicate_client: replicate.Client,
):
    uploaded = await replicate_client.files.async_create(
        io.BytesIO(b"hello sandbox"), filename="hello.txt", metadata={"purpose": "test"}
    )

    listed = await replicate_client.files.async_list()
    fetched = await replicate_client.files.async_get(uploaded.id)
    deleted = await replicate_client.files.async_delete(uploaded.id)

    assert uploaded.name == "hello.txt"
    assert uploaded.size == 13
    assert uploaded.content_type == "text/plain"
    assert uploaded.metadata == {"purpose": "test"}
    assert uploaded.etag == hashlib.md5(b"hello sandbox").hexdigest()
    assert uploaded.id in [f.id for f in listed]
    assert fetched.checksums == uploaded.checksums
    assert deleted is True
    with pytest.raises(replicate.exceptions.ReplicateError) as missing:
        await replicate_client.files.async_get(uploaded.id)
    assert missing.value.status == 404


async def test_prediction_list_pages_newest_first_with_absolute_cursors(
    replicate_client: replicate.Client, sandbox_url: str
):
    version = latest_version("sandbox/text")
    created = await asyncio.gather(
        *(
            replicate_client.predictions.async_create(
                version=version, input={"prompt": f"p{i}", "max_tokens": 1, "token_delay_ms": 0}
            )
            for i in range(105)
        )
    )

    first = await replicate_client.predictions.async_list()
    # Older pages, as JSON: past the 105 made here, the shared sandbox may hold `aborted`
    # predictions (Cancel-After tests), a status replicate 1.0.7 cannot parse.
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TEST_TOKEN}"}) as http:
        second = (await http.get(first.next)).json()
        everything = []
        url = f"{sandbox_url}/v1/predictions"
        while url:
            page = (await http.get(url)).json()
            everything += [p["id"] for p in page["results"]]
            url = page["next"]
    back = await replicate_client.predictions.async_list(second["previous"])

    assert len(first.results) == 100
    assert first.previous is None
    assert first.next.startswith(f"{sandbox_url}/v1/predictions?cursor=")
    stamps = [p.created_at for p in first.results] + [p["created_at"] for p in second["results"]]
    assert stamps == sorted(stamps, reverse=True)
    assert [p.id for p in back.results] == [p.id for p in first.results]
    assert {p.id for p in created} <= set(everything)
    assert len(everything) == len(set(everything))


async def test_fifty_concurrent_runs_all_get_their_own_answer(
    replicate_client: replicate.Client,
):
    def run_input(seed: int) -> dict:
        return {"prompt": "concurrency", "max_tokens": 25, "token_delay_ms": 20, "seed": seed}

    started = time.monotonic()
    outputs = await asyncio.gather(
        *(replicate_client.async_run("sandbox/text", input=run_input(i)) for i in range(50))
    )

    assert [len(o) for o in outputs] == [25] * 50
    assert outputs == [text_tokens("concurrency", i, 25) for i in range(50)]
    # 25 tokens at 20 ms each take ~0.5 s; all fifty run side by side, not one after another.
    assert time.monotonic() - started < 5
