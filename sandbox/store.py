"""In-memory state of the sandbox: predictions (with their event logs), uploaded files and
output files.

Everything lives in the serving process and is lost on restart, in-flight predictions
included. Bounds keep a long-running sandbox from growing without limit:

- predictions: the newest ``MAX_PREDICTIONS``; beyond that the oldest *finished* ones go
  (a prediction still running is never dropped);
- uploaded files: at most ``MAX_FILES`` and ``MAX_FILE_BYTES`` in total, oldest dropped;
- output files: at most ``MAX_OUTPUT_BYTES`` in total, oldest dropped (their URLs then 404).
"""

import asyncio
import base64
import hashlib
import itertools
import json
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.faults import Faults

if TYPE_CHECKING:
    from sandbox.demo_models import DemoModel, Version
    from sandbox.webhooks import WebhookSender

MAX_PREDICTIONS = 10_000
MAX_FILES = 1_000
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_FILE_SIZE = 100 * 1024 * 1024
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
PAGE_SIZE = 100

# `aborted`: stopped by its deadline (Cancel-After) before it ever started.
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})

_sequence = itertools.count(1)


def isoformat(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC)


def new_prediction_id() -> str:
    """26 lowercase base32 characters, like Replicate's ids."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


def sse_frame(event: str, event_id: str, data: str) -> bytes:
    """One server-sent event; text with newlines goes out as several `data:` lines."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\nid: {event_id}\n{lines}\n".encode()


class Prediction:
    """One prediction: its public JSON, its event log for streams, and its lifecycle."""

    def __init__(
        self,
        *,
        model: "DemoModel",
        version: "Version",
        input: dict,
        base_url: str,
        deployment: str | None = None,
        faults: Faults | None = None,
        deadline: datetime | None = None,
    ) -> None:
        self.id = new_prediction_id()
        # The stream URL is a capability, as on Replicate: unguessable, and it needs no
        # token (the JavaScript client fetches it without one).
        self.stream_key = secrets.token_urlsafe(32)
        self.seq = next(_sequence)
        self.model = model
        self.version = version
        self.input = input
        self.base_url = base_url  # absolute URL of the sandbox root, ending in "/"
        self.deployment = deployment
        # Chosen by the creating request; they also govern the stream, whoever reads it.
        self.faults = faults or Faults()
        self.deadline = deadline  # from Cancel-After
        self.status = "starting"
        self.output: Any = [] if model.iterator else None
        self.error: str | None = None
        self.metrics: dict[str, Any] = {}
        self.created_at = now()
        self.started_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.task: asyncio.Task | None = None
        self.webhook: WebhookSender | None = None
        self._logs: list[str] = []
        # Streams replay this log from the start, then wait on `_changed` for more.
        self.events: list[bytes] = []
        self._changed = asyncio.Event()
        self.finished = asyncio.Event()
        self.finished_callbacks: list[Callable[[], object]] = []

    # Reading

    @property
    def ref(self) -> str:
        return f"{self.model.owner}/{self.model.name}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def logs(self) -> str:
        return "".join(self._logs)

    @property
    def stream_url(self) -> str | None:
        return f"{self.base_url}v1/streams/{self.stream_key}" if self.model.streams else None

    def as_json(self) -> dict:
        urls = {
            "get": f"{self.base_url}v1/predictions/{self.id}",
            "cancel": f"{self.base_url}v1/predictions/{self.id}/cancel",
            "web": f"{self.base_url}p/{self.id}",
        }
        if self.stream_url:
            # Only for models that stream: the client rejects a null here.
            urls["stream"] = self.stream_url
        data = {
            "id": self.id,
            "model": self.ref,
            "version": self.version.id,
            "input": self.input,
            "logs": self.logs,
            "output": list(self.output) if isinstance(self.output, list) else self.output,
            "data_removed": False,
            "error": self.error,
            "status": self.status,
            "source": "api",
            "created_at": isoformat(self.created_at),
            "urls": urls,
            "metrics": dict(self.metrics),
        }
        # Left out until set, as Replicate does: the spec types them as strings, not null.
        for name, moment in (("started_at", self.started_at), ("completed_at", self.completed_at)):
            if moment is not None:
                data[name] = isoformat(moment)
        if self.deployment:
            data["deployment"] = self.deployment
        if self.deadline:
            data["deadline"] = isoformat(self.deadline)
        return data

    # Writing (called by the runner and the demo models)

    def mark_processing(self) -> None:
        if self.status != "starting":
            return
        self.status = "processing"
        self.started_at = now()
        self._notify_webhook("start")

    def log(self, line: str) -> None:
        self._logs.append(line + "\n")
        self._emit("logs", line)
        self._notify_webhook("logs")

    def add_output(self, item: Any) -> None:
        """Append one item of an iterator output (a token, for text)."""
        self.output.append(item)
        self._emit("output", item if isinstance(item, str) else json.dumps(item))
        self._notify_webhook("output")

    def set_output(self, value: Any) -> None:
        """Set a whole (non-iterator) output; streaming models also send it as one event."""
        self.output = value
        self._emit("output", value if isinstance(value, str) else json.dumps(value))
        self._notify_webhook("output")

    def finish(self, status: str, error: str | None = None) -> bool:
        """Move to a terminal status once; False if it already had one."""
        if self.is_terminal:
            return False
        self.status = status
        self.error = error
        self.completed_at = now()
        predict_time = (self.completed_at - self.started_at) if self.started_at else timedelta(0)
        self.metrics["predict_time"] = round(predict_time.total_seconds(), 6)
        self.metrics["total_time"] = round((self.completed_at - self.created_at).total_seconds(), 6)
        if status == "failed":
            self._emit("error", json.dumps({"detail": error}))
            self._emit("done", json.dumps({"reason": "error"}))
        elif status in ("canceled", "aborted"):
            self._emit("done", json.dumps({"reason": "canceled"}))
        else:
            self._emit("done", "{}")
        self.finished.set()
        for callback in self.finished_callbacks:
            callback()
        self._wake()
        self._notify_webhook("completed")
        return True

    # Waiting

    async def wait_finished(self, seconds: float) -> bool:
        """Wait up to `seconds` for a terminal status; True if it came."""
        if self.is_terminal:
            return True
        try:
            async with asyncio.timeout(seconds):
                await self.finished.wait()
        except TimeoutError:
            pass
        return self.is_terminal

    async def wait_for_events(self, known: int, seconds: float) -> bool:
        """Wait until there are more than `known` events or the log is closed.

        False when `seconds` passed first (the stream then sends a keepalive). Each wait
        is one future on a shared Event, so a token costs O(1) per subscriber.
        """
        if len(self.events) > known or self.finished.is_set():
            return True
        changed = self._changed
        try:
            async with asyncio.timeout(seconds):
                await changed.wait()
        except TimeoutError:
            return False
        return True

    def _emit(self, event: str, data: str) -> None:
        if not self.model.streams:
            return
        event_id = f"{int(self.created_at.timestamp())}:{len(self.events)}"
        self.events.append(sse_frame(event, event_id, data))
        self._wake()

    def _wake(self) -> None:
        # Swap in a fresh Event so late waiters block until the next change.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _notify_webhook(self, event: str) -> None:
        if self.webhook is not None:
            self.webhook.notify(event)


class PredictionStore:
    def __init__(self, limit: int = MAX_PREDICTIONS) -> None:
        self.limit = limit
        self._items: OrderedDict[str, Prediction] = OrderedDict()
        self._by_stream_key: dict[str, Prediction] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, prediction: Prediction) -> None:
        self._items[prediction.id] = prediction
        self._by_stream_key[prediction.stream_key] = prediction
        if len(self._items) > self.limit:
            self._evict()

    def get(self, prediction_id: str) -> Prediction | None:
        return self._items.get(prediction_id)

    def by_stream_key(self, key: str) -> Prediction | None:
        return self._by_stream_key.get(key)

    def _evict(self) -> None:
        excess = len(self._items) - self.limit
        finished = (p.id for p in self._items.values() if p.is_terminal)
        for prediction_id in list(itertools.islice(finished, excess)):
            evicted = self._items.pop(prediction_id)
            self._by_stream_key.pop(evicted.stream_key, None)
            outputs.discard_prediction(prediction_id)

    def page(self, cursor: str | None) -> tuple[list[Prediction], str | None, str | None]:
        """One page, newest first, plus the cursors of the older and newer pages.

        A cursor is "<seq" (older than seq) or ">seq" (newer than seq), base64-encoded so
        clients treat it as opaque. Raises ValueError on a cursor we did not make.
        """
        items = list(self._items.values())  # oldest first
        if cursor is None:
            chosen = items[-PAGE_SIZE:]
        else:
            direction, seq = _decode_cursor(cursor)
            if direction == "<":
                chosen = [p for p in items if p.seq < seq][-PAGE_SIZE:]
            else:
                chosen = [p for p in items if p.seq > seq][:PAGE_SIZE]
        chosen.reverse()
        if not chosen:
            return [], None, None
        older = items[0].seq < chosen[-1].seq
        newer = items[-1].seq > chosen[0].seq
        next_cursor = _encode_cursor("<", chosen[-1].seq) if older else None
        previous_cursor = _encode_cursor(">", chosen[0].seq) if newer else None
        return chosen, next_cursor, previous_cursor


def _encode_cursor(direction: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{direction}{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, seq = raw[0], int(raw[1:])
    except (ValueError, IndexError, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None
    if direction not in "<>":
        raise ValueError("invalid cursor")
    return direction, seq


@dataclass
class StoredFile:
    name: str
    content_type: str
    content: bytes
    metadata: dict
    id: str = field(
        default_factory=lambda: (
            base64.urlsafe_b64encode(str(uuid.uuid4()).encode()).decode().rstrip("=")
        )
    )
    created_at: datetime = field(default_factory=now)
    sha256: str = field(init=False)
    md5: str = field(init=False)

    def __post_init__(self) -> None:
        # Once, at upload: as_json runs on every list and get, on the event loop.
        self.sha256 = hashlib.sha256(self.content).hexdigest()
        self.md5 = hashlib.md5(self.content, usedforsecurity=False).hexdigest()

    def as_json(self, base_url: str) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.content),
            "etag": self.md5,
            "checksums": {"sha256": self.sha256, "md5": self.md5},
            "metadata": self.metadata,
            "created_at": isoformat(self.created_at),
            "expires_at": isoformat(self.created_at + timedelta(days=1)),
            "urls": {"get": f"{base_url}v1/files/{self.id}"},
        }


class FileStore:
    def __init__(self) -> None:
        self._items: OrderedDict[str, StoredFile] = OrderedDict()
        self._bytes = 0

    def add(self, stored: StoredFile) -> None:
        self._items[stored.id] = stored
        self._bytes += len(stored.content)
        while len(self._items) > MAX_FILES or self._bytes > MAX_FILE_BYTES:
            _, oldest = self._items.popitem(last=False)
            self._bytes -= len(oldest.content)

    def get(self, file_id: str) -> StoredFile | None:
        return self._items.get(file_id)

    def delete(self, file_id: str) -> bool:
        stored = self._items.pop(file_id, None)
        if stored is None:
            return False
        self._bytes -= len(stored.content)
        return True

    def newest_first(self) -> list[StoredFile]:
        return list(reversed(self._items.values()))


class OutputStore:
    """Bytes behind the output file URLs the sandbox hands out, grouped by prediction."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, dict[str, tuple[str, bytes]]] = OrderedDict()
        self._bytes = 0

    def put(self, prediction_id: str, filename: str, content_type: str, content: bytes) -> None:
        self._items.setdefault(prediction_id, {})[filename] = (content_type, content)
        self._bytes += len(content)
        while self._bytes > MAX_OUTPUT_BYTES and len(self._items) > 1:
            self.discard_prediction(next(iter(self._items)))

    def get(self, prediction_id: str, filename: str) -> tuple[str, bytes] | None:
        return self._items.get(prediction_id, {}).get(filename)

    def discard_prediction(self, prediction_id: str) -> None:
        for _, content in self._items.pop(prediction_id, {}).values():
            self._bytes -= len(content)


predictions = PredictionStore()
files = FileStore()
outputs = OutputStore()
