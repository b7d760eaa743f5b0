"""The signed webhook receiver: Replicate POSTs a prediction here when it changes.

A webhook is a *nudge*, not a second writer. After checking the signature (Standard
Webhooks, 5-minute tolerance) and recording the webhook-id (a redelivery is answered 200
and ignored), it hands the prediction to the executor. The runner that picks it up reads
the prediction from Replicate itself and finishes it — archiving files, writing the row,
publishing `done` — exactly as it would have from its stream or poll. If a runner is
already following it, the claim makes this a no-op. So events never apply out of order:
an old webhook can never overwrite a newer or terminal state, because nothing in a
webhook's body is written; the runner only ever moves a row forward from upstream's
current state, and never touches a finished one.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import executors, metrics, untrusted, upstream
from .database import db
from .models import ApiToken, Prediction, WebhookEvent

logger = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300
SECRET_CACHE_SECONDS = 60 * 60


def _token_for(upstream_id: str) -> ApiToken | None:
    prediction = (
        Prediction.objects.select_related("model", "model__token")
        .filter(upstream_id=upstream_id)
        .first()
    )
    # A prediction this console does not know was not run with any of its models' tokens.
    return prediction.api_token() if prediction is not None else ApiToken.objects.default()


async def signing_secret(upstream_id: str) -> str:
    """REPLICATE_WEBHOOK_SECRET, or the secret of the account that ran the prediction
    (fetched once an hour per token; each Replicate account has its own)."""
    if settings.REPLICATE_WEBHOOK_SECRET:
        return settings.REPLICATE_WEBHOOK_SECRET
    token = await db(_token_for)(upstream_id)
    if token is None:
        return ""
    key = f"replicate:webhook-secret:{token.pk}:{token.last_four}"
    secret = await cache.aget(key)
    if not secret:
        try:
            creds = await db(upstream.credentials_for)(token)
            secret = await upstream.webhook_signing_secret(creds)
        except upstream.UpstreamError as exc:
            logger.warning("cannot check a webhook: no signing secret: %s", exc)
            return ""
        await cache.aset(key, secret, SECRET_CACHE_SECONDS)
    return secret


@csrf_exempt
@login_not_required
@require_POST
async def replicate_webhook(request: HttpRequest) -> HttpResponse:
    try:
        body = request.body.decode("utf-8")
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurd nesting
        return HttpResponse("Not a JSON body.", status=400, content_type="text/plain")
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        return HttpResponse("Not a prediction.", status=400, content_type="text/plain")
    if untrusted.problem([payload["id"], str(payload.get("status"))]):
        # The two fields stored here; the runner asks Replicate for the rest itself.
        return HttpResponse("Not a prediction id.", status=400, content_type="text/plain")
    upstream_id = payload["id"]
    # Before the signature is checked the body is only used to pick which secret to try.
    secret = await signing_secret(upstream_id)
    if not secret or not upstream.validate_webhook(
        request.headers, body, secret, tolerance=TOLERANCE_SECONDS
    ):
        return HttpResponse("Invalid webhook signature.", status=400, content_type="text/plain")
    metrics.webhook_received(request.headers.get("webhook-timestamp"))

    status = str(payload.get("status") or "")[:16]
    try:
        await db(WebhookEvent.objects.create)(
            webhook_id=request.headers["webhook-id"][:200], upstream_id=upstream_id, status=status
        )
    except IntegrityError:
        return HttpResponse("Already received.", content_type="text/plain")

    active = Prediction.objects.active().filter(upstream_id=upstream_id)
    prediction_id = await db(active.values_list("pk", flat=True).first)()
    if prediction_id is not None:
        await executors.submit(prediction_id)
    return HttpResponse("OK", content_type="text/plain")
