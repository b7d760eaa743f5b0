"""The live-event protocol: group names, event types, publishing, the replay log, snapshots.

Who writes what
---------------
Only the runner numbers events (`seq`, 1, 2, 3 … per prediction, in memory) and only it
writes `text_output`, `logs` and `event_seq` to the row, always together in one UPDATE.
So a row read from the database is a snapshot *as of* its `event_seq`: applying events
seq+1, seq+2 … to it gives exactly what the runner has.

Why a replay log
----------------
The database lags the events by up to a flush interval (~1 s). A browser that connects in
between reads snapshot k while events k+1 … m went out before it joined the group. Those
events are kept here, per prediction, in the *replay log* — a bounded list in Redis when
the channel layer is Redis (so it reaches every process the layer reaches), or in this
process's memory when the layer is in-memory (the same reach). The runner appends an
event to the log *before* sending it to the group, so any event a consumer did not
receive live is already in the log when the consumer looks (see consumers.py for the
proof). The log is an accelerator with a safety net: if an entry is missing (expired,
trimmed, lost with a Redis restart) the consumer re-reads the row once the runner has
flushed past the gap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import uuid
import weakref
from collections import OrderedDict, deque
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.urls import reverse
from redis.asyncio import BlockingConnectionPool, Redis

from .database import db
from .models import OutputFile, Prediction

logger = logging.getLogger(__name__)

# Browser-facing event types, each with "seq". `snapshot` and `error` come from consumers.
STATUS = "status"
OUTPUT = "output"
LOGS = "logs"
PROGRESS = "progress"
FILES = "files"
DONE = "done"

# Channel-layer message types (the consumer method names with "." for "_").
EVENT_MESSAGE = "prediction.event"  # {"event": {...numbered event...}}
REFRESH_MESSAGE = "prediction.refresh"  # the row changed outside the runner: re-read it
USER_STATUS_MESSAGE = "user.status"  # {"event": {"type": "status", "id", ...}}
# A session or an account ended: {"session": session_tag(key)}, or None for all sessions.
ACCOUNT_CLOSED_MESSAGE = "account.closed"

# Events a replay log keeps per prediction: far more than one flush interval produces.
REPLAY_LENGTH = 1000
# Kept this long after the last event; long enough for a resumed runner to find the
# highest seq a dead one published.
REPLAY_TTL_SECONDS = 30 * 60


def prediction_group(prediction_id: uuid.UUID | str) -> str:
    return f"prediction.{prediction_id}"


def user_group(user_id: int | str) -> str:
    return f"user.{user_id}"


def account_group(user_id: int | str) -> str:
    """Every socket of the user's, whichever consumer: closed when the account is."""
    return f"account.{user_id}"


def session_tag(session_key: str | None) -> str:
    """Names a session in channel-layer messages without carrying its key (a secret)."""
    return hashlib.sha256((session_key or "").encode()).hexdigest()


def close_sockets(user_id: int | str, session_key: str | None = None) -> None:
    """Close the user's open sockets: those of one session (logout), or all (deactivated).
    From sync code (signal receivers); consumers also re-check the session on submit."""
    session = session_tag(session_key) if session_key else None
    try:
        async_to_sync(get_channel_layer().group_send)(
            account_group(user_id), {"type": ACCOUNT_CLOSED_MESSAGE, "session": session}
        )
    except Exception:
        # Never in the way of a logout: an open socket still cannot submit, since each
        # submit re-checks its session.
        logger.warning("could not close the sockets of user %s", user_id, exc_info=True)


# ---------------------------------------------------------------------------- publishing


async def publish(
    prediction_id: uuid.UUID | str, event: dict[str, Any], *, received_at: float | None = None
) -> None:
    """Send a numbered event to everyone watching the prediction.

    `received_at` (epoch seconds) is when upstream gave us its content: consumers time the
    relay from it (metrics.py). It travels beside the event, not in it.

    The replay log comes first: a consumer that joins after the group send is guaranteed
    to find the event there (or, if the log is unreachable, to heal from the row).
    """
    try:
        await replay_log().append(prediction_id, event)
    except Exception:
        # Not fatal: a consumer that misses this event re-reads the row instead.
        logger.warning("replay log: could not keep event %s", event.get("seq"), exc_info=True)
    message: dict[str, Any] = {"type": EVENT_MESSAGE, "event": event}
    if received_at is not None:
        message["received_at"] = received_at
    await get_channel_layer().group_send(prediction_group(prediction_id), message)


# ---------------------------------------------------------------------------- watchdog

# How long a socket on a running prediction may hear nothing before it checks the row.
WATCHDOG_SECONDS = 10.0
_watchdogs: weakref.WeakKeyDictionary[Any, asyncio.Task[None]] = weakref.WeakKeyDictionary()


def _row_seq(prediction_id: uuid.UUID) -> int | None:
    return Prediction.objects.filter(pk=prediction_id).values_list("event_seq", flat=True).first()


def watch_over(consumer: Any) -> None:
    """Keep a prediction's socket from going deaf (PredictionConsumer.connect calls it).

    A socket that hears nothing never sees a gap, so it never heals. That happens when
    Redis restarts: channels_redis keeps group memberships in Redis, so every open socket
    silently leaves its groups (measured by `make soak`: watchers waited for a `done`
    that never came). So while the prediction runs, a socket that heard nothing for
    WATCHDOG_SECONDS joins its groups again (idempotent) and, if the row has moved past
    what it has, asks itself, through its own channel, to re-read it.
    """

    async def watch() -> None:
        heard = consumer.seq
        while not consumer.finished:
            await asyncio.sleep(WATCHDOG_SECONDS)
            if consumer.seq != heard or consumer.finished:
                heard = consumer.seq
                continue
            try:
                await _rejoin(consumer)
                row_seq = await db(_row_seq)(consumer.prediction_id)
                if row_seq is not None and row_seq > consumer.seq:
                    await consumer.channel_layer.send(
                        consumer.channel_name, {"type": REFRESH_MESSAGE}
                    )
            except Exception as exc:  # Redis or the database still down: next time
                logger.info("watchdog for %s: %s", consumer.prediction_id, exc)

    _watchdogs[consumer] = asyncio.create_task(watch())


def keep_in_groups(consumer: Any) -> None:
    """The feed socket's part of the watchdog (FeedConsumer.connect calls it): it has no row
    to re-read, but after a Redis restart it must join its groups again, or the page stops
    hearing about its owner's predictions. Every WATCHDOG_SECONDS, while it is open."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(WATCHDOG_SECONDS)
            try:
                await _rejoin(consumer)
            except Exception as exc:  # Redis still down: next time
                logger.info("watchdog for the feed %s: %s", consumer.channel_name, exc)

    _watchdogs[consumer] = asyncio.create_task(watch())


async def _rejoin(consumer: Any) -> None:
    for group in consumer.joined:  # group_add is idempotent
        await consumer.channel_layer.group_add(group, consumer.channel_name)


def stop_watching(consumer: Any) -> None:
    task = _watchdogs.pop(consumer, None)
    if task is not None:
        task.cancel()


async def publish_refresh(prediction_id: uuid.UUID | str) -> None:
    """Tell watchers to re-read the row (cancel requested: show "canceling" at once)."""
    await get_channel_layer().group_send(prediction_group(prediction_id), {"type": REFRESH_MESSAGE})


def user_status_event(
    prediction_id: uuid.UUID | str, status: str, model: str, canceling: bool
) -> dict[str, Any]:
    """A line of the owner's feed (/ws/predictions/): absolute, so it is not numbered."""
    return {
        "type": STATUS,
        "id": str(prediction_id),
        "status": status,
        "model": model,
        "canceling": canceling,
    }


async def publish_user_status(owner_id: int | str, event: dict[str, Any]) -> None:
    await get_channel_layer().group_send(
        user_group(owner_id), {"type": USER_STATUS_MESSAGE, "event": event}
    )


# ---------------------------------------------------------------------------- replay log


class MemoryReplayLog:
    """Per-process log, for the in-memory channel layer (whose events never leave the
    process either)."""

    max_predictions = 10_000

    def __init__(self) -> None:
        self._logs: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

    async def append(self, prediction_id: uuid.UUID | str, event: dict[str, Any]) -> None:
        key = str(prediction_id)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = deque(maxlen=REPLAY_LENGTH)
            while len(self._logs) > self.max_predictions:
                self._logs.popitem(last=False)
        else:
            self._logs.move_to_end(key)
        log.append(event)

    async def read(self, prediction_id: uuid.UUID | str, after: int) -> list[dict[str, Any]]:
        return [e for e in self._logs.get(str(prediction_id), ()) if e["seq"] > after]

    async def last_seq(self, prediction_id: uuid.UUID | str) -> int:
        log = self._logs.get(str(prediction_id))
        return log[-1]["seq"] if log else 0


class RedisReplayLog:
    """A capped Redis list per prediction; one redis.asyncio client per event loop (a
    client's connections belong to the loop that opened them)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def _redis(self) -> Redis:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                # Blocking: a burst waits for a free connection instead of failing (the
                # default pool raises "Too many connections" at 100).
                pool = BlockingConnectionPool.from_url(self.url, max_connections=200, timeout=20)
                client = self._clients[loop] = Redis(connection_pool=pool)
            return client

    @staticmethod
    def _key(prediction_id: uuid.UUID | str) -> str:
        return f"console:events:{prediction_id}"

    async def append(self, prediction_id: uuid.UUID | str, event: dict[str, Any]) -> None:
        key = self._key(prediction_id)
        async with self._redis().pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(event, separators=(",", ":")))
            pipe.ltrim(key, -REPLAY_LENGTH, -1)
            pipe.expire(key, REPLAY_TTL_SECONDS)
            await pipe.execute()

    async def read(self, prediction_id: uuid.UUID | str, after: int) -> list[dict[str, Any]]:
        raw = await self._redis().lrange(self._key(prediction_id), 0, -1)
        events = (json.loads(item) for item in raw)
        return [e for e in events if e["seq"] > after]

    async def last_seq(self, prediction_id: uuid.UUID | str) -> int:
        raw = await self._redis().lindex(self._key(prediction_id), -1)
        return json.loads(raw)["seq"] if raw else 0


_replay_log: MemoryReplayLog | RedisReplayLog | None = None


def replay_log() -> MemoryReplayLog | RedisReplayLog:
    """The log that reaches as far as the channel layer does."""
    global _replay_log
    if _replay_log is None:
        redis_url = getattr(settings, "REDIS_URL", "")
        _replay_log = RedisReplayLog(redis_url) if redis_url else MemoryReplayLog()
    return _replay_log


# ---------------------------------------------------------------------------- watching

# A watcher with a gap the replay log could not fill re-reads the row after these many
# seconds, then every last one (the runner writes about once a second).
HEAL_DELAYS = (0.25, 0.5, 1.0, 2.0, 5.0)


class InOrder:
    """What one watcher (a websocket, an SSE stream) has of a prediction's numbered events,
    and the events it may apply next: seq k+1, k+2, … after the row it read at seq k.

    Anything older than what it has is dropped; anything newer waits in `held` until the
    gap before it is filled (from the replay log, or by re-reading the row: `restart`).
    `done` is due at once, whatever came before it: it carries the whole final prediction.
    """

    def __init__(self) -> None:
        self.seq = 0
        self.finished = False
        self.held: dict[int, dict[str, Any]] = {}

    def restart(self, seq: int, finished: bool) -> None:
        """The watcher (re-)read the row, as of `seq`."""
        self.seq = seq
        self.finished = finished
        self.held = {s: e for s, e in self.held.items() if s > seq}

    def add(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Take an event (live or logged); return the events now due, in order."""
        if self.finished or event["seq"] <= self.seq:
            return []
        if event["type"] == DONE:
            self.seq = max(self.seq, event["seq"])
            self.finished = True
            self.held.clear()
            return [event]
        self.held[event["seq"]] = event
        return self.due()

    def due(self) -> list[dict[str, Any]]:
        """The held events that follow on from `seq` (after a restart, say), in order."""
        due = []
        while not self.finished and self.seq + 1 in self.held:
            due.append(self.held.pop(self.seq + 1))
            self.seq += 1
        return due

    def add_logged(self, logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take what the replay log has after `seq`: its `done` last, after the rest."""
        done = [e for e in logged if e["type"] == DONE][:1]
        due = self.due() + [d for e in logged if e["type"] != DONE for d in self.add(e)]
        return due + [d for e in done for d in self.add(e)]

    @property
    def gap(self) -> bool:
        """Whether events wait for one that has not come."""
        return bool(self.held)

    @property
    def needed(self) -> int:
        """The seq a row must have reached to fill the gap."""
        return min(self.held) - 1


async def logged_after(prediction_id: uuid.UUID | str, after: int) -> list[dict[str, Any]] | None:
    """The replay log's events after `after`; None when the log cannot be read (then heal
    from the row)."""
    try:
        return await replay_log().read(prediction_id, after)
    except Exception:
        logger.warning("replay log unreadable; healing from the row", exc_info=True)
        return None


# ---------------------------------------------------------------------------- progress

# tqdm's default line: " 45%|████▌     | 45/100 [00:04<00:05, 9.98it/s]"
_TQDM = re.compile(r"(\d{1,3})%\|[^|\r\n]*\|\s*(\d+)/(\d+)")


def parse_progress(text: str) -> dict[str, Any] | None:
    """The last tqdm-style progress in `text`: {"percent", "current", "total"}, or None."""
    last = None
    for last in _TQDM.finditer(text):  # noqa: B007 - we want the final match
        pass
    if last is None:
        return None
    shown, current, total = (int(group) for group in last.groups())
    percent = 100.0 * current / total if total else float(shown)
    return {"percent": round(min(percent, 100.0), 2), "current": current, "total": total}


# ---------------------------------------------------------------------------- snapshots


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def serialize_file(prediction_id: uuid.UUID | str, output_file: OutputFile) -> dict[str, Any]:
    return {
        "position": output_file.position,
        "url": reverse("predictions:file", args=[prediction_id, output_file.position]),
        "content_type": output_file.content_type,
        "size": output_file.size,
        "name": output_file.file.name.rsplit("/", 1)[-1] if output_file.file else "",
    }


def serialize_prediction(
    prediction: Prediction, files: list[OutputFile] | None = None
) -> dict[str, Any]:
    """The whole prediction as the browser sees it (snapshot and `done`).

    Without `files` this queries them, so call it from sync code (or pass them in).
    """
    if files is None:
        files = list(prediction.files.all())
    progress = parse_progress(prediction.logs)
    return {
        "id": str(prediction.pk),
        "url": reverse("predictions:detail", args=[prediction.pk]),
        "model": prediction.model_ref,
        "version": prediction.version,
        "status": prediction.status,
        "canceling": prediction.is_canceling,
        "input": prediction.public_input,  # events reach members: no hidden values
        "output": prediction.output,
        "text_output": prediction.text_output,
        "logs": prediction.logs,
        "error": prediction.error,
        "metrics": prediction.metrics,
        "created_at": _iso(prediction.created_at),
        "started_at": _iso(prediction.started_at),
        "completed_at": _iso(prediction.completed_at),
        "files": [serialize_file(prediction.pk, f) for f in files],
        "progress": progress["percent"] if progress else None,
        "parent": str(prediction.parent_id) if prediction.parent_id else None,
        "source": prediction.source,
        "seq": prediction.event_seq,
    }
