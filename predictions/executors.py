"""Where runners run: PREDICTION_EXECUTOR = "inline" (default) or "celery".

`start_prediction()` is the way in for views and consumers; `submit()` hands an existing
prediction to the executor (webhooks, reconcilers). Either may be called any number of
times for the same prediction: the runner's claim makes every extra call a no-op.

inline
    Each prediction is an asyncio task on the server's event loop, kept in
    `InlineExecutor.tasks` so shutdown can hand them back in order. A reconciler task on
    the same loop resumes predictions whose runner went quiet (a previous server process
    died, or another one in a multi-process deployment).

    Start-up hook: Channels' ProtocolTypeRouter has no lifespan and daphne never sends
    one, so `ServerLifecycle` (wrapped around the ASGI application in project/asgi.py)
    registers with the thing that does run exactly once per daphne process on its event
    loop: the Twisted reactor daphne drives asyncio with. `reactor.callLater(0, start)`
    fires on the loop as soon as the server runs; a "before shutdown" trigger returns a
    Deferred that waits while runners save their state and hand their rows back. Servers
    that speak ASGI lifespan (uvicorn, hypercorn) get the same through lifespan events.
    (Not "on the first request": a server nobody visits after a restart must still resume
    its predictions, and tests driving the ASGI app must not grow a background reconciler.)

celery
    `tasks.run_prediction(id)` runs the runner on its worker process's one event loop;
    beat runs `tasks.reconcile_predictions` to resume stale predictions.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from twisted.internet.defer import Deferred

from . import deliveries, runner, tasks
from .database import db
from .models import CatalogModel, Prediction, WebhookSubscription

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# How long shutdown waits for runners to save their state and release their rows.
SHUTDOWN_SECONDS = 10.0


async def start_prediction(
    *,
    owner: User,
    model: CatalogModel,
    input: dict[str, Any],
    source: str,
    parent: Prediction | None = None,
    version: str | None = None,
    webhook: WebhookSubscription | None = None,
) -> Prediction:
    """Create the row (queued) for an already validated input and hand it to the executor.

    `version` defaults to the model's run version (pinned, else the latest known for a
    community model; empty for an unpinned official model, which runs by name and gets its
    version from Replicate's answer). `webhook` (unsaved) is saved with the row, in one
    transaction: a prediction never exists without the webhooks it was created with.

    The awaited create has committed (async code runs in autocommit) before the Celery
    message goes out, so a worker never looks for a row that is not there yet.
    """
    prediction = await db(_create_row)(
        {
            "owner": owner,
            "model": model,
            "model_ref": model.ref,
            "version": model.run_version if version is None else version,
            "input": input,
            "hidden_inputs": list(model.hidden_inputs or []),
            "source": source,
            "parent": parent,
        },
        webhook,
    )
    await submit(prediction.pk)
    return prediction


def _create_row(fields: dict[str, Any], webhook: WebhookSubscription | None) -> Prediction:
    with transaction.atomic():
        prediction = Prediction.objects.create(**fields)
        if webhook is not None:
            webhook.prediction = prediction
            webhook.save()
    return prediction


async def submit(prediction_id: uuid.UUID | str) -> None:
    """Make sure some runner follows this prediction (no-op if one already does)."""
    if settings.PREDICTION_EXECUTOR == "celery":
        try:
            # Publishing talks to Redis synchronously: keep it off the event loop.
            await sync_to_async(tasks.run_prediction.delay, thread_sensitive=False)(
                str(prediction_id)
            )
        except Exception:
            # The row stays queued; the reconciler enqueues it once the broker is back.
            logger.exception("could not enqueue prediction %s", prediction_id)
    else:
        inline.submit(uuid.UUID(str(prediction_id)))


class InlineExecutor:
    """Runs predictions as tasks on one event loop (the daphne process's)."""

    def __init__(self) -> None:
        self.tasks: dict[uuid.UUID, asyncio.Task[str]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._reconciler: asyncio.Task[None] | None = None

    def submit(self, prediction_id: uuid.UUID) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop is not None and running is not self.loop:
            # Called from another thread or loop: runners live on the server's loop.
            self.loop.call_soon_threadsafe(self._spawn, prediction_id)
        elif running is not None:
            self._spawn(prediction_id)
        else:
            logger.warning("no event loop to run %s on; the reconciler will", prediction_id)

    def _spawn(self, prediction_id: uuid.UUID) -> None:
        if prediction_id in self.tasks:
            return
        task = asyncio.get_running_loop().create_task(
            runner.run_prediction(prediction_id), name=f"prediction-{prediction_id}"
        )
        self.tasks[prediction_id] = task

        def forget(done: asyncio.Task[str]) -> None:
            if self.tasks.get(prediction_id) is done:
                del self.tasks[prediction_id]
            if not done.cancelled() and done.exception() is not None:
                logger.error("runner for %s crashed", prediction_id, exc_info=done.exception())

        task.add_done_callback(forget)

    def start(self) -> None:
        """Begin resuming predictions on the running loop; once per loop."""
        loop = asyncio.get_running_loop()
        if self.loop is loop:
            return
        self.loop = loop
        self._reconciler = loop.create_task(self._reconcile_forever(), name="inline-reconciler")
        logger.info("inline executor started")

    async def _reconcile_forever(self) -> None:
        lease = runner.lease_seconds()
        while True:
            try:
                for prediction_id in await db(Prediction.objects.claimable)(lease):
                    self._spawn(prediction_id)
                await deliveries.deliver_due()  # `completed` webhooks still owed
                await db(tasks.forget_expired_uploads)()
            except Exception:
                logger.exception("inline reconciler failed; trying again")
            await asyncio.sleep(max(1.0, lease / 3))

    async def stop(self) -> None:
        """Cancel runners (each saves its state and hands its row back) and wait for them."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            self._reconciler = None
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_SECONDS)
        self.loop = None
        logger.info("inline executor stopped (%d runners handed back)", len(tasks))


inline = InlineExecutor()


def _uses_inline() -> bool:
    return settings.PREDICTION_EXECUTOR == "inline"


def server_started() -> None:
    if _uses_inline():
        inline.start()


async def server_stopping() -> None:
    if _uses_inline():
        await inline.stop()


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ServerLifecycle:
    """ASGI wrapper: start the inline executor once per server process, stop it in order."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self._hook_daphne()

    @staticmethod
    def _hook_daphne() -> None:
        reactor = sys.modules.get("twisted.internet.reactor")
        if reactor is None or type(reactor).__name__ != "AsyncioSelectorReactor":
            return  # not under daphne: lifespan events start and stop it

        def stopping() -> Any:
            return Deferred.fromFuture(asyncio.ensure_future(server_stopping()))

        # callLater runs inside the asyncio loop once the reactor runs it; a plain
        # callWhenRunning would fire before the loop is running.
        reactor.callLater(0, server_started)
        reactor.addSystemEventTrigger("before", "shutdown", stopping)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                server_started()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await server_stopping()
                await send({"type": "lifespan.shutdown.complete"})
                return
