"""The signed webhook receiver: signature, dedupe, and finishing an orphaned prediction."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient
from django.utils import timezone

from predictions.models import Prediction, WebhookEvent
from tests.engine_helpers import MakeModel, expected_text, wait_until_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]

SECRET = "whsec_" + base64.b64encode(b"console test webhook key!").decode()
URL = "/webhooks/replicate/"


def signed_headers(body: str, secret: str = SECRET, **overrides: str) -> dict[str, str]:
    message_id = overrides.pop("id", f"msg_{uuid.uuid4().hex}")
    timestamp = overrides.pop("timestamp", str(int(time.time())))
    key = base64.b64decode(secret.split("_", 1)[1])
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        **overrides,
    }


async def post(body: str, headers: dict[str, str]) -> Any:
    return await AsyncClient().post(URL, body, content_type="application/json", headers=headers)


async def finished_upstream(sandbox_client: Any, prompt: str) -> dict[str, Any]:
    """A sandbox prediction that has finished: what Replicate would POST to us."""
    client = sandbox_client()
    created = await client.models.predictions.async_create(
        model="sandbox/text", input={"prompt": prompt, "seed": 2, "max_tokens": 12}
    )
    while created.status not in ("succeeded", "failed", "canceled"):
        await created.async_reload()
    return {"id": created.id, "status": created.status, "output": created.output}


async def orphan(member: User, model: Any, upstream_id: str) -> Prediction:
    """An active prediction whose runner died long ago."""
    prediction = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        status="processing",
        upstream_id=upstream_id,
        text_output="",
    )
    long_ago = timezone.now() - timedelta(hours=1)
    await Prediction.objects.filter(pk=prediction.pk).aupdate(updated_at=long_ago)
    return await Prediction.objects.aget(pk=prediction.pk)


@pytest.mark.parametrize(
    "tamper",
    [
        {"webhook-signature": "v1,bm90IHRoZSByaWdodCBzaWduYXR1cmU="},
        {"webhook-signature": "v1,!!!not base64"},
        {"timestamp": str(int(time.time()) - 600)},
        {"secret": "whsec_" + base64.b64encode(b"somebody else's key.....").decode()},
        {"webhook-signature": ""},
    ],
)
async def test_a_bad_or_missing_signature_is_refused_and_changes_nothing(
    sandbox_model: MakeModel, member: User, settings: Any, tamper: dict[str, str]
) -> None:
    settings.REPLICATE_WEBHOOK_SECRET = SECRET
    model = await sandbox_model("text")
    prediction = await orphan(member, model, "upstream-that-finished")
    body = json.dumps({"id": "upstream-that-finished", "status": "succeeded", "output": ["x"]})
    tamper = dict(tamper)
    headers = signed_headers(body, tamper.pop("secret", SECRET), **tamper)

    response = await post(body, headers)

    assert response.status_code == 400
    assert not await WebhookEvent.objects.aexists()
    after = await Prediction.objects.aget(pk=prediction.pk)
    assert (after.status, after.updated_at, after.output) == (
        "processing",
        prediction.updated_at,
        None,
    )


async def test_unsigned_or_non_json_posts_are_refused(settings: Any) -> None:
    settings.REPLICATE_WEBHOOK_SECRET = SECRET

    assert (await post('{"id": "x", "status": "succeeded"}', {})).status_code == 400
    assert (await post("not json", signed_headers("not json"))).status_code == 400
    assert (await AsyncClient().get(URL)).status_code == 405


async def test_a_signed_webhook_finishes_a_prediction_nobody_was_following(
    sandbox_model: MakeModel, member: User, settings: Any, sandbox_client: Any
) -> None:
    settings.REPLICATE_WEBHOOK_SECRET = SECRET
    model = await sandbox_model("text")
    prompt = f"hook {uuid.uuid4().hex}"
    remote = await finished_upstream(sandbox_client, prompt)
    prediction = await orphan(member, model, remote["id"])
    body = json.dumps(remote)
    headers = signed_headers(body)

    response = await post(body, headers)

    assert response.status_code == 200
    final = await wait_until_finished(prediction.pk)
    assert final.status == "succeeded"
    assert final.text_output == expected_text(prompt, 2, 12)
    event = await WebhookEvent.objects.aget()
    assert (event.webhook_id, event.upstream_id) == (headers["webhook-id"], remote["id"])

    # Replicate retries with the same webhook-id: acknowledged, nothing else happens.
    again = await post(body, headers)
    assert again.status_code == 200 and again.content == b"Already received."
    assert await WebhookEvent.objects.acount() == 1


async def test_an_old_event_never_overwrites_a_finished_prediction(
    sandbox_model: MakeModel, member: User, settings: Any
) -> None:
    settings.REPLICATE_WEBHOOK_SECRET = SECRET
    model = await sandbox_model("text")
    prediction = await Prediction.objects.acreate(
        owner=member,
        model=model,
        model_ref=model.ref,
        status="succeeded",
        upstream_id="done-upstream",
        text_output="final words",
    )
    body = json.dumps({"id": "done-upstream", "status": "processing", "output": ["fin"]})

    response = await post(body, signed_headers(body))

    assert response.status_code == 200
    after = await Prediction.objects.aget(pk=prediction.pk)
    assert (after.status, after.text_output) == ("succeeded", "final words")


async def test_without_a_configured_secret_it_is_fetched_from_replicate(
    sandbox_model: MakeModel, member: User, settings: Any, sandbox_client: Any
) -> None:
    settings.REPLICATE_WEBHOOK_SECRET = ""
    model = await sandbox_model("text")
    secret = (await sandbox_client().webhooks.default.async_secret()).key
    remote = await finished_upstream(sandbox_client, f"fetched {uuid.uuid4().hex}")
    prediction = await orphan(member, model, remote["id"])
    body = json.dumps(remote)

    assert (await post(body, signed_headers(body))).status_code == 400
    assert (await post(body, signed_headers(body, secret))).status_code == 200

    assert (await wait_until_finished(prediction.pk)).status == "succeeded"


async def test_absurdly_nested_json_is_a_400_not_a_500() -> None:
    nested = "[" * 100_000 + "]" * 100_000

    response = await post(nested, {})

    assert response.status_code == 400
    assert response.content == b"Not a JSON body."
