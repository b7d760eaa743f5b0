"""Webhooks the sandbox sends, as Replicate does: the prediction JSON, signed the Standard
Webhooks way so ``replicate.webhooks.validate`` accepts it.

- ``start`` once when the prediction starts, ``completed`` once at the end;
- ``output`` / ``logs`` at most every ``THROTTLE_SECONDS`` (changes in between are folded
  into the next one);
- ``webhook_events_filter`` picks which of the four are sent (default: all);
- only ``completed`` is retried (429, 5xx, network errors), with backoff, keeping its
  ``webhook-id``; each attempt is signed afresh with its own ``webhook-timestamp``.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING

import httpx
from django.conf import settings

if TYPE_CHECKING:
    from sandbox.store import Prediction

EVENTS = frozenset({"start", "output", "logs", "completed"})
THROTTLE_SECONDS = 0.5
# Cog's schedule for terminal webhooks: 12 retries, backoff factor 0.1, capped.
RETRY_DELAYS = [min(0.1 * 2**n, 60.0) for n in range(12)]
TIMEOUT = httpx.Timeout(10.0)

logger = logging.getLogger(__name__)

_tasks: set[asyncio.Task] = set()
_client: httpx.AsyncClient | None = None
_client_loop: asyncio.AbstractEventLoop | None = None


def signing_secret() -> str:
    """The sandbox's own secret, stable for a given SECRET_KEY.

    Never the console's REPLICATE_WEBHOOK_SECRET: any sandbox token may read this secret
    from /v1/webhooks/default/secret, and with the real one could forge Replicate webhooks.
    The console fetches this one from that endpoint when REPLICATE_WEBHOOK_SECRET is empty.
    """
    digest = hmac.new(
        settings.SECRET_KEY.encode(), b"sandbox webhook signing secret", hashlib.sha256
    ).digest()
    # Standard base64, never urlsafe: the client splits the secret on "_".
    return "whsec_" + base64.b64encode(digest[:24]).decode()


def sign(secret: str, message_id: str, timestamp: str, body: str) -> str:
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _http() -> httpx.AsyncClient:
    """One client per event loop: an httpx client breaks when used from another loop."""
    global _client, _client_loop
    loop = asyncio.get_running_loop()
    if _client is None or _client_loop is not loop:
        _client = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        _client_loop = loop
    return _client


class WebhookSender:
    """Delivers one prediction's webhooks, in order, from a single task."""

    def __init__(self, prediction: "Prediction", url: str, events: set[str]) -> None:
        self.prediction = prediction
        self.url = url
        self.events = events
        self._pending: set[str] = set()
        self._start_body = ""
        self._wake = asyncio.Event()
        self._terminal = asyncio.Event()

    def start(self) -> None:
        task = asyncio.create_task(self._deliver())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    def notify(self, event: str) -> None:
        if event == "completed":
            self._terminal.set()
        elif event in self.events:
            self._pending.add(event)
            if event == "start":
                # As it was when it started, even if a fast model is done before we send.
                self._start_body = json.dumps(self.prediction.as_json())
        self._wake.set()

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        last_update = float("-inf")
        while True:
            await self._wake.wait()
            self._wake.clear()
            if "start" in self._pending:
                self._pending.discard("start")
                await self._send(retry=False, body=self._start_body)
            if self._terminal.is_set() and "completed" in self.events:
                # `completed` carries everything, so pending updates are folded into it.
                await self._send(retry=True)
                return
            if self._pending:
                delay = last_update + THROTTLE_SECONDS - loop.time()
                if delay > 0 and not self._terminal.is_set():
                    # Hold the update back, unless the prediction finishes meanwhile.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._terminal.wait()
                    if self._terminal.is_set() and "completed" in self.events:
                        self._wake.set()
                        continue
                    delay = last_update + THROTTLE_SECONDS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # finished, but `completed` was filtered out
                self._pending.difference_update({"output", "logs"})
                await self._send(retry=False)
                last_update = loop.time()
            if self._terminal.is_set() and not self._pending:
                return

    async def _send(self, retry: bool, body: str = "") -> None:
        """POST `body` (default: the prediction as it is now) under one webhook-id."""
        body = body or json.dumps(self.prediction.as_json())
        message_id = "msg_" + secrets.token_urlsafe(18)
        delays = RETRY_DELAYS if retry else []
        for attempt in range(len(delays) + 1):
            if await self._post(message_id, body):
                return
            if attempt < len(delays):
                await asyncio.sleep(delays[attempt])
        logger.warning("webhook %s for %s gave up", message_id, self.prediction.id)

    async def _post(self, message_id: str, body: str) -> bool:
        """True when delivered or not worth retrying (a 2xx, 3xx or 4xx other than 429)."""
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(signing_secret(), message_id, timestamp, body),
        }
        try:
            response = await _http().post(self.url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            logger.info("webhook %s to %s failed: %s", message_id, self.url, exc)
            return False
        return not (response.status_code == 429 or response.status_code >= 500)
