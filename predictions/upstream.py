"""Everything that talks to Replicate: the one module that imports `replicate`.

It builds clients (one per event loop), turns every failure into an `UpstreamError` with a
sentence a person understands, and hands the rest of the project plain values: a prediction
is an `UpstreamPrediction`, which also owns Replicate's status vocabulary (`aborted`, the
terminal set, what each status is called in the console).

Traps of `replicate` 1.0.7 handled here (see shared/reference/replicate-api.md):

- A `Client` caches an `httpx.AsyncClient` bound to the loop that first used it; reusing it
  from another loop fails with "Event loop is closed". Hence `_client()`.
- `ReplicateError` keeps only type/title/status/detail/instance: a 422's `invalid_fields`
  and a 429's `retry_after` are thrown away. A response hook reads the problem JSON first.
- `replicate.webhooks.validate` raises a zoo of exceptions (and `binascii.Error`);
  `validate_webhook` turns all of them into False.
- The client sends its Authorization header to every host; `download_file` fetches only
  Replicate's delivery hosts and the API's own file URLs, and sends the token only to the
  latter.
- The client's transport retries GET/PUT/DELETE on 429/503/504 by itself (honouring
  Retry-After) but never a POST; what reaches us is final, and `UpstreamError.retryable`
  tells the caller whether another try later makes sense.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import re
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ParamSpec, Protocol, TypeVar
from urllib.parse import unquote_to_bytes

import httpx
import replicate
from asgiref.sync import async_to_sync
from replicate.client import Client
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput
from replicate.prediction import Prediction as ClientPrediction
from replicate.stream import EventSource
from replicate.webhook import WebhookSigningSecret

from . import crypto, metrics, untrusted

try:  # replicate 1.0.7 models are pydantic v1 (the v1 shim under pydantic 2)
    from pydantic.v1 import ValidationError
except ImportError:  # pragma: no cover - pydantic 1 installed
    from pydantic import ValidationError  # type: ignore[assignment]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Seconds to wait for a connection. The read timeout is Credentials.timeout; it also
# bounds the silence on a stream, which Replicate fills with keepalive comments.
CONNECT_TIMEOUT = 5.0
PREDICTION_FIELDS = (
    "id",
    "model",
    "version",
    "status",
    "input",
    "output",
    "logs",
    "error",
    "metrics",
    "urls",
    "created_at",
    "started_at",
    "completed_at",
    "deadline",
)
# Replicate's limits for the Cancel-After header.
MIN_CANCEL_AFTER_SECONDS = 5

# Replicate's statuses that end a prediction. `aborted`: its deadline (Cancel-After) came
# before it ever started.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
# Replicate's statuses as the console names them (the values of models.Prediction.Status,
# which sits above this module).
_CONSOLE_STATUS = {
    "starting": "starting",
    "processing": "processing",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
    # Stopped by its deadline before it started: for a person, that is a cancel.
    "aborted": "canceled",
}
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Credentials:
    """A plaintext token and the API base URL (without /v1). Hashable: it keys the clients."""

    token: str = field(repr=False)  # never in a repr, a log line or a traceback's locals dump
    base_url: str
    # Read timeout in seconds for every request (streams included).
    timeout: float = 30.0


class UpstreamError(Exception):
    """A failed call to Replicate; `str()` is a sentence to show a person as it is.

    kind: "auth" (401/403), "billing" (402), "not_found" (404, unknown version), "invalid_input"
    (400/413/422), "rate_limited" (429), "server" (5xx), "network", "timeout", "config",
    "bad_response", "model_error".
    """

    RETRYABLE_KINDS = frozenset({"rate_limited", "server", "network", "timeout"})

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        invalid_fields: dict[str, str] | None = None,
    ) -> None:
        # Messages quote Replicate's answers, which are untrusted text.
        message = untrusted.scrub(message)
        super().__init__(message)
        metrics.upstream_error(kind)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.invalid_fields = invalid_fields or {}

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"UpstreamError(kind={self.kind!r}, status={self.status!r}, {self.message!r})"

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE_KINDS


@dataclass(frozen=True)
class UpstreamPrediction:
    """A prediction as Replicate reported it, made storable (model output is untrusted text).

    Every prediction this module returns is one: `from_json` reads the fields the console
    uses out of a prediction's JSON and scrubs them.
    """

    id: str
    status: str  # Replicate's word ("aborted" included); "" if it sent none
    model: str = ""
    version: str = ""  # as reported: a version id, or "hidden" for some official models
    input: Any = None
    output: Any = None
    logs: str | None = None  # None: not sent (or not text)
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    stream_url: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    deadline: datetime | None = None  # set when the create asked for Cancel-After

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UpstreamPrediction:
        """From a prediction's JSON (Replicate's answer, a webhook's body, the client's
        model as a dict); the fields' values are scrubbed (see untrusted.py)."""
        fields = untrusted.scrub({name: _plain(data.get(name)) for name in PREDICTION_FIELDS})
        urls = fields["urls"]
        stream_url = urls.get("stream") if isinstance(urls, dict) else None
        metrics, logs = fields["metrics"], fields["logs"]
        return cls(
            id=str(fields["id"] or ""),
            status=str(fields["status"] or ""),
            model=str(fields["model"] or ""),
            version=str(fields["version"] or ""),
            input=fields["input"],
            output=fields["output"],
            logs=logs if isinstance(logs, str) else None,
            error=str(fields["error"] or ""),
            metrics=metrics if isinstance(metrics, dict) else {},
            stream_url=stream_url if isinstance(stream_url, str) and stream_url else None,
            created_at=parse_time(fields["created_at"]),
            started_at=parse_time(fields["started_at"]),
            completed_at=parse_time(fields["completed_at"]),
            deadline=parse_time(fields["deadline"]),
        )

    @property
    def console_status(self) -> str | None:
        """The status in the console's words (`aborted` is canceled); None for a word this
        console does not know."""
        return _CONSOLE_STATUS.get(self.status)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def never_started(self) -> bool:
        """Stopped by its deadline before it ever ran (`aborted`: not billed)."""
        return self.status == "aborted"

    @property
    def version_id(self) -> str:
        """The version that ran, if Replicate named it ("" when it answers "hidden")."""
        return self.version if _VERSION_ID.match(self.version) else ""


@dataclass(frozen=True)
class StreamEvent:
    event: str  # "output" | "logs" | "error" | "done"
    data: str
    id: str


@dataclass(frozen=True)
class ModelSchema:
    """A model version's input and output JSON Schemas, ready for a form.

    `$ref`s into components.schemas are resolved and Cog's one-item `allOf` enum wrappers
    are merged into the property (its own keys win; the enum's class-name title is
    dropped), so every property carries its `enum` inline.
    """

    version_id: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    title: str = ""
    description: str = ""
    cover_image_url: str = ""
    is_official: bool = False


# ---------------------------------------------------------------------------- credentials


class StoredToken(Protocol):
    """What this module reads of a stored token (models.ApiToken, which sits above it)."""

    @property
    def label(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def base_url(self) -> str: ...
    def get_token(self) -> str: ...


def credentials_for(token: StoredToken | None, *, include_disabled: bool = False) -> Credentials:
    """The plaintext credentials of a stored token, or a clear "config" error."""
    if token is None:
        raise UpstreamError(
            "config",
            "No Replicate API token is configured: add one in the admin (API tokens) "
            "and mark it as the default, or choose one for this model.",
        )
    if not token.enabled and not include_disabled:
        raise UpstreamError(
            "config", f"The API token “{token.label}” is disabled; enable it in the admin."
        )
    try:
        plaintext = token.get_token()
    except crypto.TokenKeyError as exc:
        raise UpstreamError(
            "config", f"The API token “{token.label}” cannot be read: {exc}"
        ) from None
    return Credentials(token=plaintext, base_url=token.base_url.rstrip("/"))


# ---------------------------------------------------------------------------- clients

# Per event loop, one client per credentials. The values hold the loop alive (pooled
# connections reference it), so weak keys alone never let go: `_client()` also drops
# the entries of closed loops.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Credentials, Client]]
_clients = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()
# Set by `create_prediction` for the one create request it sends: see `_add_cancel_after`.
_cancel_after: ContextVar[int | None] = ContextVar("replicate_cancel_after", default=None)
# Set by `call_sync`: clients private to one synchronous call, closed when it ends. Under
# ASGI, async_to_sync runs the call on the server's own loop, where a call-scoped client
# keeps the admin's requests from closing (or sharing) the runner's pool.
_scoped_clients: ContextVar[dict[Credentials, Client] | None] = ContextVar(
    "replicate_scoped_clients", default=None
)


def _new_client(creds: Credentials) -> Client:
    client = Client(
        api_token=creds.token,
        base_url=creds.base_url,
        timeout=httpx.Timeout(
            creds.timeout,
            connect=min(CONNECT_TIMEOUT, creds.timeout),
            pool=min(10.0, creds.timeout),
        ),
        event_hooks={"request": [_add_cancel_after], "response": [_raise_for_problem]},
        # Every streaming prediction holds a connection for its whole life: httpx's default
        # pool of 100 would queue the 101st stream behind the others. (Only async methods are
        # used, so an async transport is right for this client.)
        transport=httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100)
        ),
    )
    # poll_interval is left alone: nothing here calls run()/wait(), so the client never
    # polls; the runner polls (or streams) on its own schedule.
    return client


def _client(creds: Credentials) -> Client:
    scoped = _scoped_clients.get()
    if scoped is not None:
        if creds not in scoped:
            scoped[creds] = _new_client(creds)
        return scoped[creds]
    loop = asyncio.get_running_loop()
    with _clients_lock:
        for dead in [other for other in _clients if other.is_closed()]:
            # Its sockets cannot be closed politely any more; dropping them lets GC do it.
            del _clients[dead]
        per_loop = _clients.setdefault(loop, {})
        if creds not in per_loop:
            per_loop[creds] = _new_client(creds)
        return per_loop[creds]


async def _close(client: Client) -> None:
    # `Client` has no close(); its lazily built AsyncClient is in a name-mangled attribute.
    http: httpx.AsyncClient | None = getattr(client, "_Client__async_client", None)
    if http is not None:
        await http.aclose()


def call_sync(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call one of this module's async functions from sync code (admin actions, commands).

    Its clients live for this call only, whichever loop async_to_sync picks.
    """

    async def scoped() -> T:
        clients: dict[Credentials, Client] = {}
        reset = _scoped_clients.set(clients)
        try:
            return await fn(*args, **kwargs)
        finally:
            _scoped_clients.reset(reset)
            for client in clients.values():
                await _close(client)

    return async_to_sync(scoped)()


# ---------------------------------------------------------------------------- errors

_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
_DETAIL_LINE = re.compile(r"^\s*-\s*([^:\s]+):\s*(.+?)\s*$")
_REQUIRED = re.compile(r"^(\S+) is required$")
_ADDITIONAL = re.compile(r"^Additional property (\S+) is not allowed$")


def _field_name(field_path: str, description: str) -> str:
    """Replicate names fields as "input" (root) or "input.style"; the form wants "style"."""
    if field_path.startswith("input."):
        return field_path.removeprefix("input.")
    for pattern in (_REQUIRED, _ADDITIONAL):
        if match := pattern.match(description):
            return match.group(1)
    return field_path or "input"


def _invalid_fields(problem: Mapping[str, Any]) -> dict[str, str]:
    fields: dict[str, str] = {}
    listed = problem.get("invalid_fields")
    if isinstance(listed, list):
        for item in listed:
            if isinstance(item, dict):
                description = str(item.get("description") or item.get("type") or "is invalid")
                name = _field_name(str(item.get("field") or ""), description)
                fields.setdefault(name, description)
    if not fields:
        # What ReplicateError keeps: the detail text, one "- input.x: reason" line per field.
        for line in str(problem.get("detail") or "").splitlines():
            if match := _DETAIL_LINE.match(line):
                name = _field_name(match.group(1), match.group(2))
                fields.setdefault(name, match.group(2))
    return fields


def _retry_after(problem: Mapping[str, Any], headers: Mapping[str, str] | None) -> float | None:
    raw = (headers or {}).get("retry-after", "").strip()
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                when = parsedate_to_datetime(raw)  # the HTTP-date form
                return max(0.0, (when - datetime.now(UTC)).total_seconds())
    value = problem.get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0.0, float(value))
    if match := _RESETS_IN.search(str(problem.get("detail") or "")):
        return float(match.group(1))
    return None


def _seconds(value: float) -> str:
    return f"{value:g}"


def _problem_error(
    status: int, problem: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> UpstreamError:
    """An UpstreamError for an HTTP error answer (RFC 7807 problem JSON, if any)."""
    title = str(problem.get("title") or "").strip()
    detail = str(problem.get("detail") or "").strip()
    explained = f": {detail}" if detail else (f": {title}" if title else "")
    if status == 401:
        return UpstreamError(
            "auth", "Replicate rejected the API token (401). Check it in the admin.", status=status
        )
    if status == 403:
        return UpstreamError(
            "auth", f"Replicate refused access with this API token (403){explained}", status=status
        )
    if status == 402:
        return UpstreamError(
            "billing",
            "Replicate needs billing set up for this account (402 Payment Required).",
            status=status,
        )
    if status in (404, 410):
        return UpstreamError(
            "not_found", f"Replicate could not find that ({status}){explained}", status=status
        )
    if status == 429:
        retry_after = _retry_after(problem, headers)
        when = f"in {_seconds(retry_after)} s" if retry_after is not None else "shortly"
        return UpstreamError(
            "rate_limited",
            f"Rate limited by Replicate; try again {when}.",
            status=status,
            retry_after=retry_after,
        )
    if 500 <= status < 600:
        return UpstreamError(
            "server",
            f"Replicate had a server error ({status}){explained}",
            status=status,
            retry_after=_retry_after(problem, headers),
        )
    fields = _invalid_fields(problem)
    if status == 422 and not fields and "version" in f"{title} {detail}".lower():
        # "Invalid version or not permitted": the input is fine, the model is not.
        return UpstreamError(
            "not_found",
            "Replicate does not know that model version, or this token may not use it.",
            status=status,
        )
    if status in (400, 413, 422):
        if fields:
            listed = "; ".join(f"{name}: {reason}" for name, reason in fields.items())
            message = f"Invalid input: {listed}"
        else:
            message = f"Invalid input{explained or ' (rejected by Replicate)'}"
        return UpstreamError("invalid_input", message, status=status, invalid_fields=fields)
    return UpstreamError("bad_response", f"Replicate answered {status}{explained}", status=status)


async def _add_cancel_after(request: httpx.Request) -> None:
    """httpx request hook: Replicate's Cancel-After header on a create.

    replicate 1.0.7 has no parameter for it, and a client-wide header would go on every
    request; the context variable is set only around the create call.
    """
    seconds = _cancel_after.get()
    if seconds is not None and request.method == "POST":
        request.headers["Cancel-After"] = f"{seconds}s"


async def _raise_for_problem(response: httpx.Response) -> None:
    """httpx response hook: read error bodies ourselves, before ReplicateError drops fields.

    It runs after the client's retries (they live in the transport), on the final answer.
    """
    if response.status_code < 400:
        return
    await response.aread()
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    raise _problem_error(response.status_code, problem, response.headers)


def _map_exception(exc: BaseException, creds: Credentials) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, ReplicateError):
        if exc.status:
            return _problem_error(exc.status, exc.to_dict())
        # Raised positionally by the client, e.g. ReplicateError("Model does not support
        # streaming"), which puts the message into .type.
        return UpstreamError("bad_response", str(exc.type or exc.detail or exc.title or exc))
    if isinstance(exc, ModelError):
        prediction = getattr(exc, "prediction", None)
        error = getattr(prediction, "error", None) or "The model failed."
        return UpstreamError("model_error", str(error))
    if isinstance(exc, httpx.TimeoutException):
        limit = creds.timeout
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            limit = min(CONNECT_TIMEOUT, creds.timeout)
        return UpstreamError("timeout", f"Replicate did not answer within {_seconds(limit)} s.")
    if isinstance(exc, httpx.TransportError):
        reason = str(exc) or type(exc).__name__
        return UpstreamError("network", f"Could not reach Replicate at {creds.base_url}: {reason}.")
    if isinstance(exc, ValidationError):
        # e.g. the "aborted" status, which 1.0.7 cannot parse.
        errors = exc.errors()
        where = ".".join(str(part) for part in errors[0]["loc"]) if errors else ""
        message = errors[0]["msg"] if errors else None
        return UpstreamError(
            "bad_response",
            f"Replicate sent a response this console cannot read ({where}: {message}).",
        )
    if isinstance(exc, ValueError):
        # Non-JSON bodies, a non-SSE stream, an unknown SSE event name.
        return UpstreamError("bad_response", f"Replicate sent an unexpected response: {exc}")
    logger.warning("Unexpected error from the Replicate client", exc_info=exc)
    return UpstreamError("bad_response", f"Unexpected error talking to Replicate: {exc!r}")


@contextlib.contextmanager
def _translated(creds: Credentials, not_found: str | None = None) -> Iterator[None]:
    """Re-raise whatever the client or httpx raises as an UpstreamError."""
    try:
        yield
    except (
        ReplicateError,
        ModelError,
        httpx.HTTPError,
        ValueError,  # pydantic's ValidationError included
        TypeError,  # a JSON body of the wrong shape, e.g. a list where an object belongs
        UpstreamError,
    ) as exc:
        error = _map_exception(exc, creds)
        if not_found and error.kind == "not_found":
            error = UpstreamError("not_found", not_found, status=error.status)
        if error is exc:
            raise
        raise error from exc


# ---------------------------------------------------------------------------- conversion


def _plain(value: Any) -> Any:
    """JSON-able: FileOutput becomes its URL, tuples become lists."""
    if isinstance(value, FileOutput):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _from_client(prediction: ClientPrediction) -> UpstreamPrediction:
    fields = {name: getattr(prediction, name, None) for name in PREDICTION_FIELDS}
    return UpstreamPrediction.from_json(fields)


# ---------------------------------------------------------------------------- predictions


async def create_prediction(
    creds: Credentials,
    *,
    model_ref: str,
    version: str,
    input: dict[str, Any],
    stream: bool = False,
    webhook: str | None = None,
    webhook_events_filter: list[str] | None = None,
    cancel_after: int | None = None,
) -> UpstreamPrediction:
    """Create a prediction and return it at once (no Prefer: wait; the runner streams/polls).

    An empty `version` runs the model's latest version through the models endpoint, which
    Replicate offers for official models only. `cancel_after` (seconds, at least 5) asks
    Replicate to stop it then: `canceled` if it runs, `aborted` if it never started.
    """
    if cancel_after is not None and cancel_after < MIN_CANCEL_AFTER_SECONDS:
        raise ValueError(f"cancel_after must be at least {MIN_CANCEL_AFTER_SECONDS} seconds")
    client = _client(creds)
    params: dict[str, Any] = {}
    if stream:
        params["stream"] = True
    if webhook:
        params["webhook"] = webhook
        if webhook_events_filter is not None:
            params["webhook_events_filter"] = list(webhook_events_filter)
    missing = (
        f"Model {model_ref} has no version {version[:12]}…, or you cannot access it."
        if version
        else f"Model {model_ref} does not exist or you cannot access it."
    )
    reset = _cancel_after.set(cancel_after)
    try:
        with _translated(creds, not_found=missing):
            if version:
                prediction = await client.predictions.async_create(
                    version=version, input=input, **params
                )
            else:
                # Not predictions.async_create(model=...): that path drops parameters.
                prediction = await client.models.predictions.async_create(
                    model=model_ref, input=input, **params
                )
    finally:
        _cancel_after.reset(reset)
    return _from_client(prediction)


def is_sandbox(creds: Credentials) -> bool:
    """Whether these credentials point at the console's built-in sandbox."""
    return httpx.URL(creds.base_url).path.rstrip("/").endswith("/sandbox")


def _forgotten(creds: Credentials, upstream_id: str) -> str:
    if is_sandbox(creds):
        return (
            f"The sandbox has no prediction {upstream_id}: the sandbox was restarted, and it "
            "keeps predictions in memory only, so it forgot this one."
        )
    return f"Replicate has no prediction {upstream_id} (any more)."


async def _prediction_json(
    creds: Credentials, method: str, path: str, upstream_id: str
) -> UpstreamPrediction:
    """A prediction read from its JSON, without the client's Prediction model: 1.0.7 cannot
    parse the `aborted` status (a deadline reached before it started) and drops `deadline`."""
    client = _client(creds)
    with _translated(creds, not_found=_forgotten(creds, upstream_id)):
        # The client's own request method: its base URL, token, headers and GET retries.
        response = await client._async_request(method, path)
        data = response.json()
    if not isinstance(data, dict) or not data.get("id"):
        raise UpstreamError("bad_response", "Replicate sent a prediction this console cannot read.")
    return UpstreamPrediction.from_json(data)


async def get_prediction(creds: Credentials, upstream_id: str) -> UpstreamPrediction:
    return await _prediction_json(creds, "GET", f"/v1/predictions/{upstream_id}", upstream_id)


async def cancel_prediction(creds: Credentials, upstream_id: str) -> UpstreamPrediction:
    path = f"/v1/predictions/{upstream_id}/cancel"
    return await _prediction_json(creds, "POST", path, upstream_id)


async def recent_predictions(
    creds: Credentials, since: datetime, *, max_pages: int = 5
) -> list[UpstreamPrediction]:
    """The account's predictions created since `since`, newest first (a few pages at most:
    this looks for one that was just created)."""
    client = _client(creds)
    found: list[UpstreamPrediction] = []
    page_url = "/v1/predictions"
    with _translated(creds):
        for _ in range(max_pages):
            # Read as JSON, as get_prediction does: the client cannot parse `aborted`.
            page = (await client._async_request("GET", page_url)).json()
            for item in page.get("results") or []:
                if not isinstance(item, dict) or not item.get("id"):
                    continue
                prediction = UpstreamPrediction.from_json(item)
                if prediction.created_at is not None and prediction.created_at < since:
                    return found
                found.append(prediction)
            if not isinstance(page.get("next"), str):
                break
            page_url = page["next"]
    return found


def parse_time(value: Any) -> datetime | None:
    """A timestamp as Replicate writes it ("…Z"); None if it is not one."""
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _error_detail(data: str) -> str:
    """The message of a server `error` event: JSON {"detail": ...} or plain text."""
    with contextlib.suppress(ValueError):
        parsed = json.loads(data)
        if isinstance(parsed, dict) and parsed.get("detail"):
            return str(parsed["detail"])
    return data.strip() or "The model failed."


def _raised_for_error_event(exc: RuntimeError) -> bool:
    """Whether EventSource raised `exc` for a server `error` event (its data is the args).

    Told apart by where it was raised, not by its text: a model may well fail with
    "Event loop is closed", which is also what a client used from a dead loop says.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code is EventSource.__aiter__.__code__


async def stream_events(
    creds: Credentials, prediction: UpstreamPrediction
) -> AsyncIterator[StreamEvent]:
    """The prediction's server-sent events, parsed by the client's own EventSource.

    Ends after `done`, or after yielding one `error` event. A stream that breaks off or
    cannot be read raises UpstreamError(kind="network") so the caller can poll instead;
    auth, billing and config problems keep their kind.
    """
    stream_url = prediction.stream_url
    if not stream_url:
        raise UpstreamError("bad_response", "This prediction has no stream to follow.")
    client = _client(creds)
    # Only what async_stream needs: the stream URL and the client (no validation).
    handle = ClientPrediction.construct(id=prediction.id, urls={"stream": stream_url})
    handle._client = client
    seen_done = False
    try:
        async for sse in handle.async_stream():
            kind = sse.event.value
            if kind == "done":
                seen_done = True
            yield StreamEvent(kind, untrusted.scrub(str(sse.data)), str(sse.id))
            if seen_done:
                return
    except RuntimeError as exc:
        if not _raised_for_error_event(exc):
            raise  # a real bug, e.g. a client used from a closed event loop
        detail = _error_detail(str(exc.args[0]) if exc.args else "")
        yield StreamEvent("error", untrusted.scrub(detail), "")
        return
    except (ReplicateError, httpx.HTTPError, ValueError, UpstreamError) as exc:
        error = _map_exception(exc, creds)
        if error.kind in ("auth", "billing", "config"):
            raise error from exc
        raise UpstreamError(
            "network", f"The stream from Replicate broke off: {error}", status=error.status
        ) from exc
    if not seen_done:
        raise UpstreamError("network", "The stream from Replicate ended before the prediction did.")


# ---------------------------------------------------------------------------- account, models


async def get_account(creds: Credentials) -> dict[str, Any]:
    """GET /v1/account: {"type", "username", "name", "github_url"}."""
    client = _client(creds)
    with _translated(creds):
        account = await client.accounts.async_current()
    return _plain(account.dict())


def _resolve_refs(node: Any, components: Mapping[str, Any], seen: frozenset[str]) -> Any:
    if isinstance(node, list):
        return [_resolve_refs(item, components, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[-1]
        if name in seen or name not in components:  # a cycle or a dangling ref: keep it
            return dict(node)
        target = _resolve_refs(components[name], components, seen | {name})
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    resolved = {key: _resolve_refs(value, components, seen) for key, value in node.items()}
    all_of = resolved.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        # Cog wraps enums as {"allOf": [{"$ref": ...}], "default": ..., "x-order": ...}.
        # The enum's own title is its Python class name ("output_format"), not a label.
        resolved.pop("allOf")
        part = {k: v for k, v in all_of[0].items() if k not in ("title", "description")}
        resolved = {**part, **resolved}
    return resolved


def split_openapi_schema(openapi: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input schema, output schema) of a version's `openapi_schema`, refs resolved."""
    components = (openapi.get("components") or {}).get("schemas") or {}
    input_schema = _resolve_refs(components.get("Input") or {}, components, frozenset({"Input"}))
    output_schema = _resolve_refs(components.get("Output") or {}, components, frozenset({"Output"}))
    return input_schema, output_schema


async def get_model_schema(
    creds: Credentials, owner: str, name: str, version: str = ""
) -> ModelSchema:
    """The schema of a pinned `version`, or of the model's latest version."""
    client = _client(creds)
    ref = f"{owner}/{name}"
    # As JSON: the client's Model drops `is_official`, which decides how a model is run.
    with _translated(creds, not_found=f"Model {ref} does not exist or you cannot access it."):
        model = (await client._async_request("GET", f"/v1/models/{owner}/{name}")).json()
    if not isinstance(model, dict):
        raise UpstreamError("bad_response", f"Replicate sent an unreadable model for {ref}.")
    if version:
        with _translated(creds, not_found=f"Model {ref} has no version {version}."):
            path = f"/v1/models/{owner}/{name}/versions/{version}"
            found = (await client._async_request("GET", path)).json()
    else:
        found = model.get("latest_version")
        if not found:
            raise UpstreamError("not_found", f"Model {ref} has no published version yet.")
    openapi = found.get("openapi_schema") if isinstance(found, dict) else None
    if not isinstance(openapi, dict) or not found.get("id"):
        raise UpstreamError("bad_response", f"Replicate sent no schema for {ref}.")
    input_schema, output_schema = split_openapi_schema(openapi)
    return ModelSchema(
        version_id=str(found["id"]),
        input_schema=input_schema,
        output_schema=output_schema,
        title=str(model.get("title") or ""),
        description=str(model.get("description") or ""),
        cover_image_url=str(model.get("cover_image_url") or ""),
        is_official=model.get("is_official") is True,
    )


async def webhook_signing_secret(creds: Credentials) -> str:
    """GET /v1/webhooks/default/secret → "whsec_…"."""
    client = _client(creds)
    with _translated(creds):
        secret = await client.webhooks.default.async_secret()
    return secret.key


# ---------------------------------------------------------------------------- webhooks


def _usable_signatures(header: str) -> str:
    """Drop entries the client's validator would crash on (bad base64 raises binascii.Error
    even when a later entry is the valid one); keep the rest in order."""
    usable = []
    for entry in header.split():
        version, _, signature = entry.partition(",")
        if version != "v1" or not signature:
            continue
        try:
            base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        usable.append(entry)
    return " ".join(usable)


def validate_webhook(
    headers: Mapping[str, str], body: str, secret: str, tolerance: int = 300
) -> bool:
    """True only for a correctly signed, fresh webhook. Never raises."""
    try:
        if not isinstance(body, str) or not isinstance(secret, str):
            return False  # bytes would be signed as "b'...'" and never match
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        signatures = _usable_signatures(lowered.get("webhook-signature", ""))
        if not signatures:
            return False
        lowered["webhook-signature"] = signatures
        replicate.webhooks.validate(
            headers=lowered,
            body=body,
            secret=WebhookSigningSecret(key=secret),
            tolerance=tolerance,
        )
    except Exception:  # any failure at all means "not a valid webhook"
        return False
    return True


# ---------------------------------------------------------------------------- files


def _too_large(max_bytes: int) -> UpstreamError:
    if max_bytes >= 1_000_000:
        limit = f"{round(max_bytes / 1_000_000, 1):g} MB"
    elif max_bytes >= 1_000:
        limit = f"{round(max_bytes / 1_000, 1):g} kB"
    else:
        limit = f"{max_bytes} bytes"
    return UpstreamError("bad_response", f"Output file larger than {limit}")


def _decode_data_uri(url: str, max_bytes: int) -> tuple[bytes, str]:
    header, comma, payload = url.partition(",")
    if not comma:
        raise UpstreamError("bad_response", "Malformed data: URI in the output.")
    params = header.removeprefix("data:").split(";")
    is_base64 = params[-1].strip().lower() == "base64"
    content_type = params[0].strip() or "text/plain"
    # Size check before decoding: base64 is 4 characters per 3 bytes.
    estimate = len(payload) * 3 // 4 if is_base64 else len(payload)
    if estimate > max_bytes + 3:
        raise _too_large(max_bytes)
    try:
        content = base64.b64decode(payload) if is_base64 else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise UpstreamError("bad_response", "Malformed data: URI in the output.") from None
    if len(content) > max_bytes:
        raise _too_large(max_bytes)
    return content, content_type


# Output files come from Replicate's file delivery (and its subdomains)...
DELIVERY_HOST = "replicate.delivery"
# ...or from the API itself: the sandbox serves outputs at <base>/delivery/ and files at
# <base>/v1/files/. Only the latter need (and get) the token.
API_FILE_PATH = "/v1/files/"
API_DELIVERY_PATH = "/delivery/"
MAX_REDIRECTS = 3


def _output_url(creds: Credentials, url: str | httpx.URL) -> tuple[httpx.URL, bool]:
    """(URL to fetch, whether it gets the token), or UpstreamError for a URL we won't fetch.

    The runner fetches every http(s) string in a model's output, and the model decides what
    that is: an allow-list keeps it from pointing us at internal services, and keeps the
    token away from everything but the API's file URLs (never /v1/predictions and the like).
    """
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        raise UpstreamError("bad_response", "Output file URL is malformed.") from None
    host = target.host
    if target.scheme == "https" and (host == DELIVERY_HOST or host.endswith("." + DELIVERY_HOST)):
        return target, False
    api = httpx.URL(creds.base_url)
    # `path` is percent-decoded, so "..%2f" shows up here as a ".." segment.
    path = target.path
    if (target.scheme, host, target.port) == (api.scheme, api.host, api.port) and (
        ".." not in path.split("/")
    ):
        root = api.path.rstrip("/")
        if path.startswith(root + API_FILE_PATH):
            return target, True
        if path.startswith(root + API_DELIVERY_PATH):
            return target, False
    raise UpstreamError(
        "bad_response",
        f"Not fetching output file {str(target)[:200]}: only {DELIVERY_HOST} and the API's "
        "own file URLs are allowed.",
    )


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, str]:
    if response.status_code >= 400:
        await _raise_for_problem(response)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > max_bytes:
            raise _too_large(max_bytes)
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    return bytes(buffer), content_type or "application/octet-stream"


async def download_file(creds: Credentials, url: str, *, max_bytes: int) -> tuple[bytes, str]:
    """(content, content type) of an output file; never reads more than `max_bytes`.

    Only data: URIs, Replicate's delivery hosts and the API's own file URLs are fetched
    (see `_output_url`); anything else is UpstreamError(kind="bad_response").
    """
    if url.startswith("data:"):
        return _decode_data_uri(url, max_bytes)
    timeout = httpx.Timeout(creds.timeout, connect=min(CONNECT_TIMEOUT, creds.timeout))
    target: str | httpx.URL = url
    with _translated(creds, not_found="The output file is gone (Replicate keeps files ~1 hour)."):
        # Our own httpx client: the replicate client would send the token to any host. It
        # follows no redirects by itself; each hop goes through the allow-list again.
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            for _ in range(MAX_REDIRECTS + 1):
                checked, with_token = _output_url(creds, target)
                headers = {"User-Agent": "replicate-console"}
                if with_token:
                    headers["Authorization"] = f"Bearer {creds.token}"
                async with http.stream("GET", checked, headers=headers) as response:
                    if not response.is_redirect:
                        return await _read_capped(response, max_bytes)
                    target = response.url.join(response.headers["location"])
    raise UpstreamError("bad_response", "The output file URL redirects too many times.")


async def upload_file(creds: Credentials, content: bytes, filename: str, content_type: str) -> str:
    """POST /v1/files; the URL to put in a prediction's input."""
    client = _client(creds)
    with _translated(creds):
        uploaded = await client.files.async_create(
            io.BytesIO(content), filename=filename, content_type=content_type
        )
    url = uploaded.urls.get("get")
    if not url:
        raise UpstreamError("bad_response", "Replicate stored the file but returned no URL for it.")
    return url
