"""The gateway: the console speaks Replicate's HTTP API (/api/v1/), so the official clients
work unchanged against it with a personal key (models.ApiKey). Every create goes through
the same form and engine as the web UI.

- **Who.** `Authorization: Bearer <key>` (or `Token <key>`) names an ApiKey, which acts as
  its user: the catalogue they may run, the predictions they may see. Nothing here uses a
  session, so CSRF and the login redirect do not apply; every answer is JSON, errors are
  Replicate's problem+json (`problem`), whatever went wrong (`api` catches the rest).
- **Creates** validate with the shared `PredictionForm` (422 `invalid_fields` otherwise),
  count against the member's submit limit like the web form, and start through
  `executors.start_prediction(source=api)`. `Prefer: wait[=n]` holds the answer until the
  prediction ends (`wait_until_finished`: the console's own `done` event, with the row
  re-read now and then in case the channel layer dropped it); out of time, it says
  `starting` with no output, never `processing` with part of it (the client would take
  that as the answer).
- **Shapes** are Replicate's (`prediction_json`, `model_json`): the console's status
  `queued` reads `starting`; output files point at our archived copies, served to the same
  key by `output_file`, never at upstream's expiring URLs.
- **Limits** per key, like Replicate's (API_CREATE_RATE_LIMIT for creates, API_RATE_LIMIT
  for the rest), with `ratelimit-remaining`/`ratelimit-reset` on every answer and 429 +
  `Retry-After` when spent.

Database work from these async views goes through `db()` units only (database.py); the
read-only endpoints are plain functions that `api` runs as one such unit.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db.models import Count
from django.db.utils import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from . import api_shapes, deliveries, events, executors, runner, throttles, uploads
from .api_shapes import iso as _iso
from .database import RETRY_AFTER_SECONDS, db
from .forms import PredictionForm
from .models import (
    NAME_PATTERN,
    ApiKey,
    CatalogModel,
    ModelSchema,
    Prediction,
    User,
    WebhookSecret,
    WebhookSubscription,
    decode_cursor,
    encode_cursor,
)
from .presenters import archived_file
from .responses import console_url, not_found, problem, unauthenticated

logger = logging.getLogger(__name__)

# `Prefer: wait` holds a create this long at most (Replicate's limit, and its default).
MAX_WAIT_SECONDS = 60
# Answer this much before the wait is up: the client's read timeout is the wait + 0.5 s.
WAIT_MARGIN_SECONDS = 0.25
# While waiting, the row is re-read this often in case the `done` event was dropped.
RECHECK_SECONDS = 2.0
# A cancel answers once the prediction has stopped, or after this long ("processing").
CANCEL_WAIT_SECONDS = 5.0
# Replicate's page sizes.
PREDICTIONS_PAGE_SIZE = 100
MODELS_PAGE_SIZE = 100
VERSION_ID = re.compile(r"^[0-9a-f]{64}\Z")
# The cog_version a Version must carry (a string): the catalogue does not keep it.
UNKNOWN_COG_VERSION = "unknown"


Caller = ApiKey
View = Callable[..., Any]


# ---------------------------------------------------------------------------- answers


def throttled(retry_after: int) -> JsonResponse:
    response = problem(
        429,
        "Too Many Requests",
        f"Request was throttled. Your rate limit resets in ~{retry_after}s.",
        retry_after=retry_after,
    )
    response["Retry-After"] = str(retry_after)
    return response


def invalid_version() -> JsonResponse:
    return problem(
        422,
        "Invalid version or not permitted",
        "The specified version does not exist (or perhaps you don't have permission to use it?)",
    )


def invalid_input(fields: list[dict[str, str]]) -> JsonResponse:
    detail = "".join(f"- {f['field']}: {f['description']}\n" for f in fields)
    return problem(422, "Input validation failed", detail, invalid_fields=fields)


def invalid_fields(form: PredictionForm, data: Mapping[str, Any]) -> list[dict[str, str]]:
    """The form's errors as Replicate's `invalid_fields` (its types where they match)."""
    specs = {spec.name: spec for spec in form.all_specs}
    fields = []
    for name, messages in form.input_errors().items():
        for message in messages:
            spec = specs.get(name)
            if name == "__all__":
                fields.append({"type": "invalid", "field": "input", "description": message})
            elif spec is None:
                fields.append(
                    {
                        "type": "additional_property_not_allowed",
                        "field": "input",
                        "description": message,
                    }
                )
            elif spec.required and data.get(name) in (None, ""):
                description = f"{name} is required"
                fields.append({"type": "required", "field": "input", "description": description})
            else:
                fields.append({"type": "invalid", "field": f"input.{name}", "description": message})
    return fields


def _json_body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return problem(400, "Invalid JSON", "The request body is not valid JSON")
    if not isinstance(body, dict):
        return problem(400, "Invalid JSON", "The request body must be a JSON object")
    return body


# ---------------------------------------------------------------------------- auth, limits


def api(*methods: str, creates: bool = False) -> Callable[[View], Callable[..., Any]]:
    """Make `view(request, key, ...)` a gateway endpoint: methods, key, rate limit, JSON
    errors. An async view awaits what it needs; a plain one runs as one `db()` unit.
    `creates`: its POST creates a prediction (the create limit)."""

    def decorate(view: View) -> Callable[..., Any]:
        is_async = iscoroutinefunction(view)

        @functools.wraps(view)
        async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            response: HttpResponseBase
            if request.method not in methods:
                refused = problem(
                    405, "Method not allowed", f"{request.method} is not allowed here"
                )
                refused["Allow"] = ", ".join(methods)
                return refused
            try:
                presented = ApiKey.objects.presented(request.headers.get("Authorization", ""))
                key = await db(ApiKey.objects.use)(presented) if presented else None
                if key is None:
                    return unauthenticated(bool(presented))
                if creates and request.method == "POST":
                    name, rates = "api-create", settings.API_CREATE_RATE_LIMIT
                else:
                    name, rates = "api", settings.API_RATE_LIMIT
                # Its prefix: random, so a key's window is its own even across databases.
                window = await throttles.atake(name, rates, key.prefix)
                if not window.allowed:
                    response = throttled(window.reset)
                elif is_async:
                    response = await view(request, key, *args, **kwargs)
                else:
                    response = await db(view)(request, key, *args, **kwargs)
                if window.remaining is not None:
                    response["ratelimit-remaining"] = str(window.remaining)
                    response["ratelimit-reset"] = str(window.reset)
                return response
            except Http404:
                return not_found()
            except PermissionDenied as exc:
                return problem(403, "Forbidden", str(exc) or "You may not do this.")
            except RequestDataTooBig:
                limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
                return problem(413, "Content Too Large", f"Requests may be {limit} bytes at most")
            except OperationalError as exc:
                logger.warning("database unavailable, answering 503: %s", exc)
                busy = problem(503, "Service Unavailable", "The console is busy; try again.")
                busy["Retry-After"] = str(RETRY_AFTER_SECONDS)
                return busy
            except Exception:
                logger.exception("gateway: %s %s failed", request.method, request.path)
                return problem(500, "Internal Server Error", "Something went wrong on our side.")

        return csrf_exempt(login_not_required(endpoint))

    return decorate


# ---------------------------------------------------------------------------- shapes


def _absolute(request: HttpRequest, path: str) -> str:
    return request.build_absolute_uri(path)


def prediction_json(request: HttpRequest, user: User, prediction: Prediction) -> dict[str, Any]:
    return api_shapes.prediction_json(console_url(request), user, prediction)


def shown_schema(model: CatalogModel, input_schema: Mapping[str, Any], output: Any) -> dict:
    """A version's `openapi_schema` as the member may use it: without the hidden inputs."""
    hidden = set(model.hidden_inputs or [])
    shown = dict(input_schema)
    if "properties" in shown:
        shown["properties"] = {k: v for k, v in shown["properties"].items() if k not in hidden}
    if "required" in shown:
        shown["required"] = [name for name in shown["required"] if name not in hidden]
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": {"Input": shown, "Output": dict(output or {})}},
    }


def latest_version_id(model: CatalogModel) -> str:
    """The version this catalogue entry runs: pinned, else the latest the console knows."""
    return model.version or model.schema_version


def version_json(model: CatalogModel, version_id: str) -> dict[str, Any] | None:
    """A version of the model the console keeps a schema for; None if it keeps none."""
    if version_id == model.schema_version:
        input_schema, output_schema = model.input_schema, model.output_schema
        fetched = model.schema_fetched_at
    else:
        kept = ModelSchema.objects.filter(model=model, version_id=version_id).first()
        if kept is None:
            return None
        input_schema, output_schema, fetched = (
            kept.input_schema,
            kept.output_schema,
            kept.fetched_at,
        )
    if not input_schema:
        return None
    return {
        "id": version_id,
        "created_at": _iso(fetched or model.created_at),
        "cog_version": UNKNOWN_COG_VERSION,
        "openapi_schema": shown_schema(model, input_schema, output_schema),
    }


def model_json(request: HttpRequest, model: CatalogModel, run_count: int) -> dict[str, Any]:
    latest = latest_version_id(model)
    return {
        "url": _absolute(request, reverse("predictions:model", args=[model.owner, model.name])),
        "owner": model.owner,
        "name": model.name,
        "description": model.description or None,
        # The team's catalogue, not the world's.
        "visibility": "private",
        "is_official": model.is_official,
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": run_count,
        "cover_image_url": model.cover_image_url or None,
        "default_example": None,
        "latest_version": version_json(model, latest) if latest else None,
    }


def page_json(request: HttpRequest, route: str, results: list[Any], older: str, newer: str) -> dict:
    url = _absolute(request, reverse(route))
    return {
        "next": f"{url}?cursor={older}" if older else None,
        "previous": f"{url}?cursor={newer}" if newer else None,
        "results": results,
    }


# ---------------------------------------------------------------------------- account, models


@api("GET")
def account(request: HttpRequest, key: Caller) -> HttpResponse:
    user = key.user
    return JsonResponse(
        {"type": "user", "username": user.username, "name": user.get_full_name() or user.username}
    )


def _models_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o={offset}".encode()).decode().rstrip("=")


def _models_offset(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        offset = int(raw.removeprefix("o="))
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None
    if not raw.startswith("o=") or offset < 0:
        raise ValueError("invalid cursor")
    return offset


def _runnable(user: User) -> Any:
    # Distinct: the groups join of runnable_by would count a run once per matching group.
    return CatalogModel.objects.runnable_by(user).annotate(runs=Count("predictions", distinct=True))


def _runnable_model(user: User, owner: str, name: str) -> CatalogModel:
    # Checked before any query: a NUL in a lookup is an error on PostgreSQL.
    if not (NAME_PATTERN.match(owner) and NAME_PATTERN.match(name)):
        raise Http404
    model = CatalogModel.objects.runnable_by(user).filter(owner=owner, name=name).first()
    if model is None:
        raise Http404
    return model


@api("GET")
def models(request: HttpRequest, key: Caller) -> HttpResponse:
    """The catalogue the key's user may run, in cursor pages (by owner and name)."""
    try:
        offset = _models_offset(request.GET["cursor"]) if "cursor" in request.GET else 0
    except ValueError:
        return problem(400, "Invalid cursor", "The cursor is not one this API handed out")
    found = list(
        _runnable(key.user).order_by("owner", "name")[offset : offset + MODELS_PAGE_SIZE + 1]
    )
    page = found[:MODELS_PAGE_SIZE]
    older = _models_cursor(offset + MODELS_PAGE_SIZE) if len(found) > MODELS_PAGE_SIZE else ""
    newer = _models_cursor(max(0, offset - MODELS_PAGE_SIZE)) if offset else ""
    results = [model_json(request, m, m.runs) for m in page]
    return JsonResponse(page_json(request, "api:models", results, older, newer))


@api("GET")
def model(request: HttpRequest, key: Caller, owner: str, name: str) -> HttpResponse:
    found = _runnable_model(key.user, owner, name)
    return JsonResponse(model_json(request, found, found.predictions.count()))


@api("GET")
def model_versions(request: HttpRequest, key: Caller, owner: str, name: str) -> HttpResponse:
    found = _runnable_model(key.user, owner, name)
    latest = latest_version_id(found)
    version = version_json(found, latest) if latest else None
    return JsonResponse({"next": None, "previous": None, "results": [version] if version else []})


@api("GET")
def model_version(
    request: HttpRequest, key: Caller, owner: str, name: str, version_id: str
) -> HttpResponse:
    found = _runnable_model(key.user, owner, name)
    version = version_json(found, version_id) if VERSION_ID.match(version_id) else None
    if version is None:
        raise Http404
    return JsonResponse(version)


# ---------------------------------------------------------------------------- creating


def _model_for_version(user: User, ref: Any) -> tuple[CatalogModel, str] | None:
    """The catalogue model and version a create's `version` names: a version id, `o/n`
    or `o/n:id`. Only the version the catalogue runs for the model (pinned, else the latest
    known) is permitted."""
    if not isinstance(ref, str):
        return None
    runnable = CatalogModel.objects.runnable_by(user)
    if "/" not in ref:
        if not VERSION_ID.match(ref):
            return None
        pinned = runnable.filter(version=ref)
        latest = runnable.filter(version="", schema_version=ref)
        found = pinned.order_by("pk").first() or latest.order_by("pk").first()
        return (found, ref) if found else None
    model_ref, _, version_id = ref.partition(":")
    owner, _, name = model_ref.partition("/")
    if not (NAME_PATTERN.match(owner) and NAME_PATTERN.match(name)):
        return None
    found = runnable.filter(owner=owner, name=name).first()
    if found is None:
        return None
    if not version_id:
        return found, found.run_version
    return (found, version_id) if version_id == latest_version_id(found) else None


def _prefer_wait(header: str) -> tuple[int, str] | None:
    """`Prefer: wait` or `wait=n` -> (seconds, the preference to echo back)."""
    for preference in header.split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not value.strip():
            return MAX_WAIT_SECONDS, "wait"
        try:
            seconds = int(value)
        except ValueError:
            return None
        return max(1, min(seconds, MAX_WAIT_SECONDS)), f"wait={value.strip()}"
    return None


def _load(prediction_id: uuid.UUID) -> Prediction:
    return Prediction.objects.get(pk=prediction_id)


async def _until_done(layer: Any, channel: str) -> None:
    while True:
        message = await layer.receive(channel)
        if message.get("type") == events.EVENT_MESSAGE and message["event"]["type"] == events.DONE:
            return


async def wait_until_finished(prediction: Prediction, seconds: float) -> Prediction:
    """The prediction once it has finished, or as it is after `seconds`.

    Hears the runner's `done` (joining the group before reading the row, so it cannot slip
    by in between), and re-reads the row every RECHECK_SECONDS in case the layer dropped
    it. Without a channel layer (Redis down) it only re-reads.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    layer = get_channel_layer()
    group = events.prediction_group(prediction.pk)
    channel = ""
    listener: asyncio.Future[None] | None = None
    try:
        try:
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            listener = asyncio.ensure_future(_until_done(layer, channel))
        except Exception:
            logger.warning("channel layer unavailable; waiting on the row", exc_info=True)
        while True:
            prediction = await db(_load)(prediction.pk)
            remaining = deadline - loop.time()
            if not prediction.is_active or remaining <= 0:
                return prediction
            pause = min(RECHECK_SECONDS, remaining)
            if listener is None or listener.done():
                listener = None
                await asyncio.sleep(pause)
            else:
                await asyncio.wait({listener}, timeout=pause)
    finally:
        if listener is not None:
            listener.cancel()
        if channel:
            try:
                await layer.group_discard(group, channel)
            except Exception:
                logger.info("could not leave %s", group, exc_info=True)


async def _create(
    request: HttpRequest, key: Caller, body: dict[str, Any], model: CatalogModel, version: str
) -> HttpResponse:
    user = key.user
    data = body.get("input")
    if "input" not in body:
        required = {"type": "required", "field": "(root)", "description": "input is required"}
        return invalid_input([required])
    if not isinstance(data, dict):
        description = "Invalid type. Expected: object, given: " + type(data).__name__
        return invalid_input(
            [{"type": "invalid_type", "field": "input", "description": description}]
        )
    # Files the client uploaded first (its `urls.get` as the value) go upstream as data.
    data = await db(uploads.inline_own_files)(user, data)
    input_schema = (await db(model.schema_for)(version))[0]
    form = PredictionForm(model, input_schema, data)
    if not form.is_valid():
        return invalid_input(invalid_fields(form, data))
    webhook = await _webhook(request, body)
    if isinstance(webhook, JsonResponse):
        return webhook
    refused = await form.acheck_throttle(user)
    if refused is not None:
        return throttled(refused.retry_after)
    prediction = await executors.start_prediction(
        owner=user,
        model=model,
        input=form.cleaned_input,
        source=Prediction.Source.API,
        version=version,
        webhook=webhook,
    )
    if webhook is not None:
        deliveries.start_following(webhook)
    wait = _prefer_wait(request.headers.get("Prefer", ""))
    if wait is None:
        return JsonResponse(prediction_json(request, user, prediction), status=201)
    seconds, applied = wait
    prediction = await wait_until_finished(prediction, seconds - WAIT_MARGIN_SECONDS)
    data = prediction_json(request, user, prediction)
    if prediction.is_active:
        # Out of time: `starting` and no output, or the client takes part of it as the answer.
        data.update(status="starting", output=None)
        return JsonResponse(data, status=202)
    response = JsonResponse(data, status=201)
    response["Preference-Applied"] = applied
    return response


async def _webhook(
    request: HttpRequest, body: dict[str, Any]
) -> WebhookSubscription | JsonResponse | None:
    """The create's `webhook` and `webhook_events_filter`, checked (a private host is
    refused here, before anything runs); None without a webhook."""
    url = body.get("webhook")
    if url is None:
        return None
    wanted = body.get("webhook_events_filter", list(WebhookSubscription.EVENTS))
    if not isinstance(wanted, list) or not all(e in WebhookSubscription.EVENTS for e in wanted):
        events_list = ", ".join(WebhookSubscription.EVENTS)
        description = f"webhook_events_filter must be a list of: {events_list}"
        field = "webhook_events_filter"
        return invalid_input([{"type": "invalid", "field": field, "description": description}])
    try:
        await deliveries.resolve_target(url)
    except deliveries.RefusedTarget as exc:
        return invalid_input([{"type": "invalid", "field": "webhook", "description": str(exc)}])
    return WebhookSubscription.for_create(url, wanted, console_url(request))


@api("GET")
def webhook_secret(request: HttpRequest, key: Caller) -> HttpResponse:
    """The secret the console signs this user's webhooks with."""
    return JsonResponse({"key": WebhookSecret.of(key.user)})


@api("POST", creates=True)
async def model_predictions(
    request: HttpRequest, key: Caller, owner: str, name: str
) -> HttpResponse:
    """Run a catalogue model by name: the version the catalogue runs for it."""
    found = await db(_runnable_model)(key.user, owner, name)
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    return await _create(request, key, body, found, found.run_version)


def _predictions_page(
    request: HttpRequest, user: User, cursor: str
) -> tuple[list[dict[str, Any]], str, str]:
    direction, _, position = cursor.partition(":")
    before = position if direction == "o" else None
    after = position if direction == "n" else None
    own = Prediction.objects.filter(owner_id=user.pk)
    rows, has_newer, has_older = own.page(PREDICTIONS_PAGE_SIZE, before=before, after=after)
    older = f"o:{encode_cursor(rows[-1])}" if rows and has_older else ""
    newer = f"n:{encode_cursor(rows[0])}" if rows and has_newer else ""
    return [prediction_json(request, user, p) for p in rows], older, newer


@api("GET", "POST", creates=True)
async def predictions(request: HttpRequest, key: Caller) -> HttpResponse:
    """GET: the caller's own predictions, newest first. POST: create by `version`."""
    if request.method == "GET":
        cursor = request.GET.get("cursor", "")
        if cursor and decode_cursor(cursor.partition(":")[2]) is None:
            return problem(400, "Invalid cursor", "The cursor is not one this API handed out")
        results, older, newer = await db(_predictions_page)(request, key.user, cursor)
        return JsonResponse(page_json(request, "api:predictions", results, older, newer))
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    if body.get("version") is None:
        required = {"type": "required", "field": "(root)", "description": "version is required"}
        return invalid_input([required])
    resolved = await db(_model_for_version)(key.user, body["version"])
    if resolved is None:
        return invalid_version()
    return await _create(request, key, body, *resolved)


# ---------------------------------------------------------------------------- one prediction


def _visible(user: User, prediction_id: uuid.UUID) -> Prediction:
    found = Prediction.objects.visible_to(user).filter(pk=prediction_id).first()
    if found is None:
        raise Http404
    return found


@api("GET")
def prediction(request: HttpRequest, key: Caller, prediction_id: uuid.UUID) -> HttpResponse:
    return JsonResponse(prediction_json(request, key.user, _visible(key.user, prediction_id)))


@api("POST")
async def cancel(request: HttpRequest, key: Caller, prediction_id: uuid.UUID) -> HttpResponse:
    """Cancel through the runner (the one way); answer once it has stopped, or after a
    few seconds with the prediction still going (it stops when upstream confirms)."""
    user = key.user
    found = await db(_visible)(user, prediction_id)
    if not (user.is_staff or found.owner_id == user.pk):
        raise PermissionDenied("Only its owner or staff can cancel a prediction.")
    if found.is_active:
        await runner.cancel(found)
        found = await wait_until_finished(found, CANCEL_WAIT_SECONDS)
    return JsonResponse(prediction_json(request, user, found))


@api("GET")
def output_file(
    request: HttpRequest, key: Caller, prediction_id: uuid.UUID, position: int
) -> HttpResponseBase:
    """An archived output file, to the key's user if they may see the prediction."""
    return archived_file(key.user, prediction_id, position, download="download" in request.GET)


@csrf_exempt
@login_not_required
def unknown(request: HttpRequest) -> HttpResponse:
    """Anything else under /api/: Replicate's 404, never an HTML page or a redirect."""
    return not_found()
