"""Webhooks the console delivers for gateway predictions: signed with the member's secret
(`replicate.webhooks.validate` accepts them), `completed` retried until it lands, private
hosts refused. A receiver in this process stands in for the member's server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import replicate
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from replicate.webhook import WebhookSigningSecret

from predictions import deliveries
from predictions.models import ApiKey, Prediction, WebhookSecret, WebhookSubscription
from tests.console_server import ConsoleServer
from tests.engine_helpers import MakeModel, expected_text
from tests.test_gateway import text_model  # noqa: F401 (a fixture)
from tests.waiting import wait_for

TEXT_INPUT = {"prompt": "hooked", "seed": 3, "max_tokens": 30, "token_delay_ms": 20}


class Receiver:
    """An HTTP server that keeps every webhook it gets and answers `statuses` in turn
    (then 200)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {key.lower(): value for key, value in self.headers.items()}
                receiver.received.append({"headers": headers, "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(status, payload) of each webhook, in arrival order."""
        return [(json.loads(r["body"])["status"], json.loads(r["body"])) for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def valid(request: dict[str, Any], secret: str) -> bool:
    try:
        replicate.webhooks.validate(
            headers=request["headers"],
            body=request["body"].decode(),
            secret=WebhookSigningSecret(key=secret),
        )
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------- in-process


def test_the_signature_is_the_standard_webhooks_one_the_client_checks(alice: User) -> None:
    secret = WebhookSecret.of(alice)
    body = b'{"id":"x"}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(timezone.now().timestamp())),
    }
    headers["webhook-signature"] = deliveries.signature(
        secret, "msg_1", int(headers["webhook-timestamp"]), body
    )

    assert secret.startswith("whsec_") and WebhookSecret.of(alice) == secret  # kept
    assert valid({"headers": headers, "body": body}, secret)
    assert not valid({"headers": headers, "body": b'{"id":"y"}'}, secret)
    assert "whsec_" not in WebhookSecret.objects.get(user=alice).ciphertext  # encrypted


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
    ],
)
async def test_private_hosts_are_refused_unless_allowed(url: str, settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = False
    with pytest.raises(deliveries.RefusedTarget, match="private address"):
        await deliveries.resolve_target(url)

    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    assert await deliveries.resolve_target(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "http or https"),
        ("http://user:pw@example.com/", "user name or password"),
        ("http://example.com:99999/", "invalid port"),
        ("not a url", "http or https"),
        (42, "http or https"),
    ],
)
def test_a_webhook_url_that_is_no_http_url_says_why(url: Any, reason: str) -> None:
    assert reason in (deliveries.url_problem(url) or "")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"webhook": "http://10.0.0.1/"}, "webhook"),
        ({"webhook": "file:///etc/passwd"}, "webhook"),
        ({"webhook": "https://example.com/", "webhook_events_filter": ["all"]}, None),
    ],
)
def test_a_create_with_a_webhook_the_console_will_not_call_is_a_422_and_runs_nothing(
    client: Client,
    alice: User,
    settings: Any,
    text_model: Any,  # noqa: F811 - the fixture
    fields: dict,
    field: str | None,
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = False
    key = ApiKey.issue(alice, "t")[1]

    answer = client.post(
        "/api/v1/predictions",
        {"version": "sandbox/text", "input": {"prompt": "x"}, **fields},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )

    assert answer.status_code == 422
    (problem,) = answer.json()["invalid_fields"]
    assert problem["field"] == (field or "webhook_events_filter")
    assert not Prediction.objects.exists() and not WebhookSubscription.objects.exists()


# ---------------------------------------------------------------------------- the client


@pytest.fixture
def console(console_servers: Any) -> ConsoleServer:
    return console_servers(
        SUBMIT_RATE_LIMIT="100000/minute",
        WEBHOOK_ALLOW_PRIVATE_HOSTS="1",  # the receiver is on this machine
    )


processes = pytest.mark.processes


async def make_key(user: User) -> str:
    return (await sync_to_async(ApiKey.issue)(user, "hooks"))[1]


@processes
@pytest.mark.django_db(transaction=True)
async def test_a_run_s_webhooks_are_signed_and_completed_carries_the_final_output(
    console: ConsoleServer, sandbox_model: MakeModel, member: User, receiver: Receiver
) -> None:
    await sandbox_model("text")
    key = await make_key(member)
    client = replicate.Client(api_token=key, base_url=f"{console.url}/api")

    prediction = await client.predictions.async_create(
        model="sandbox/text",
        input=TEXT_INPUT,
        webhook=receiver.url,
        webhook_events_filter=["start", "output", "completed"],
    )

    async def completed() -> bool:
        return any(status == "succeeded" for status, _ in receiver.events())

    await wait_for(completed, within=30, what="the completed webhook")

    secret = await client.webhooks.default.async_secret()
    assert all(valid(request, secret.key) for request in receiver.received)
    statuses = [status for status, _ in receiver.events()]
    assert statuses[0] == "starting"  # start, as the create is accepted
    assert statuses.count("succeeded") == 1 and statuses[-1] == "succeeded"
    final = receiver.events()[-1][1]
    expected = expected_text("hooked", 3, 30)
    assert final["id"] == prediction.id
    assert "".join(final["output"]) == expected
    # While it ran: output so far, as its watchers saw it then.
    partial = [payload for status, payload in receiver.events() if status == "processing"]
    assert partial, statuses
    assert all(expected.startswith("".join(p["output"])) for p in partial)
    assert final["urls"]["get"] == f"{console.url}/api/v1/predictions/{prediction.id}"
    subscription = await WebhookSubscription.objects.aget(prediction_id=prediction.id)
    assert subscription.delivered_at is not None and subscription.attempts == 1


@processes
@pytest.mark.django_db(transaction=True)
async def test_completed_is_retried_with_the_same_webhook_id_until_it_lands(
    console: ConsoleServer, sandbox_model: MakeModel, member: User, receiver: Receiver
) -> None:
    await sandbox_model("text")
    receiver.statuses = [500, 503]  # the receiver is down for the first two
    client = replicate.Client(api_token=await make_key(member), base_url=f"{console.url}/api")

    prediction = await client.predictions.async_create(
        model="sandbox/text",
        input={**TEXT_INPUT, "max_tokens": 3},
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )

    async def three_attempts() -> bool:
        return len(receiver.received) >= 3

    await wait_for(three_attempts, within=30, what="three attempts")

    ids = {request["headers"]["webhook-id"] for request in receiver.received}
    assert len(ids) == 1 and len(receiver.received) == 3
    subscription = await WebhookSubscription.objects.aget(prediction_id=prediction.id)
    await wait_for(
        lambda: WebhookSubscription.objects.filter(
            pk=subscription.pk, delivered_at__isnull=False
        ).aexists()
    )
    await subscription.arefresh_from_db()
    assert subscription.attempts == 3 and subscription.last_error == ""


@processes
@pytest.mark.django_db(transaction=True)
async def test_a_completed_webhook_still_owed_is_delivered_by_the_reconciler(
    member: User, receiver: Receiver, settings: Any
) -> None:
    # What a process that died after the run, before delivering, leaves behind.
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    prediction = await Prediction.objects.acreate(
        owner=member, model_ref="sandbox/text", status="succeeded", output=["hi"]
    )
    subscription = WebhookSubscription.for_create(receiver.url, ["completed"], "http://c.test")
    subscription.prediction = prediction
    await subscription.asave()

    assert await deliveries.deliver_due() == 1
    assert await deliveries.deliver_due() == 0  # once

    (request,) = receiver.received
    assert request["headers"]["webhook-id"] == subscription.completed_id
    assert valid(request, await sync_to_async(WebhookSecret.of)(member))
    assert json.loads(request["body"])["output"] == ["hi"]


@processes
@pytest.mark.django_db(transaction=True)
async def test_the_webhook_secret_endpoint_gives_the_member_their_own(
    console: ConsoleServer, member: User, stranger: User
) -> None:
    async with httpx.AsyncClient(base_url=f"{console.url}/api/v1") as http:
        mine = await http.get(
            "/webhooks/default/secret",
            headers={"Authorization": f"Bearer {await make_key(member)}"},
        )
        theirs = await http.get(
            "/webhooks/default/secret",
            headers={"Authorization": f"Bearer {await make_key(stranger)}"},
        )
    assert mine.status_code == 200 and mine.json()["key"].startswith("whsec_")
    assert mine.json()["key"] != theirs.json()["key"]
    assert mine.json()["key"] == await sync_to_async(WebhookSecret.of)(member)
