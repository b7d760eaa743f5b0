"""The console against Replicate's real rules: community models run by version, every run
records the version that ran, deadlines end as `canceled` with a reason, failed runs keep
their files, and the sandbox forgetting a prediction is told as such.

The runner runs in the test process; the upstream is the sandbox process, over HTTP.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.utils import timezone

from predictions import runner
from predictions.models import ApiToken, CatalogModel, Prediction
from predictions.schema import api_snippet
from sandbox.demo_models import MODELS
from tests.engine_helpers import MakeModel, submit, wait_until_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]

ECHO = MODELS["sandbox-community/echo"]


def upstream_of(sandbox_url: str, token: str, upstream_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{sandbox_url}/v1/predictions/{upstream_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


async def test_an_unpinned_community_model_runs_its_latest_known_version(
    sandbox_model: MakeModel, member: User, sandbox_url: str, sandbox_token: str
) -> None:
    model = await sandbox_model("sandbox-community/echo")

    prediction = await submit(model, member, text="hello")
    final = await wait_until_finished(prediction.pk)

    assert final.status == "succeeded", final.error
    assert final.output == "echo v3: hello hello"
    assert final.version == ECHO.latest_version.id
    remote = await sync_to_async(upstream_of)(sandbox_url, sandbox_token, final.upstream_id)
    # The sandbox answers a model-level create of a community model with 404, as Replicate
    # does: this one went to POST /v1/predictions with the version.
    assert remote["version"] == ECHO.latest_version.id
    assert remote["model"] == "sandbox-community/echo"


async def test_a_pinned_old_version_of_a_community_model_runs_that_version(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("sandbox-community/echo", version=ECHO.versions[-1].id)

    final = await wait_until_finished((await submit(model, member, text="hi")).pk)

    assert final.output == "echo v1: hi"
    assert final.version == ECHO.versions[-1].id


@pytest.mark.slow
async def test_an_unpinned_official_model_records_the_version_replicate_ran(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("slow")

    prediction = await submit(model, member, seconds=1)
    assert prediction.version == ""  # runs by name: the version is Replicate's choice
    final = await wait_until_finished(prediction.pk)

    assert final.status == "succeeded"
    assert final.version == MODELS["sandbox/slow"].latest_version.id


@pytest.mark.slow
async def test_a_running_prediction_past_its_deadline_is_canceled_by_cancel_after(
    sandbox_model: MakeModel, member: User, sandbox_url: str, sandbox_token: str
) -> None:
    model = await sandbox_model("slow", deadline_seconds=5)

    prediction = await submit(model, member, seconds=60)
    final = await wait_until_finished(prediction.pk, within=20)

    assert final.status == "canceled"
    assert final.error == (
        "Canceled: sandbox/slow did not finish within its 5 seconds deadline, "
        "so Replicate stopped it."
    )
    remote = await sync_to_async(upstream_of)(sandbox_url, sandbox_token, final.upstream_id)
    assert remote["status"] == "canceled"
    assert remote["deadline"]  # the console sent Cancel-After


@pytest.mark.slow
async def test_a_prediction_that_never_starts_before_its_deadline_shows_as_canceled(
    sandbox_model: MakeModel, member: User, sandbox_url: str, sandbox_token: str
) -> None:
    model = await sandbox_model("slow", faults="stuck", deadline_seconds=5)

    prediction = await submit(model, member, seconds=5)
    final = await wait_until_finished(prediction.pk, within=20)

    remote = await sync_to_async(upstream_of)(sandbox_url, sandbox_token, final.upstream_id)
    assert remote["status"] == "aborted"
    assert final.status == "canceled"
    assert final.error == (
        "Canceled: sandbox/slow had not started within its 5 seconds deadline, "
        "so Replicate stopped it before it ran (not billed)."
    )


@pytest.mark.slow
async def test_a_failed_run_keeps_its_files_even_when_downloads_fail_at_first(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("image", faults="download_5xx=2")

    prediction = await submit(
        model, member, prompt="kept", width=64, height=64, num_outputs=2, fail_after_output=True
    )
    final = await wait_until_finished(prediction.pk)
    files = [f async for f in final.files.all()]

    assert final.status == "failed"
    assert final.error == "Failed on purpose after making the images"
    assert [f.content_type for f in files] == ["image/webp", "image/webp"]
    # The output points at our copies, not at upstream URLs that expire.
    assert final.output == [f"/predictions/{final.pk}/files/{n}/" for n in (0, 1)]


async def test_the_token_s_last_use_is_recorded_at_most_once_a_minute(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("sandbox-community/echo")

    await wait_until_finished((await submit(model, member, text="one")).pk)
    first = (await ApiToken.objects.aget(pk=model.token_id)).last_used_at
    await wait_until_finished((await submit(model, member, text="two")).pk)
    second = (await ApiToken.objects.aget(pk=model.token_id)).last_used_at

    assert first is not None
    assert timezone.now() - first < timedelta(minutes=1)
    assert second == first


async def test_a_prediction_the_sandbox_forgot_fails_saying_the_sandbox_restarted(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("slow")
    long_ago = timezone.now() - timedelta(minutes=5)
    forgotten = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        input={"seconds": 5},
        status=Prediction.Status.PROCESSING,
        upstream_id="gone" + uuid.uuid4().hex[:20],
    )
    await Prediction.objects.filter(pk=forgotten.pk).aupdate(updated_at=long_ago)

    await runner.run_prediction(forgotten.pk)  # what a restarted console does
    final = await Prediction.objects.aget(pk=forgotten.pk)

    assert final.status == "failed"
    assert "the sandbox was restarted" in final.error
    assert "Replicate" not in final.error


async def test_a_rerun_uses_its_parent_s_version_and_offers_the_current_one(
    sandbox_model: MakeModel, member: User
) -> None:
    from django.test import AsyncClient

    from predictions import upstream as upstream_module
    from predictions.models import ModelSchema

    model = await sandbox_model("sandbox-community/echo")
    v1 = ECHO.versions[-1]
    v1_input, v1_output = upstream_module.split_openapi_schema(v1.openapi_schema)
    await ModelSchema.objects.acreate(
        model=model, version_id=v1.id, input_schema=v1_input, output_schema=v1_output
    )
    parent = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        version=v1.id,
        input={"text": "again", "separator": "+"},
        status=Prediction.Status.SUCCEEDED,
    )
    client = AsyncClient()
    await client.aforce_login(member)

    form = await client.get(f"/predictions/{parent.pk}/rerun/")
    current = await client.get(f"/predictions/{parent.pk}/rerun/?version=current")
    posted = await client.post(
        f"/models/{model.owner}/{model.name}/",
        {"parent": str(parent.pk), "run_version": v1.id, "text": "again", "separator": "+"},
    )
    child = await Prediction.objects.filter(parent=parent).afirst()
    final = await wait_until_finished(child.pk)

    page = form.content.decode()
    assert f'Runs version <code class="mono">{v1.id[:12]}</code>, the version of the run' in page
    assert "use the current version" in page
    assert 'name="separator"' in page and 'name="uppercase"' not in page  # v1's own form
    assert 'name="uppercase"' in current.content.decode()  # the current version's form
    assert posted.status_code == 303
    assert final.version == v1.id
    assert final.output == "echo v1: again"  # v1 has no "repeat"
    # The exact version shows on the live page and in the history.
    detail = (await client.get(f"/predictions/{child.pk}/")).content.decode()
    history = (await client.get("/predictions/")).content.decode()
    assert f'title="{v1.id}"' in detail
    assert f'title="{v1.id}"' in history


async def test_run_again_over_the_websocket_runs_the_parent_s_version(
    sandbox_model: MakeModel, member: User
) -> None:
    from tests.test_consumers import open_socket

    model = await sandbox_model("sandbox-community/echo")
    v2 = ECHO.versions[1]
    parent = await Prediction.objects.acreate(
        owner=member, model=model, model_ref=model.ref, version=v2.id, input={"text": "x"}
    )
    socket = await open_socket("/ws/predictions/", member)
    assert (await socket.connect())[0]

    await socket.send_json_to(
        {"type": "submit", "model": model.ref, "input": {"text": "x"}, "parent": str(parent.pk)}
    )
    submitted = await socket.receive_json_from(timeout=5)
    final = await wait_until_finished(uuid.UUID(submitted["id"]))
    await socket.disconnect()

    assert final.version == v2.id
    assert final.output == "echo v2: x"


def test_the_api_snippet_runs_community_and_official_models_by_name_through_the_gateway() -> None:
    # Replicate itself runs a community model only with a version; the gateway runs the
    # version the catalogue runs, so the snippet names the model alone either way.
    community = CatalogModel(owner="lucataco", name="xtts-v2", schema_version="a" * 64)
    official = CatalogModel(owner="sandbox", name="text", schema_version="b" * 64, is_official=True)

    assert '"lucataco/xtts-v2",' in api_snippet(community, {}, "http://c")
    assert '"sandbox/text",' in api_snippet(official, {}, "http://c")
