"""Websocket consumers: one prediction's live events, and a user's feed.

PredictionConsumer (/ws/predictions/<uuid>/) guarantees that what a browser assembles is
exactly what the runner has, however late it joins or whatever the channel layer drops:

1. It joins the group *before* reading the row, then sends the row as a snapshot (seq k).
   Channels hands a consumer its messages one at a time, so events that arrive during
   the read wait their turn; none is lost.
2. It only ever forwards events in order: seq k+1, k+2, … Anything older is dropped;
   anything newer is held back until the gap before it is filled.
3. A gap is filled from the replay log (events.py). The runner appends each event to the
   log before sending it to the group, so an event this consumer did not receive live
   was published before the consumer joined (or was dropped by the layer) — and in both
   cases it is already in the log.
4. If the log cannot fill it (expired, or a resumed runner skipped a number on purpose),
   the consumer re-reads the row once it has been written past the gap; the runner
   writes about once a second. Retries back off; `done` carries the whole final
   prediction and ends any wait.

Browser rules that follow: replace everything on `snapshot` and on `done`; apply other
events in seq order; send `{"type": "resync", "after": <last seq>}` if in doubt.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from importlib import import_module
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from django.urls import reverse

from . import events, executors, metrics, untrusted
from .database import db, session_user
from .forms import PredictionForm
from .models import NAME_PATTERN, CatalogModel, Prediction
from .presenters import LiveView, badge

logger = logging.getLogger(__name__)

# Close code for "not yours" (the browser stops reconnecting).
FORBIDDEN = 4403
# Close code for a path no consumer serves.
NOT_FOUND = 4404
HEAL_DELAYS = events.HEAL_DELAYS

# Referenced until done, so the loop cannot garbage-collect them midway.
_background: set[asyncio.Future[None]] = set()


def _visible(user: Any, prediction_id: uuid.UUID) -> bool:
    return Prediction.objects.visible_to(user).filter(pk=prediction_id).exists()


def _snapshot(prediction_id: uuid.UUID) -> tuple[dict[str, Any], LiveView] | None:
    """The `snapshot` message for the row as it is now, and the view that moves on from it."""
    prediction = Prediction.objects.filter(pk=prediction_id).first()
    if prediction is None:
        return None
    files = list(prediction.files.order_by("position"))
    view = LiveView(prediction, files)
    message = {
        "type": "snapshot",
        "seq": prediction.event_seq,
        "finished": not prediction.is_active,
        "prediction": events.serialize_prediction(prediction, files),
        "fragments": view.render(),
    }
    return message, view


def _visible_prediction(user: Any, prediction_id: object) -> Prediction | None:
    try:
        pk = uuid.UUID(str(prediction_id))
    except ValueError:
        return None
    return Prediction.objects.visible_to(user).filter(pk=pk).first()


def _runnable(user: Any, owner: str, name: str) -> CatalogModel | None:
    return CatalogModel.objects.runnable_by(user).filter(owner=owner, name=name).first()


class JsonMessagesConsumer(AsyncJsonWebsocketConsumer):
    """The boundary of both consumers.

    Only a JSON value made of real text reaches receive_json: binary or empty frames,
    text that is not JSON (or absurdly nested) and lone surrogates get an `error`
    message, and the connection stays open.

    A socket authenticates once, at its handshake, so it also follows the account it
    opened with: logging out that session or deactivating the user closes it (see
    signals.py), and `session_is_current()` re-checks before anything billed happens.
    """

    joined: tuple[str, ...] = ()
    session: str = ""

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined = (*self.joined, group)

    async def disconnect(self, code: int) -> None:
        events.stop_watching(self)
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def follow_account(self, user: Any) -> None:
        self.session = events.session_tag(self.scope["session"].session_key)
        await self.join(events.account_group(user.pk))

    async def account_closed(self, message: dict[str, Any]) -> None:
        if message["session"] in (None, self.session):
            await self.end_session()

    async def session_is_current(self, user: Any) -> bool:
        """Whether the session this socket opened with still logs `user` in now: not
        logged out, expired or cleared; the user still active, the password unchanged."""
        session_store = import_module(settings.SESSION_ENGINE).SessionStore
        fresh = session_store(session_key=self.scope["session"].session_key)
        current = await db(session_user)(fresh)
        return current.is_authenticated and current.pk == user.pk

    async def end_session(self) -> None:
        await self.send_error("Your session has ended: log in again.")
        await self.close(code=FORBIDDEN)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not text_data:
            await self.send_error("Send JSON text messages.")
            return
        try:
            content = await self.decode_json(text_data)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            await self.send_error("Not JSON.")
            return
        # A submit's input gets field errors from the schema form; the rest of any message
        # is checked here (see untrusted.py: NUL, lone surrogates, absurd nesting).
        envelope = content
        if isinstance(content, dict):
            envelope = {key: value for key, value in content.items() if key != "input"}
        reason = untrusted.problem(envelope)
        if reason:
            await self.send_error(f"This message cannot be used: {reason}.")
            return
        await self.receive_json(content)

    async def send_error(
        self, message: str, errors: dict[str, list[str]] | None = None, **details: Any
    ) -> None:
        reply: dict[str, Any] = {"type": "error", "message": message, **details}
        if errors is not None:
            reply["errors"] = errors
        await self.send_json(reply)


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any websocket path no route matches: closed with 4404, no traceback, no login."""

    async def connect(self) -> None:
        # Accept first so the client sees our close code, not a failed handshake.
        await self.accept()
        await self.close(code=NOT_FOUND)


class PredictionConsumer(JsonMessagesConsumer):
    """Snapshot, then the live events of one prediction, gap-free and in order."""

    view: LiveView | None = None  # the page as of `seq`: each event says what it changed

    @property
    def seq(self) -> int:
        return self.order.seq

    @property
    def finished(self) -> bool:
        return self.order.finished

    async def connect(self) -> None:
        self.prediction_id: uuid.UUID = self.scope["url_route"]["kwargs"]["pk"]
        self.order = events.InOrder()
        self.heal_attempt = 0
        self.heal_scheduled = False
        user = self.scope.get("user")
        # Accept first so the browser sees our close code, not a failed handshake.
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=FORBIDDEN)
            return
        if not await db(_visible)(user, self.prediction_id):
            await self.close(code=FORBIDDEN)
            return
        await self.follow_account(user)
        await self.join(events.prediction_group(self.prediction_id))
        await self.send_snapshot()
        await self.catch_up()
        events.watch_over(self)  # re-joins and re-reads if the socket goes quiet

    # ------------------------------------------------------------------ browser → server

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "resync":
            await self.send_error("Unknown message type.")
            return
        after = content.get("after")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            await self.send_error("resync needs 'after': the last seq you have.")
            return
        # A fresh snapshot is always correct, whatever the browser missed.
        await self.send_snapshot()
        await self.catch_up()

    # ------------------------------------------------------------------ channel layer

    async def prediction_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if self.finished or event["seq"] <= self.seq:
            return
        metrics.relayed(message)  # about to go out on this socket
        await self.deliver(self.order.add(event))
        if self.order.gap and not self.heal_scheduled:
            await self.catch_up()

    async def prediction_refresh(self, message: dict[str, Any]) -> None:
        """The row changed outside the runner (a cancel request): re-read it."""
        await self.send_snapshot()
        await self.catch_up()

    async def prediction_heal(self, message: dict[str, Any]) -> None:
        self.heal_scheduled = False
        if not self.order.gap or self.finished:
            return
        await self.catch_up(reread=True)

    # ------------------------------------------------------------------ ordering

    async def send_snapshot(self, snapshot: tuple[dict[str, Any], LiveView] | None = None) -> None:
        """Send the row as it is now (or as just read): the browser starts over from it."""
        if snapshot is None:
            snapshot = await db(_snapshot)(self.prediction_id)
        if snapshot is None:
            await self.close(code=FORBIDDEN)  # deleted meanwhile
            return
        message, self.view = snapshot
        self.order.restart(message["seq"], message["finished"])
        await self.send_json(message)

    async def deliver(self, due: list[dict[str, Any]]) -> None:
        """Send the events now due, each with the page fragments it changed (drawn by the
        server)."""
        for event in due:
            fragments = self.view.apply(event) if self.view else {}
            await self.send_json({**event, "fragments": fragments} if fragments else event)

    async def catch_up(self, reread: bool = False) -> None:
        """Fill gaps from the replay log; then, if one remains, from a newer row."""
        if self.finished:
            return
        logged = await events.logged_after(self.prediction_id, self.seq)
        if logged is None:
            logged, reread = [], True
        await self.deliver(self.order.add_logged(logged))
        if not self.order.gap:  # (or finished: `done` ends every gap)
            self.heal_attempt = 0
            return
        if reread:
            needed = self.order.needed
            snapshot = await db(_snapshot)(self.prediction_id)
            if snapshot is not None and snapshot[0]["seq"] >= needed:
                await self.send_snapshot(snapshot)
                await self.deliver(self.order.due())
                if not self.order.gap:
                    self.heal_attempt = 0
                    return
        self.schedule_heal()

    def schedule_heal(self) -> None:
        """Come back later through our own channel, so messages stay one at a time."""
        if self.heal_scheduled:
            return
        self.heal_scheduled = True
        delay = HEAL_DELAYS[min(self.heal_attempt, len(HEAL_DELAYS) - 1)]
        self.heal_attempt += 1
        asyncio.get_running_loop().call_later(delay, self._request_heal)

    def _request_heal(self) -> None:
        message = {"type": "prediction.heal"}
        task = asyncio.ensure_future(self.channel_layer.send(self.channel_name, message))
        _background.add(task)
        task.add_done_callback(_background.discard)


class FeedConsumer(JsonMessagesConsumer):
    """/ws/predictions/: status changes of the user's predictions, and `submit`."""

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=FORBIDDEN)
            return
        await self.follow_account(self.user)
        await self.join(events.user_group(self.user.pk))
        events.keep_in_groups(self)  # re-joins them after a Redis restart

    async def user_status(self, message: dict[str, Any]) -> None:
        event = message["event"]
        terminal = event["status"] in Prediction.TERMINAL_STATUSES
        fragments = {"badge": badge(event["status"], event["canceling"] and not terminal)}
        await self.send_json({**event, "terminal": terminal, "fragments": fragments})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "submit":
            await self.send_error("Unknown message type.")
            return
        await self.submit(content)

    async def submit(self, content: dict[str, Any]) -> None:
        if not await self.session_is_current(self.user):
            await self.end_session()
            return
        ref, data = content.get("model"), content.get("input", {})
        owner, _, name = ref.partition("/") if isinstance(ref, str) else ("", "", "")
        # Checked before any query (a NUL in a lookup is an error on PostgreSQL).
        if not (NAME_PATTERN.match(owner) and NAME_PATTERN.match(name)):
            await self.error("'model' must be \"owner/name\".", {"model": ["Unknown model."]})
            return
        if not isinstance(data, dict):
            await self.error("'input' must be an object.", {"input": ["Must be an object."]})
            return
        model = await db(_runnable)(self.user, owner, name)
        if model is None:
            await self.error("unknown model", {"model": ["Unknown model."]})
            return
        parent = None
        if content.get("parent") is not None:
            # A re-run's lineage, only to a prediction this user may see.
            parent = await db(_visible_prediction)(self.user, content["parent"])
            if parent is None:
                await self.error("Unknown parent prediction.", {"parent": ["Unknown prediction."]})
                return
        # A re-run of this model runs its parent's version (against that version's schema).
        version = model.run_version
        if parent is not None and parent.model_id == model.pk and parent.version:
            version = parent.version
        input_schema = (await db(model.schema_for)(version))[0]
        form = PredictionForm(model, input_schema, data)
        if not form.is_valid():
            await self.error("The input is not valid.", form.input_errors())
            return
        refused = await form.acheck_throttle(self.user)
        if refused is not None:
            await self.send_error(refused.message, {}, retry_after=refused.retry_after)
            return
        prediction = await executors.start_prediction(
            owner=self.user,
            model=model,
            input=form.cleaned_input,
            source=Prediction.Source.WEBSOCKET,
            parent=parent,
            version=version,
        )
        await self.send_json(
            {
                "type": "submitted",
                "id": str(prediction.pk),
                "url": reverse("predictions:detail", args=[prediction.pk]),
            }
        )

    async def error(self, message: str, errors: dict[str, list[str]]) -> None:
        await self.send_error(message, errors)
