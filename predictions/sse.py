"""The gateway's server-sent events: a prediction's `urls.stream`, as Replicate serves it.

As on Replicate, the stream URL is a capability: unguessable, one per prediction, and
readable without the API key (api_shapes.stream_url makes it).

What a reader gets
------------------
The console's own events for the prediction, replayed from the start: the text so far in
one `output` event, then the rest as the runner publishes it; its logs one line per `logs`
event; a failed prediction ends with `error` (`{"detail": ...}`); every stream ends with
`done` (`{}`, `{"reason": "canceled"}` or `{"reason": "error"}`) and closes. Only
those four event names, since Replicate's Python client crashes on any other; comments
keep an idle connection open.

Event ids are offsets
---------------------
Every event's `id:` is `<output>:<logs>`: how much of the prediction the reader has once
it has that event — characters of the text output (or, for a model whose output is not
streamed text, items of its final output) and characters of its logs. `error` and `done`
add `:error` / `:done`. A reader that reconnects with `Last-Event-ID` is sent exactly what
lies beyond those offsets, whatever happened to the runner, the replay log or this
process meanwhile: offsets into the row's own text do not depend on event numbers (a
resumed runner skips some) or on how the text was batched.

Gap-free, as PredictionConsumer
-------------------------------
The stream joins the prediction's group before it reads the row, then applies the row's
numbered events in order (events.InOrder); gaps are filled from the replay log, else by
re-reading the row once it has been written past them. While idle it re-joins the group
(a restarted Redis forgets members) and re-reads the row if that moved on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from . import events
from .api_shapes import streamed_prediction
from .database import db
from .models import Prediction
from .responses import not_found, problem

logger = logging.getLogger(__name__)

# A comment goes out when nothing else has for this long: Replicate's Python client gives
# up after 30 s of silence. Tests lower it.
KEEPALIVE_SECONDS = 15.0
# Retried this long after the channel layer failed to deliver (Redis restarting).
RECEIVE_RETRY_SECONDS = 1.0

_LAST_EVENT_ID = re.compile(r"(\d{1,15}):(\d{1,15})(?::(error|done))?\Z")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def frame(event: str, event_id: str, data: str) -> bytes:
    """One server-sent event. Data with line breaks goes out as several `data:` lines (a
    reader joins them with "\\n": a "\\r" cannot travel in SSE, on Replicate neither)."""
    lines = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    return f"event: {event}\nid: {event_id}\n{lines}\n".encode()


@dataclass(frozen=True)
class Resume:
    """Where a reader is: offsets into the output and the logs, and the end it has seen."""

    output: int = 0
    logs: int = 0
    seen: str = ""  # "", "error" or "done"

    @classmethod
    def parse(cls, last_event_id: str) -> Resume:
        """From a `Last-Event-ID` header; anything not one of ours starts from the start."""
        match = _LAST_EVENT_ID.match(last_event_id.strip())
        if match is None:
            return cls()
        return cls(int(match[1]), int(match[2]), match[3] or "")


@dataclass(frozen=True)
class Row:
    """What a stream needs of the prediction's row, as of its `seq`."""

    seq: int
    finished: bool
    status: str
    streams_text: bool
    text: str
    logs: str
    output: Any
    error: str


def _read_row(prediction_id: uuid.UUID) -> Row | None:
    prediction = Prediction.objects.select_related("model").filter(pk=prediction_id).first()
    if prediction is None:
        return None
    model = prediction.model
    return Row(
        seq=prediction.event_seq,
        finished=not prediction.is_active,
        status=prediction.status,
        # A model gone from the catalogue: its text says how it streamed.
        streams_text=model.streams_text if model else bool(prediction.text_output),
        text=prediction.text_output,
        logs=prediction.logs,
        output=prediction.output,
        error=prediction.error,
    )


def _row_seq(prediction_id: uuid.UUID) -> int | None:
    return Prediction.objects.filter(pk=prediction_id).values_list("event_seq", flat=True).first()


def _exists(prediction_id: uuid.UUID) -> bool:
    return Prediction.objects.filter(pk=prediction_id).exists()


class Relay:
    """One reader's stream: the prediction as of `order.seq`, and how far the reader has it.

    Frames are drawn from the difference between the two, never from the events as such,
    so a re-read row, a replayed event and a reconnect all give the same bytes.
    """

    def __init__(self, resume: Resume, absolute: Callable[[str], str]) -> None:
        self.order = events.InOrder()
        self.sent_output = resume.output
        self.sent_logs = resume.logs
        self.seen_end = resume.seen
        self.absolute = absolute  # our own output file paths, made absolute
        self.row: Row | None = None
        self.text = ""
        self.logs = ""
        self.ended = False

    def restart(self, row: Row) -> bytes:
        """Start over from a row read as of `row.seq`."""
        self.order.restart(row.seq, row.finished)
        self.row, self.text, self.logs = row, row.text, row.logs
        return self.frames()

    def apply(self, due: list[dict[str, Any]]) -> bytes:
        """Apply events now due (events.InOrder), in order."""
        for event in due:
            if event["type"] == events.OUTPUT and "text" in event:
                self.text += event["text"]
            elif event["type"] == events.LOGS:
                self.logs += event["text"]
            elif event["type"] == events.DONE and self.row is not None:
                final = event["prediction"]
                self.text, self.logs = final["text_output"], final["logs"]
                self.row = Row(
                    seq=event["seq"],
                    finished=True,
                    status=final["status"],
                    streams_text=self.row.streams_text,
                    text=self.text,
                    logs=self.logs,
                    output=final["output"],
                    error=final["error"],
                )
        return self.frames()

    def _id(self) -> str:
        return f"{self.sent_output}:{self.sent_logs}"

    def frames(self) -> bytes:
        """What the reader does not have yet; at the end, the rest and `done`."""
        if self.ended or self.row is None:
            return b""
        row, out = self.row, []
        if self._streams_text and len(self.text) > self.sent_output:
            chunk = self.text[self.sent_output :]
            self.sent_output = len(self.text)
            out.append(frame("output", self._id(), chunk))
        # Whole lines, as Replicate sends logs; the last one unfinished until the end.
        while self.sent_logs < len(self.logs):
            end = self.logs.find("\n", self.sent_logs)
            if end < 0 and not self.order.finished:
                break
            line = self.logs[self.sent_logs : end if end >= 0 else len(self.logs)]
            self.sent_logs = end + 1 if end >= 0 else len(self.logs)
            out.append(frame("logs", self._id(), line))
        if self.order.finished:
            out += self._end(row)
        return b"".join(out)

    @property
    def _streams_text(self) -> bool:
        # Text deltas come only from runners of text-streaming models.
        return bool(self.row and self.row.streams_text) or bool(self.text)

    def _end(self, row: Row) -> list[bytes]:
        out = []
        if not self._streams_text:
            # Only the final output: files then point at our copies, not expiring URLs.
            items = row.output if isinstance(row.output, list) else [row.output]
            items = [item for item in items if item is not None]
            for item in items[self.sent_output :]:
                self.sent_output += 1
                out.append(frame("output", self._id(), self._output_data(item)))
        if row.status == Prediction.Status.FAILED:
            if self.seen_end not in ("error", "done"):
                detail = json.dumps({"detail": row.error or "The prediction failed."})
                out.append(frame("error", f"{self._id()}:error", detail))
            reason: dict[str, str] = {"reason": "error"}
        elif row.status == Prediction.Status.CANCELED:
            reason = {"reason": "canceled"}
        else:
            reason = {}
        out.append(frame("done", f"{self._id()}:done", json.dumps(reason)))
        self.ended = True
        return out

    def _output_data(self, item: Any) -> str:
        if isinstance(item, str):
            return self.absolute(item) if item.startswith("/") else item
        return json.dumps(item)


class Follower:
    """Keeps a Relay up to date from the channel layer, the replay log and the row."""

    def __init__(self, prediction_id: uuid.UUID, relay: Relay) -> None:
        self.prediction_id = prediction_id
        self.relay = relay
        self.heal_attempt = 0
        self.heal_at: float | None = None  # loop time of the next re-read, while a gap lasts
        self.gone = False

    async def reread(self) -> bytes:
        row = await db(_read_row)(self.prediction_id)
        if row is None:
            self.gone = True  # deleted meanwhile
            return b""
        return self.relay.restart(row) + self.relay.apply(self.relay.order.due())

    async def catch_up(self, reread: bool = False) -> bytes:
        """Fill a gap from the replay log; then, if one remains, from a newer row."""
        relay, order = self.relay, self.relay.order
        if order.finished:
            return b""
        logged = await events.logged_after(self.prediction_id, order.seq)
        if logged is None:
            logged, reread = [], True
        out = relay.apply(order.add_logged(logged))
        if reread and order.gap:
            seq = await db(_row_seq)(self.prediction_id)
            if seq is not None and seq >= order.needed:
                out += await self.reread()
        if not order.gap:
            self.heal_attempt, self.heal_at = 0, None
        elif reread or self.heal_at is None:
            delays = events.HEAL_DELAYS
            delay = delays[min(self.heal_attempt, len(delays) - 1)]
            self.heal_attempt += 1
            self.heal_at = asyncio.get_running_loop().time() + delay
        return out

    async def check(self) -> bytes:
        """While idle: re-read the row if it has moved past what we have."""
        seq = await db(_row_seq)(self.prediction_id)
        if seq is None:
            self.gone = True
            return b""
        return await self.reread() if seq > self.relay.order.seq else b""


async def _receive(layer: Any, channel: str, inbox: asyncio.Queue[dict[str, Any]]) -> None:
    while True:
        try:
            inbox.put_nowait(await layer.receive(channel))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis down: the idle check heals from the row meanwhile
            logger.info("event stream: channel layer: %s", exc)
            await asyncio.sleep(RECEIVE_RETRY_SECONDS)


async def relay_events(prediction_id: uuid.UUID, relay: Relay) -> AsyncIterator[bytes]:
    """The stream's body: replay, then follow the prediction until `done`."""
    layer = get_channel_layer()
    group = events.prediction_group(prediction_id)
    channel = await layer.new_channel()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    receiver = asyncio.create_task(_receive(layer, channel, inbox))
    loop = asyncio.get_running_loop()
    follower = Follower(prediction_id, relay)
    try:
        # Joined before the row is read: whatever is published after the read reaches us.
        await layer.group_add(group, channel)
        yield b": hi\n\n"  # the headers go out at once
        out = await follower.reread()
        out += await follower.catch_up()
        sent_at = loop.time()
        while not relay.ended and not follower.gone:
            if out:
                yield out
                sent_at = loop.time()
            out = b""
            wake_at = sent_at + KEEPALIVE_SECONDS
            if follower.heal_at is not None:
                wake_at = min(wake_at, follower.heal_at)
            message = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake_at):
                    message = await inbox.get()
            if message is not None and message.get("type") == events.EVENT_MESSAGE:
                out += relay.apply(relay.order.add(message["event"]))
                if relay.order.gap and follower.heal_at is None:
                    out += await follower.catch_up()
            now = loop.time()
            if follower.heal_at is not None and now >= follower.heal_at:
                out += await follower.catch_up(reread=True)
            if not out and now >= sent_at + KEEPALIVE_SECONDS:
                out = b": keepalive\n\n"
                await layer.group_add(group, channel)  # idempotent; see events.watch_over
                out += await follower.check()
        if out:
            yield out
    finally:
        receiver.cancel()
        with contextlib.suppress(Exception):
            await layer.group_discard(group, channel)


@csrf_exempt  # changes nothing, and no cookie is read: a wrong method gets JSON, not a page
@login_not_required
async def stream(request: HttpRequest, token: str) -> HttpResponseBase:
    """`urls.stream`: no key needed, the URL is the capability."""
    if request.method != "GET":
        refused = problem(405, "Method not allowed", "Use GET.")
        refused["Allow"] = "GET"
        return refused
    prediction_id = streamed_prediction(token)
    if prediction_id is None or not await db(_exists)(prediction_id):
        return not_found()
    resume = Resume.parse(request.headers.get("Last-Event-ID", ""))
    relay = Relay(resume, request.build_absolute_uri)
    response = StreamingHttpResponse(
        relay_events(prediction_id, relay), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer it
    return response
