"""The sandbox's HTTP API: Replicate's /v1 endpoints, served from memory.

Every view is async so requests, prediction tasks and streams share daphne's event loop.
Auth is by API token (see `authenticate`), never by Django login; errors are
`application/problem+json` with the API's titles; every authenticated response carries
`ratelimit-remaining` / `ratelimit-reset`.
"""

import asyncio
import base64
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.csrf import csrf_exempt

from sandbox import ratelimit, runner, store
from sandbox.demo_models import MODELS, DemoModel, Version, find_model, find_version
from sandbox.faults import Faults, FaultSpecError, counters, parse
from sandbox.validation import describe, validate_input
from sandbox.webhooks import EVENTS, WebhookSender, signing_secret

# Streams send a comment this often when there is nothing else to send; the client's read
# timeout is 30 s. Tests running the app in-process may lower it.
SSE_KEEPALIVE_SECONDS = 15.0
# `Prefer: wait=n` is honoured up to this many seconds (the API's limit).
MAX_WAIT_SECONDS = 60
# `Cancel-After` may not be shorter than this (the API's limit).
MIN_CANCEL_AFTER_SECONDS = 5
# GET /v1/models answers this many models a page (small, so the cursor is exercised).
MODELS_PAGE_SIZE = 3

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key their counters and rate limits are kept under, and faults."""

    key: str
    faults: Faults


# Responses


def problem(status: int, title: str, detail: str, **extra: Any) -> JsonResponse:
    body = {"title": title, "detail": detail, "status": status, **extra}
    return JsonResponse(body, status=status, content_type="application/problem+json")


def not_found_problem() -> JsonResponse:
    # Exactly Replicate's body: no title (e.g. a model-level create of a community model).
    body = {"detail": "The requested resource could not be found", "status": 404}
    return JsonResponse(body, status=404, content_type="application/problem+json")


def throttled(retry_after: int) -> JsonResponse:
    response = problem(
        429,
        "Too Many Requests",
        f"Request was throttled. Your rate limit resets in ~{retry_after}s.",
        retry_after=retry_after,
    )
    response["Retry-After"] = str(retry_after)
    return response


def invalid_input(problems: list[dict]) -> JsonResponse:
    return problem(422, "Input validation failed", describe(problems), invalid_fields=problems)


def invalid_version() -> JsonResponse:
    return problem(
        422,
        "Invalid version or not permitted",
        "The specified version does not exist (or perhaps you don't have permission to use it?)",
    )


def base_url(request: HttpRequest) -> str:
    """The sandbox's absolute root URL as this caller reaches it, ending in "/"."""
    return request.build_absolute_uri(reverse("sandbox:root"))


# Auth, faults, rate limits


def authenticate(request: HttpRequest) -> Caller | JsonResponse:
    """Accept `Bearer <token>` or `Token <token>`, with an optional `:<faults>` suffix."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() not in ("bearer", "token") or not credential:
        return problem(401, "Unauthenticated", "You did not pass an authentication token")
    token, _, token_faults = credential.partition(":")
    # Read at request time, so tests can change the setting.
    known = any(
        hmac.compare_digest(token.encode(), allowed.encode())
        for allowed in settings.SANDBOX_API_TOKENS
    )
    if not known:
        return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    header_faults = request.headers.get("X-Sandbox-Faults", "")
    try:
        faults = parse(token_faults).merged(parse(header_faults))
    except FaultSpecError as exc:
        return problem(400, "Invalid fault specification", str(exc))
    return Caller(key=f"{credential}|{header_faults}", faults=faults)


def api(*methods: str, creates: bool = False) -> Callable[[View], View]:
    """Make `view(request, caller, ...)` an API endpoint: methods, auth, limits, faults.

    `creates` marks endpoints whose POST creates a prediction (the 600/min bucket).
    """

    def decorate(view: View) -> View:
        @wraps(view)
        async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            response: HttpResponseBase
            if request.method not in methods:
                response = problem(
                    405, "Method not allowed", f"{request.method} is not allowed here"
                )
                response["Allow"] = ", ".join(methods)
                return response
            caller = authenticate(request)
            if isinstance(caller, HttpResponse):
                return caller
            faults = caller.faults
            is_create = creates and request.method == "POST"
            if is_create:
                kind, limit = "create", faults.create_limit
                per_minute = ratelimit.CREATES_PER_MINUTE if limit is None else limit
            else:
                kind, limit = "other", faults.read_limit
                per_minute = ratelimit.OTHERS_PER_MINUTE if limit is None else limit
            verdict = ratelimit.take(caller.key, kind, per_minute)
            if faults.latency:
                await asyncio.sleep(faults.latency / 1000)
            if not verdict.allowed:
                response = throttled(verdict.retry_after)
            elif is_create and counters.take(f"create_429|{caller.key}", faults.create_429):
                response = throttled(1)
            else:
                response = await view(request, caller, *args, **kwargs)
            response["ratelimit-remaining"] = str(verdict.remaining)
            response["ratelimit-reset"] = str(verdict.reset)
            return response

        return csrf_exempt(login_not_required(endpoint))

    return decorate


def public(view: View) -> View:
    """An unauthenticated GET (output files, the web page): still never behind Django login."""

    @wraps(view)
    async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method not in ("GET", "HEAD"):
            return problem(405, "Method not allowed", f"{request.method} is not allowed here")
        return await view(request, *args, **kwargs)

    return csrf_exempt(login_not_required(endpoint))


# Predictions


def _json_body(request: HttpRequest) -> dict | JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return problem(400, "Invalid JSON", "The request body is not valid JSON")
    if not isinstance(body, dict):
        return problem(400, "Invalid JSON", "The request body must be a JSON object")
    return body


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


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def _cancel_after(header: str) -> timedelta:
    """`30`, `30s`, `5m`, `1h30m45s` -> a duration; ValueError for anything else."""
    match = _DURATION.match(header.strip())
    if not header.strip() or match is None:
        raise ValueError(
            f"Cancel-After must be a duration such as 30s, 5m or 1h30m, not {header!r}"
        )
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    duration = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if duration.total_seconds() < MIN_CANCEL_AFTER_SECONDS:
        raise ValueError(f"Cancel-After must be at least {MIN_CANCEL_AFTER_SECONDS} seconds")
    return duration


def _webhook_problems(body: dict) -> list[dict]:
    problems = []
    webhook = body.get("webhook")
    if webhook is not None:
        parts = urlsplit(webhook) if isinstance(webhook, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            description = "Does not match format 'uri'"
            problems.append({"type": "format", "field": "webhook", "description": description})
    events = body.get("webhook_events_filter")
    if events is not None and not isinstance(events, list):
        description = "Invalid type. Expected: array, given: " + type(events).__name__
        problems.append(
            {"type": "invalid_type", "field": "webhook_events_filter", "description": description}
        )
    elif events is not None:
        allowed = ", ".join(f'"{e}"' for e in ("start", "output", "logs", "completed"))
        for index, event in enumerate(events):
            if not isinstance(event, str) or event not in EVENTS:
                field = f"webhook_events_filter.{index}"
                description = f"{field} must be one of the following: {allowed}"
                problems.append({"type": "enum", "field": field, "description": description})
    return problems


async def _create(
    request: HttpRequest,
    caller: Caller,
    body: dict,
    model: DemoModel,
    version: Version,
    deployment: str | None = None,
) -> HttpResponse:
    if "input" not in body:
        problems = [{"type": "required", "field": "(root)", "description": "input is required"}]
    else:
        problems = validate_input(version.openapi_schema, body["input"])
    problems += _webhook_problems(body)
    if problems:
        return invalid_input(problems)
    deadline = None
    if "Cancel-After" in request.headers:
        try:
            lifetime = _cancel_after(request.headers["Cancel-After"])
        except ValueError as exc:
            return problem(400, "Invalid Cancel-After header", str(exc))
        deadline = store.now() + lifetime

    prediction = store.Prediction(
        model=model,
        version=version,
        input=body["input"],
        base_url=base_url(request),
        deployment=deployment,
        faults=caller.faults,
        deadline=deadline,
    )
    model.run_count += 1
    if body.get("webhook"):
        events = set(body.get("webhook_events_filter") or EVENTS)
        prediction.webhook = WebhookSender(prediction, body["webhook"], events)
        prediction.webhook.start()
    store.predictions.add(prediction)
    runner.start(prediction)

    wait = _prefer_wait(request.headers.get("Prefer", ""))
    if wait is None:
        return JsonResponse(prediction.as_json(), status=201)
    seconds, applied = wait
    if await prediction.wait_finished(seconds):
        response = JsonResponse(prediction.as_json(), status=201)
        response["Preference-Applied"] = applied
        return response
    # Out of time: say `starting` with no output, never `processing` with part of it, or
    # the client would take the partial output as the answer.
    data = prediction.as_json()
    data.update(status="starting", output=None)
    return JsonResponse(data, status=202)


def _list_predictions(request: HttpRequest) -> JsonResponse:
    try:
        items, older, newer = store.predictions.page(request.GET.get("cursor"))
    except ValueError:
        return problem(400, "Invalid cursor", "The cursor is not one this API handed out")
    url = request.build_absolute_uri(reverse("sandbox:predictions"))
    return JsonResponse(
        {
            "next": f"{url}?cursor={older}" if older else None,
            "previous": f"{url}?cursor={newer}" if newer else None,
            "results": [prediction.as_json() for prediction in items],
        }
    )


def _resolve_version(ref: Any) -> tuple[DemoModel, Version] | None:
    """A version id, or (newer API) `owner/name:version`, or `owner/name` for an official
    model (a community model has no "latest" to run: it needs its version)."""
    if not isinstance(ref, str):
        return None
    if "/" not in ref:
        return find_version(ref)
    model_ref, _, version_id = ref.partition(":")
    owner, _, name = model_ref.partition("/")
    model = find_model(owner, name)
    if model is None:
        return None
    if not version_id and not model.is_official:
        return None
    version = model.version(version_id) if version_id else model.latest_version
    return (model, version) if version else None


@api("GET", "POST", creates=True)
async def predictions(request: HttpRequest, caller: Caller) -> HttpResponse:
    if request.method == "GET":
        return _list_predictions(request)
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    if body.get("version") is None:
        required = {"type": "required", "field": "(root)", "description": "version is required"}
        return invalid_input([required])
    resolved = _resolve_version(body["version"])
    if resolved is None:
        return invalid_version()
    return await _create(request, caller, body, *resolved)


@api("POST", creates=True)
async def latest_version_predictions(
    request: HttpRequest, caller: Caller, owner: str, name: str, deployment: bool = False
) -> HttpResponse:
    """/v1/models/<owner>/<name>/predictions, and the same for deployments (urls.py sets
    `deployment`): a deployment named like a demo model runs that model's latest version."""
    model = find_model(owner, name)
    if model is None or (not model.is_official and not deployment):
        # Replicate runs only official models by name; others need POST /v1/predictions
        # with a version, and this endpoint does not know them.
        return not_found_problem()
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    return await _create(
        request, caller, body, model, model.latest_version, model.ref if deployment else None
    )


@api("GET")
async def prediction(request: HttpRequest, caller: Caller, prediction_id: str) -> HttpResponse:
    found = store.predictions.get(prediction_id)
    if found is None:
        return not_found_problem()
    faults = caller.faults
    if counters.take(f"read_5xx|{prediction_id}|{caller.key}", faults.read_5xx):
        return problem(500, "Internal Server Error", "Injected fault: read_5xx")
    if counters.take(f"read_503|{prediction_id}|{caller.key}", faults.read_503):
        response = problem(503, "Service Unavailable", "Injected fault: read_503")
        response["Retry-After"] = "0"
        return response
    return JsonResponse(found.as_json())


@api("POST")
async def cancel(request: HttpRequest, caller: Caller, prediction_id: str) -> HttpResponse:
    found = store.predictions.get(prediction_id)
    if found is None:
        return not_found_problem()
    runner.cancel(found)
    # Replicate's cancel answer still carries the legacy field.
    return JsonResponse({**found.as_json(), "webhook_completed": None})


async def _events(prediction: store.Prediction, cut_after: int | None) -> AsyncIterator[bytes]:
    """Replay the prediction's events from the start, then follow it until `done`."""
    yield b": hi\n\n"  # flushes the headers at once, as Replicate's stream server does
    sent = 0
    while True:
        new = prediction.events[sent:]
        if new:
            if cut_after is not None:
                new = new[: cut_after - sent]
            sent += len(new)
            yield b"".join(new)
            if cut_after is not None and sent >= cut_after:
                return  # the `cut_after` fault: drop the connection without `done`
        elif prediction.finished.is_set():
            return
        elif not await prediction.wait_for_events(sent, SSE_KEEPALIVE_SECONDS):
            yield b": keepalive\n\n"


@public
async def stream(request: HttpRequest, key: str) -> HttpResponseBase:
    """`urls.stream`: a capability URL, so no token is needed (nor checked, when sent)."""
    found = store.predictions.by_stream_key(key)
    if found is None or not found.model.streams:
        return not_found_problem()
    faults = found.faults  # as chosen when the prediction was created
    if faults.latency:
        await asyncio.sleep(faults.latency / 1000)
    response = StreamingHttpResponse(
        _events(found, faults.cut_after), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # tell a proxy in front not to buffer
    return response


# Models


def _models_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o={offset}".encode()).decode().rstrip("=")


def _models_offset(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        offset = int(raw.removeprefix("o="))
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None
    if not raw.startswith("o=") or not 0 <= offset < len(MODELS):
        raise ValueError("invalid cursor")
    return offset


@api("GET")
async def models(request: HttpRequest, caller: Caller) -> HttpResponse:
    """Public models, newest latest version first, in cursor pages (as Replicate lists)."""
    root = base_url(request)
    url = request.build_absolute_uri(reverse("sandbox:models"))
    try:
        offset = _models_offset(request.GET["cursor"]) if "cursor" in request.GET else 0
    except ValueError:
        return problem(400, "Invalid cursor", "The cursor is not one this API handed out")
    ordered = sorted(MODELS.values(), key=lambda m: m.latest_version.created_at, reverse=True)
    page = ordered[offset : offset + MODELS_PAGE_SIZE]
    after = offset + MODELS_PAGE_SIZE
    before = max(0, offset - MODELS_PAGE_SIZE)
    return JsonResponse(
        {
            "next": f"{url}?cursor={_models_cursor(after)}" if after < len(ordered) else None,
            "previous": f"{url}?cursor={_models_cursor(before)}" if offset else None,
            "results": [model.as_json(root) for model in page],
        }
    )


@api("GET")
async def model(request: HttpRequest, caller: Caller, owner: str, name: str) -> HttpResponse:
    found = find_model(owner, name)
    if found is None:
        return not_found_problem()
    return JsonResponse(found.as_json(base_url(request)))


@api("GET")
async def model_versions(
    request: HttpRequest, caller: Caller, owner: str, name: str
) -> HttpResponse:
    found = find_model(owner, name)
    if found is None:
        return not_found_problem()
    results = [version.as_json() for version in found.versions]
    return JsonResponse({"next": None, "previous": None, "results": results})


@api("GET")
async def model_examples(
    request: HttpRequest, caller: Caller, owner: str, name: str
) -> HttpResponse:
    found = find_model(owner, name)
    if found is None:
        return not_found_problem()
    example = found.default_example(base_url(request))
    return JsonResponse({"next": None, "previous": None, "results": [example] if example else []})


@api("GET")
async def model_readme(request: HttpRequest, caller: Caller, owner: str, name: str) -> HttpResponse:
    found = find_model(owner, name)
    if found is None:
        return not_found_problem()
    readme = f"# {found.ref}\n\n{found.description}\n"
    return HttpResponse(readme, content_type="text/plain; charset=utf-8")


@api("GET")
async def model_version(
    request: HttpRequest, caller: Caller, owner: str, name: str, version_id: str
) -> HttpResponse:
    found = find_model(owner, name)
    version = found.version(version_id) if found else None
    if version is None:
        return not_found_problem()
    return JsonResponse(version.as_json())


# Files


@api("GET", "POST")
async def files(request: HttpRequest, caller: Caller) -> HttpResponse:
    root = base_url(request)
    if request.method == "GET":
        results = [stored.as_json(root) for stored in store.files.newest_first()]
        return JsonResponse({"next": None, "previous": None, "results": results})
    # Parsing the multipart body (large parts spill to temporary files), reading the upload
    # and hashing it all block: do them off the event loop every request shares.
    uploads = await asyncio.to_thread(lambda: request.FILES)
    upload = uploads.get("content")
    if upload is None:
        return problem(400, "Bad request", "Send the file as the multipart field 'content'")
    if (upload.size or 0) > store.MAX_FILE_SIZE:
        return problem(413, "Content Too Large", f"Files may be {store.MAX_FILE_SIZE} bytes")
    # A plain form field (the Python client), or a JSON file part (the JavaScript client
    # sends `name="metadata"; filename="blob"`).
    metadata_part = uploads.get("metadata")
    if metadata_part is not None:
        raw_metadata = await asyncio.to_thread(metadata_part.read)
    else:
        raw_metadata = request.POST.get("metadata") or "{}"
    try:
        metadata = json.loads(raw_metadata or "{}")
    except (ValueError, UnicodeDecodeError):
        metadata = None
    if not isinstance(metadata, dict):
        return problem(400, "Bad request", "metadata must be a JSON object")
    content = await asyncio.to_thread(upload.read)
    stored = await asyncio.to_thread(  # hashes the content
        store.StoredFile,
        name=request.POST.get("filename") or upload.name or "file",
        content_type=request.POST.get("type") or upload.content_type or "application/octet-stream",
        content=content,
        metadata=metadata,
    )
    store.files.add(stored)
    return JsonResponse(stored.as_json(root), status=201)


@api("GET", "DELETE")
async def file(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponse:
    stored = store.files.get(file_id)
    if stored is None:
        return not_found_problem()
    if request.method == "DELETE":
        store.files.delete(file_id)
        return HttpResponse(status=204)
    return JsonResponse(stored.as_json(base_url(request)))


@api("GET")
async def file_download(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponse:
    stored = store.files.get(file_id)
    if stored is None:
        return not_found_problem()
    return HttpResponse(stored.content, content_type=stored.content_type)


@public
async def delivery(request: HttpRequest, prediction_id: str, filename: str) -> HttpResponse:
    """Output files, like replicate.delivery: no token needed (the client sends one anyway)."""
    found = store.outputs.get(prediction_id, filename)
    if found is None:
        return not_found_problem()
    made_by = store.predictions.get(prediction_id)
    if made_by is not None and counters.take(
        f"download_5xx|{prediction_id}|{filename}", made_by.faults.download_5xx
    ):
        return problem(503, "Service Unavailable", "Injected fault: download_5xx")
    content_type, content = found
    response = HttpResponse(content, content_type=content_type)
    response["Cache-Control"] = "public, max-age=3600"
    return response


# Account and the rest


@api("GET")
async def account(request: HttpRequest, caller: Caller) -> HttpResponse:
    # No github_url: the spec says a string when present, and this account has none.
    return JsonResponse({"type": "user", "username": "sandbox", "name": "Sandbox"})


@api("GET")
async def webhook_secret(request: HttpRequest, caller: Caller) -> HttpResponse:
    return JsonResponse({"key": signing_secret()})


@public
async def root(request: HttpRequest) -> HttpResponse:
    """What this is and how to point the client at it."""
    url = base_url(request).rstrip("/")
    return JsonResponse(
        {
            "name": "Replicate sandbox",
            "base_url": url,
            "usage": f'replicate.Client(api_token=..., base_url="{url}")',
            "models": sorted(MODELS),
        }
    )


@public
async def web(request: HttpRequest, prediction_id: str) -> HttpResponse:
    """The `urls.web` page: just enough to show what a prediction is doing."""
    found = store.predictions.get(prediction_id)
    if found is None:
        return not_found_problem()
    return HttpResponse(
        format_html(
            "<!doctype html><title>{}</title><h1>{}</h1><p>{} — <strong>{}</strong></p>",
            found.id,
            found.id,
            found.ref,
            found.status,
        )
    )


@public
async def model_web(request: HttpRequest, owner: str, name: str) -> HttpResponse:
    """A model's `url`: its web page, as replicate.com/<owner>/<name> is."""
    found = find_model(owner, name)
    if found is None:
        return not_found_problem()
    kind = "official" if found.is_official else "community"
    return HttpResponse(
        format_html(
            "<!doctype html><title>{}</title><h1>{}</h1><p>{}</p><p>{} model, latest version "
            "<code>{}</code></p>",
            found.ref,
            found.ref,
            found.description,
            kind,
            found.latest_version.id,
        )
    )


@public
async def unknown(request: HttpRequest) -> HttpResponse:
    return not_found_problem()
