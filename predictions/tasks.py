"""Celery tasks: thin wrappers around the runner, and the reconciler.

Celery runs no coroutines, and `asyncio.run()` per task breaks anything bound to a loop
(the replicate client's connection pool: "Event loop is closed"). So each worker process
keeps one event loop running in a thread (`WorkerLoop`); a task hands its coroutine to it
and waits. Run workers with the threads pool, e.g. `celery -A project worker --pool threads
--concurrency 200`: each thread just waits on a future while the one loop does the I/O, so
one process follows hundreds of predictions and the concurrency setting stays the
back-pressure (a worker takes no more predictions than it has threads).

Time limits: Celery's soft/hard time limits do nothing under the threads pool (a thread
cannot be interrupted), so none are set. The one limit is each catalogue model's
deadline, which the runner enforces on its loop: it cancels the prediction upstream and
fails the row with a sentence saying so. A pool that honours time limits (prefork) would
need one process per prediction, which is what the shared loop exists to avoid.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_ready, worker_shutting_down
from django.utils import timezone

from . import deliveries, health, runner
from .models import Prediction, Upload, WebhookEvent

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Webhook ids are kept this long to recognise redeliveries (Replicate retries for minutes).
WEBHOOK_MEMORY = timedelta(days=1)


class WorkerLoop:
    """This process's event loop, running forever in a daemon thread; made on first use
    (after a fork, a child makes its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._running: set[concurrent.futures.Future[Any]] = set()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="prediction-loop", daemon=True
                )
                thread.start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result in the calling thread."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop())
        self._running.add(future)
        try:
            return future.result()
        finally:
            self._running.discard(future)

    def cancel_all(self, timeout: float = 10.0) -> None:
        """Cancel every coroutine still running (runners save and hand back their rows)."""
        running = list(self._running)
        for future in running:
            future.cancel()
        if running:
            concurrent.futures.wait(running, timeout=timeout)


worker_loop = WorkerLoop()


@shared_task(name="predictions.run_prediction", acks_late=True, ignore_result=True)
def run_prediction(prediction_id: str) -> str:
    """Follow one prediction to its end (or resume it). Safe to run twice: the runner's
    claim lets one run and turns the other into "busy"."""
    try:
        return worker_loop.run(runner.run_prediction(prediction_id))
    except concurrent.futures.CancelledError:
        # This worker is shutting down and the runner handed the row back: queue it again
        # so another worker picks it up at once.
        run_prediction.delay(prediction_id)
        return "handed back"


@shared_task(name="predictions.reconcile_predictions", ignore_result=True)
def reconcile_predictions() -> int:
    """Resume every active prediction whose runner went quiet (a worker died, a message
    was lost); deliver the `completed` webhooks still owed; forget old webhook ids. Run it
    periodically (celery beat)."""
    stale = Prediction.objects.claimable(runner.lease_seconds())
    for prediction_id in stale:
        run_prediction.delay(str(prediction_id))
    worker_loop.run(deliveries.deliver_due())
    WebhookEvent.objects.filter(received_at__lt=timezone.now() - WEBHOOK_MEMORY).delete()
    forget_expired_uploads()
    if stale:
        logger.info("reconciler resumed %d predictions", len(stale))
    return len(stale)


def forget_expired_uploads() -> int:
    """Delete the gateway's uploaded files past their expiry (their storage goes too), a
    batch at a time: the reconcilers call this."""
    expired = list(Upload.objects.expired().values_list("pk", flat=True)[:500])
    # One by one, so each file's post_delete frees its storage.
    for upload in Upload.objects.filter(pk__in=expired):
        upload.delete()
    return len(expired)


@worker_ready.connect
def _reconcile_at_start(**kwargs: Any) -> None:
    # Rows released by a worker that shut down cleanly are claimable right away.
    reconcile_predictions.delay()


_alive = threading.Event()


@worker_ready.connect
def _announce(sender: Any = None, **kwargs: Any) -> None:
    """Say "alive" in Redis until shutdown, so /readyz and /metrics see this worker."""
    hostname = getattr(sender, "hostname", None) or f"worker-{os.getpid()}"

    def beat() -> None:
        while not _alive.is_set():
            try:
                health.worker_alive(hostname)
            except Exception as exc:  # Redis down: say so, try again next beat
                logger.warning("could not announce worker %s: %s", hostname, exc)
            _alive.wait(health.WORKER_TTL / 3)
        with contextlib.suppress(Exception):
            health.worker_gone(hostname)

    threading.Thread(target=beat, name="worker-alive", daemon=True).start()


@worker_shutting_down.connect
@worker_process_shutdown.connect
def _hand_back(**kwargs: Any) -> None:
    _alive.set()
    worker_loop.cancel_all()
