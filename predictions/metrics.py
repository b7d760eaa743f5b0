"""Prometheus metrics: what the runner, consumers and webhooks count, and /metrics' view of it.

Several processes (N daphne, M Celery workers) each count their own share, so this uses
prometheus_client's **multiprocess mode**: every process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (settings point it at var/metrics) and a scrape of any web
process sums the files of all of them. Counters and histograms of processes that died
keep counting (a restart must not make a total go down); the websocket gauge counts live
processes only. What the database or Redis knows (active predictions, queue depth,
workers) is read at scrape time instead of counted.

Callers make one-line calls (`metrics.finished(...)`); nothing here can raise into them.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .database import db

PREDICTIONS = Counter(
    "console_predictions_total",
    "Predictions that reached a final status, by catalogue model",
    ["model", "status"],
)
RELAY_SECONDS = Histogram(
    "console_relay_latency_seconds",
    "From an upstream event reaching the runner to its websocket send to a watcher",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FIRST_TOKEN_SECONDS = Histogram(
    "console_time_to_first_token_seconds",
    "From a prediction's submit to its first streamed output",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
UPSTREAM_ERRORS = Counter(
    "console_upstream_errors_total", "Failed calls to Replicate, by kind", ["kind"]
)
WEBHOOK_LAG_SECONDS = Histogram(
    "console_webhook_lag_seconds",
    "From Replicate signing a webhook to the console accepting it",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ARCHIVE_FAILURES = Counter(
    "console_archive_failures_total", "Output files that could not be copied into storage"
)
WEBSOCKETS = Gauge(
    "console_websocket_connections",
    "Open websocket connections",
    multiprocess_mode="livesum",
)


def finished(model: str, status: str) -> None:
    PREDICTIONS.labels(model=model or "-", status=status).inc()


def upstream_error(kind: str) -> None:
    UPSTREAM_ERRORS.labels(kind=kind).inc()


def archive_failed() -> None:
    ARCHIVE_FAILURES.inc()


def received(run: Any, *, output: bool) -> None:
    """An upstream event reached `run`: remember when the oldest unsent one did, and time
    the first output of a prediction the runner saw from its start."""
    now = time.time()
    if getattr(run, "metrics_received_at", None) is None:
        run.metrics_received_at = now
    if output and not getattr(run, "metrics_first_token", False):
        run.metrics_first_token = True
        if not run.resumed and not run.text:
            FIRST_TOKEN_SECONDS.observe(max(0.0, now - run.p.created_at.timestamp()))


def take_received(run: Any) -> float | None:
    """When the oldest event of the batch being published arrived (then forget it)."""
    stamp = getattr(run, "metrics_received_at", None)
    run.metrics_received_at = None
    return stamp


def relayed(message: dict[str, Any]) -> None:
    """A consumer sent an event on: observe the time since upstream gave it to us."""
    stamp = message.get("received_at")
    if isinstance(stamp, int | float):
        RELAY_SECONDS.observe(max(0.0, time.time() - stamp))


def webhook_received(timestamp: str | None) -> None:
    with contextlib.suppress(TypeError, ValueError):
        WEBHOOK_LAG_SECONDS.observe(max(0.0, time.time() - int(timestamp or "")))


def count_websockets(app: Any) -> Any:
    """ASGI wrapper (project/asgi.py): count each websocket for as long as it runs."""

    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        WEBSOCKETS.inc()
        try:
            await app(scope, receive, send)
        finally:
            WEBSOCKETS.dec()

    return counted


# ---------------------------------------------------------------------------- scraping

_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def _forget_dead_processes(directory: Path) -> None:
    """A killed process (kill -9) never says goodbye: drop its live gauges, so open
    websockets are counted for living processes only. Same machine, same pids."""
    for entry in directory.glob("gauge_live*.db"):
        match = _LIVE_FILE.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass  # alive, someone else's


class ServiceCollector(Collector):
    """Numbers that the database and Redis hold, read once per scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from . import health

        yield GaugeMetricFamily(
            "console_active_predictions",
            "Predictions not yet in a final status",
            value=health.active_predictions(),
        )
        depth, workers = health.queue_depth(), health.workers_seen()
        if depth is not None:
            yield GaugeMetricFamily(
                "console_queue_depth", "Prediction tasks waiting in the Celery queue", depth
            )
        if workers is not None:
            yield GaugeMetricFamily(
                "console_celery_workers", "Celery workers seen in the last 30 seconds", workers
            )


def exposition() -> bytes:
    """The text /metrics answers with: every process's samples, plus the services'."""
    directory = Path(settings.METRICS_DIR)
    _forget_dead_processes(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    registry.register(ServiceCollector())
    return generate_latest(registry)


def _bearer_ok(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    return bool(expected) and constant_time_compare(given, f"Bearer {expected}")


@never_cache
@require_GET
@login_not_required  # a scraper has no session: it sends METRICS_TOKEN instead
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for staff or a bearer of METRICS_TOKEN."""
    if not _bearer_ok(request):
        user = await request.auser()
        if not user.is_authenticated:
            response = JsonResponse(
                {"error": "Log in as staff, or send Authorization: Bearer METRICS_TOKEN."},
                status=401,
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        if not user.is_staff:
            return JsonResponse({"error": "Metrics are for staff."}, status=403)
    # Reads files, the database and Redis: in a database thread, off the event loop.
    body = await db(exposition)()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
