"""Prometheus metrics: what the runner, consumers and webhooks count (/metrics, which reads
them, is in health.py with the other operations endpoints).

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
import time
from typing import Any

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
)

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
        if not run.resumed and not run.state.text:
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
