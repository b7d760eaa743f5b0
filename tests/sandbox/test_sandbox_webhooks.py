"""Webhooks from the sandbox, received by a small local HTTP server and checked with the
official client's validator."""

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import replicate
from django.test import override_settings
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret

from sandbox.webhooks import sign, signing_secret
from tests.waiting import wait_for

TERMINAL = {"succeeded", "failed", "canceled"}
TEXT = {"prompt": "hooks", "max_tokens": 40, "token_delay_ms": 20, "seed": 5}


@dataclass
class Delivery:
    headers: dict[str, str]
    body: str
    at: float
    answered: int

    @property
    def prediction(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """Records every POST; can answer 500 to the first few terminal ones."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.fail_terminal = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.lock:
                    status = 200
                    if json.loads(body)["status"] in TERMINAL and receiver.fail_terminal:
                        receiver.fail_terminal -= 1
                        status = 500
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.deliveries.append(Delivery(headers, body, time.monotonic(), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?team=1"

    def for_prediction(self, prediction_id: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.prediction["id"] == prediction_id]

    async def wait_for(
        self, prediction_id: str, done: Callable[[list[Delivery]], bool], within: float = 10
    ) -> list[Delivery]:
        """The prediction's deliveries, once `done(deliveries)` holds."""

        async def delivered() -> list[Delivery] | None:
            found = self.for_prediction(prediction_id)
            return found if done(found) else None

        return await wait_for(delivered, within, every=0.02, what="deliveries")

    async def wait_until_completed(self, prediction_id: str) -> list[Delivery]:
        """Every delivery, once one answered 200 carries a terminal status."""

        def completed(found: list[Delivery]) -> bool:
            return any(d.prediction["status"] in TERMINAL and d.answered == 200 for d in found)

        return await self.wait_for(prediction_id, completed)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(
        target=receiver.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def replicate_client(sandbox_client: Callable[..., replicate.Client]) -> replicate.Client:
    return sandbox_client()


async def test_webhooks_are_signed_so_the_client_validates_them(
    replicate_client: replicate.Client, receiver: Receiver
):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/text", input=TEXT, webhook=receiver.url
    )
    secret = await replicate_client.webhooks.default.async_secret()

    deliveries = await receiver.wait_until_completed(prediction.id)

    assert deliveries
    for delivery in deliveries:
        assert delivery.headers["content-type"] == "application/json"
        replicate.webhooks.validate(
            headers=delivery.headers, body=delivery.body, secret=secret, tolerance=60
        )


async def test_a_forged_or_tampered_webhook_is_refused(
    replicate_client: replicate.Client, receiver: Receiver
):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/text", input={**TEXT, "max_tokens": 2}, webhook=receiver.url
    )
    secret = await replicate_client.webhooks.default.async_secret()
    delivery = (await receiver.wait_until_completed(prediction.id))[-1]
    other_secret = "whsec_" + base64.b64encode(b"not the sandbox's key 24").decode()
    forged = {
        **delivery.headers,
        "webhook-signature": sign(
            other_secret,
            delivery.headers["webhook-id"],
            delivery.headers["webhook-timestamp"],
            delivery.body,
        ),
    }

    with pytest.raises(InvalidSignatureError):
        replicate.webhooks.validate(headers=forged, body=delivery.body, secret=secret)
    with pytest.raises(InvalidSignatureError):
        replicate.webhooks.validate(
            headers=delivery.headers,
            body=delivery.body.replace("succeeded", "failed"),
            secret=secret,
        )
    with pytest.raises(InvalidSignatureError):
        replicate.webhooks.validate(
            headers=delivery.headers,
            body=delivery.body,
            secret=WebhookSigningSecret(key=other_secret),
        )


async def test_all_events_by_default_start_first_and_completed_last(
    replicate_client: replicate.Client, receiver: Receiver
):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/text", input=TEXT, webhook=receiver.url
    )

    deliveries = await receiver.wait_until_completed(prediction.id)

    statuses = [d.prediction["status"] for d in deliveries]
    assert statuses[0] == "processing"
    assert statuses[-1] == "succeeded"
    assert len(statuses) >= 3  # start, at least one update during the 0.8 s, completed
    assert len(deliveries[-1].prediction["output"]) == TEXT["max_tokens"]
    assert len({d.headers["webhook-id"] for d in deliveries}) == len(deliveries)


async def test_the_events_filter_is_honoured(
    replicate_client: replicate.Client, receiver: Receiver
):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/text",
        input=TEXT,
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )

    deliveries = await receiver.wait_until_completed(prediction.id)

    assert [d.prediction["status"] for d in deliveries] == ["succeeded"]


@pytest.mark.slow
async def test_output_webhooks_come_at_most_every_500_ms(
    replicate_client: replicate.Client, receiver: Receiver
):
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/text", input=TEXT, webhook=receiver.url, webhook_events_filter=["output"]
    )

    # With `completed` filtered out, the last update carries the final output.
    deliveries = await receiver.wait_for(
        prediction.id,
        lambda found: bool(found) and len(found[-1].prediction["output"]) == TEXT["max_tokens"],
    )

    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(deliveries)]
    assert len(deliveries) >= 2
    assert min(gaps) >= 0.45
    counts = [len(d.prediction["output"]) for d in deliveries]
    assert counts == sorted(counts)


async def test_completed_is_retried_with_the_same_webhook_id(
    replicate_client: replicate.Client, receiver: Receiver
):
    receiver.fail_terminal = 1
    prediction = await replicate_client.models.predictions.async_create(
        model="sandbox/text",
        input={**TEXT, "max_tokens": 3},
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )
    secret = await replicate_client.webhooks.default.async_secret()

    deliveries = await receiver.wait_until_completed(prediction.id)

    assert [d.answered for d in deliveries] == [500, 200]
    assert deliveries[0].headers["webhook-id"] == deliveries[1].headers["webhook-id"]
    for delivery in deliveries:
        replicate.webhooks.validate(headers=delivery.headers, body=delivery.body, secret=secret)


async def test_the_secret_endpoint_gives_a_stable_standard_webhooks_secret(
    replicate_client: replicate.Client,
):
    first = await replicate_client.webhooks.default.async_secret()
    second = await replicate_client.webhooks.default.async_secret()

    prefix, _, key = first.key.partition("_")
    assert first.key == second.key
    assert prefix == "whsec"
    assert len(base64.b64decode(key, validate=True)) == 24


def test_the_secret_comes_from_secret_key_never_from_the_console_s_real_one():
    # Any sandbox token may read this secret; the console's real one would let it forge
    # Replicate's webhooks.
    configured = "whsec_" + base64.b64encode(b"x" * 24).decode()

    with override_settings(REPLICATE_WEBHOOK_SECRET=""):
        derived = signing_secret()
    with override_settings(REPLICATE_WEBHOOK_SECRET="", SECRET_KEY="another key"):
        other = signing_secret()
    with override_settings(REPLICATE_WEBHOOK_SECRET=configured):
        despite_configured = signing_secret()

    assert derived.startswith("whsec_") and derived != other
    assert despite_configured == derived
