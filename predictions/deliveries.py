"""Webhooks the console delivers for gateway predictions (`webhook` on a create), as
Replicate does.

- **Signed** the Standard Webhooks way with the owner's secret (models.WebhookSecret, the
  one `GET /v1/webhooks/default/secret` gives), so `replicate.webhooks.validate` accepts
  them. The body is the prediction as the gateway shows it (api_shapes.prediction_json).
- **Events**: `start` once, when the prediction is accepted; `output` and `logs` at most
  every THROTTLE_SECONDS while it runs (changes in between fold into the next one);
  `completed` once at the end. `webhook_events_filter` picks which (default: all).
- **Nothing lost at the end.** `start`, `output` and `logs` are best effort, sent by a
  follower (`follow`) that hears the prediction's events in the process that took the
  create. `completed` is kept on the WebhookSubscription until it is delivered: the
  follower tries at once and retries a few times with backoff, keeping its webhook-id;
  after that, or if this process died, the reconcilers' `deliver_due` take over. Every
  attempt is claimed with a compare-and-set, so two processes never send it together.
- **No requests to private hosts (SSRF).** A target must resolve to public addresses only,
  unless WEBHOOK_ALLOW_PRIVATE_HOSTS is set (tests, one-machine setups). The connection
  goes to the address that was checked, so DNS cannot change its answer in between.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from . import api_shapes, events
from .database import db
from .models import Prediction, WebhookSecret, WebhookSubscription

logger = logging.getLogger(__name__)

THROTTLE_SECONDS = 0.5
TIMEOUT = httpx.Timeout(10.0)
# `completed`: the follower's own retries (seconds after each failure), then the
# reconcilers', doubling from REDELIVERY_FIRST up to REDELIVERY_MAX, MAX_ATTEMPTS in all.
QUICK_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)
REDELIVERY_FIRST = timedelta(seconds=30)
REDELIVERY_MAX = timedelta(hours=1)
MAX_ATTEMPTS = 12
# An attempt holds its claim this long (longer than a delivery can take).
CLAIM = timedelta(seconds=60)
# A follower that heard nothing this long checks the row (a lost `done`).
RECHECK_SECONDS = 10.0

_followers: set[asyncio.Task[None]] = set()


class RefusedTarget(Exception):
    """A webhook URL the console will not call; the message says why, for a person."""


# ---------------------------------------------------------------------------- targets


def url_problem(url: Any) -> str | None:
    """What is wrong with a webhook URL on its face (no lookup), or None."""
    if not isinstance(url, str) or len(url) > 2000:
        return "must be an http or https URL of at most 2000 characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http or https URL"
    if parts.username or parts.password:
        return "must not carry a user name or password"
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        return "has an invalid port"
    return None


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve_target(url: str) -> str:
    """The address to connect to for `url`; raises RefusedTarget for a private one."""
    problem = url_problem(url)
    if problem:
        raise RefusedTarget(f"The webhook URL {problem}.")
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RefusedTarget(f"The webhook host {host} cannot be resolved ({exc}).") from exc
    addresses = [str(info[4][0]) for info in found]
    if not addresses:
        raise RefusedTarget(f"The webhook host {host} has no address.")
    if not settings.WEBHOOK_ALLOW_PRIVATE_HOSTS and not all(_public(a) for a in addresses):
        raise RefusedTarget(
            f"The webhook host {host} is a private address; the console only calls public "
            "hosts (an admin can allow private ones with WEBHOOK_ALLOW_PRIVATE_HOSTS)."
        )
    return addresses[0]


# ---------------------------------------------------------------------------- sending


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: v1 and the HMAC-SHA256 of "id.timestamp.body", in base64."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def send(url: str, secret: str, message_id: str, payload: dict[str, Any]) -> str | None:
    """POST one webhook; None once the target answered 2xx, else what went wrong."""
    try:
        address = await resolve_target(url)
    except RefusedTarget as exc:
        return str(exc)
    parts = urlsplit(url)
    pinned_host = f"[{address}]" if ":" in address else address
    netloc = f"{pinned_host}:{parts.port}" if parts.port else pinned_host
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Host": parts.netloc,
        "Content-Type": "application/json",
        "User-Agent": "replicate-console-webhooks",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
    # TLS checks the certificate against the name, not the pinned address.
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
            answer = await client.post(pinned, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return f"could not reach it: {type(exc).__name__}"
    if 200 <= answer.status_code < 300:
        return None
    return f"it answered {answer.status_code}"


def _delivery(subscription_id: int) -> tuple[WebhookSubscription, str, dict[str, Any]]:
    """The subscription, the owner's secret and the prediction as it is now, to send."""
    sub = WebhookSubscription.objects.select_related("prediction__owner").get(pk=subscription_id)
    prediction = sub.prediction
    payload = api_shapes.prediction_json(sub.base_url, prediction.owner, prediction)
    return sub, WebhookSecret.of(prediction.owner), payload


# ---------------------------------------------------------------------------- completed


def _claim(subscription_id: int) -> bool:
    """Take the next `completed` attempt, if one is due and nobody else has it."""
    now = timezone.now()
    due = WebhookSubscription.objects.filter(
        pk=subscription_id,
        delivered_at__isnull=True,
        next_attempt_at__lte=now,
        attempts__lt=MAX_ATTEMPTS,
        prediction__status__in=Prediction.TERMINAL_STATUSES,
    )
    return bool(due.update(next_attempt_at=now + CLAIM))


def _record(subscription_id: int, problem: str | None) -> int:
    """Note how an attempt went; the number of attempts so far."""
    sub = WebhookSubscription.objects.get(pk=subscription_id)
    sub.attempts += 1
    now = timezone.now()
    if problem is None:
        sub.delivered_at, sub.next_attempt_at, sub.last_error = now, None, ""
    else:
        if sub.attempts <= len(QUICK_RETRIES):  # the follower tries again soon
            wait = timedelta(seconds=QUICK_RETRIES[sub.attempts - 1])
        else:
            doublings = sub.attempts - len(QUICK_RETRIES) - 1
            wait = min(REDELIVERY_FIRST * 2**doublings, REDELIVERY_MAX)
        sub.next_attempt_at = now + wait if sub.attempts < MAX_ATTEMPTS else None
        sub.last_error = problem[:500]
        if sub.next_attempt_at is None:
            sub.last_error = f"Gave up after {sub.attempts} attempts: {problem}"[:500]
    sub.save(update_fields=["attempts", "delivered_at", "next_attempt_at", "last_error"])
    return sub.attempts


async def deliver_completed(subscription_id: int) -> bool:
    """One attempt at the `completed` webhook, if one is due; True once it is delivered."""
    if not await db(_claim)(subscription_id):
        return False
    sub, secret, payload = await db(_delivery)(subscription_id)
    problem = await send(sub.url, secret, sub.completed_id, payload)
    await db(_record)(subscription_id, problem)
    if problem:
        logger.info("webhook completed of %s not delivered: %s", sub.prediction_id, problem)
    return problem is None


async def _deliver_with_retries(subscription_id: int) -> None:
    """Now, then the quick retries (each attempt sets when the next is due, and only the
    one who claims it sends, so a reconciler running meanwhile never doubles it)."""
    if await deliver_completed(subscription_id):
        return
    for wait in QUICK_RETRIES:
        await asyncio.sleep(wait)
        if await deliver_completed(subscription_id):
            return
    # The reconcilers carry on from here (next_attempt_at says when).


def _due() -> list[int]:
    return list(
        WebhookSubscription.objects.filter(
            delivered_at__isnull=True,
            next_attempt_at__lte=timezone.now(),
            attempts__lt=MAX_ATTEMPTS,
            prediction__status__in=Prediction.TERMINAL_STATUSES,
        ).values_list("pk", flat=True)[:200]
    )


async def deliver_due() -> int:
    """Retry every `completed` webhook that is due (the reconcilers call this)."""
    delivered = 0
    for subscription_id in await db(_due)():
        delivered += await deliver_completed(subscription_id)
    return delivered


# ---------------------------------------------------------------------------- following


def _is_active(prediction_id: uuid.UUID) -> bool:
    return Prediction.objects.active().filter(pk=prediction_id).exists()


class Follower:
    """A running prediction's webhooks: the prediction as its watchers see it (the row,
    moved on by each event in order; re-read at a gap), sent when it changes."""

    def __init__(self, subscription_id: int) -> None:
        self.subscription_id = subscription_id

    async def load(self) -> None:
        self.sub, self.secret, _ = await db(_delivery)(self.subscription_id)
        self.live = self.sub.prediction
        self.seq = self.live.event_seq

    def apply(self, event: dict[str, Any]) -> bool:
        """Take the next event in; False at a gap (the row must be read again)."""
        if event["seq"] <= self.seq:
            return True
        if event["seq"] != self.seq + 1:
            return False
        self.seq = event["seq"]
        p = self.live
        if event["type"] == events.STATUS:
            p.status = event["status"]
        elif event["type"] == events.OUTPUT and "text" in event:
            p.text_output += event["text"]
        elif event["type"] == events.OUTPUT:
            p.output = event["output"]
        elif event["type"] == events.LOGS:
            p.logs += event["text"]
        return True

    async def reread(self) -> None:
        sub, _, _ = await db(_delivery)(self.subscription_id)
        if sub.prediction.event_seq >= self.seq:
            self.live, self.seq = sub.prediction, sub.prediction.event_seq

    async def send(self, event: str) -> None:
        payload = api_shapes.prediction_json(self.sub.base_url, self.live.owner, self.live)
        problem = await send(self.sub.url, self.secret, f"msg_{secrets.token_hex(16)}", payload)
        if problem:
            logger.info("webhook %s of %s not delivered: %s", event, self.live.pk, problem)


async def follow(subscription_id: int, prediction_id: uuid.UUID, wanted: list[str]) -> None:
    """Send a running prediction's webhooks until it ends, then deliver `completed`."""
    layer = get_channel_layer()
    group = events.prediction_group(prediction_id)
    channel = await layer.new_channel()
    # Join before reading the row, so no event and not the end can slip by in between.
    await layer.group_add(group, channel)
    follower = Follower(subscription_id)
    try:
        await follower.load()
        if "start" in wanted:
            await follower.send("start")
        changed: set[str] = set()
        last_sent = float("-inf")
        loop = asyncio.get_running_loop()
        while follower.live.is_active and await db(_is_active)(prediction_id):
            wait = last_sent + THROTTLE_SECONDS - loop.time() if changed else RECHECK_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait)):
                    while True:
                        event = (await layer.receive(channel)).get("event") or {}
                        if event.get("type") == events.DONE:
                            return
                        if "seq" in event and not follower.apply(event):
                            await follower.reread()
                        if event.get("type") in (events.OUTPUT, events.LOGS):
                            if event["type"] in wanted:
                                changed.add(event["type"])
                            if changed and loop.time() >= last_sent + THROTTLE_SECONDS:
                                break
            for kind in sorted(changed):
                await follower.send(kind)
            if changed:
                changed.clear()
                last_sent = loop.time()
    finally:
        with contextlib.suppress(Exception):
            await layer.group_discard(group, channel)
        if "completed" in wanted:
            await _deliver_with_retries(subscription_id)


def start_following(subscription: WebhookSubscription) -> None:
    """Follow the prediction in the background, on this loop (the create's process)."""

    async def run() -> None:
        try:
            await follow(subscription.pk, subscription.prediction_id, list(subscription.events))
        except Exception:
            # `completed` is still owed: the reconcilers deliver it.
            logger.exception("webhooks of %s: follower stopped", subscription.prediction_id)

    task = asyncio.get_running_loop().create_task(run())
    _followers.add(task)
    task.add_done_callback(_followers.discard)
