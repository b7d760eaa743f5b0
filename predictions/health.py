"""/healthz, /readyz and /metrics: for load balancers, supervisors and monitoring. The first
two are open without a login; they say which dependency is down, never anything about its
address or secrets. /metrics is for staff or a bearer of METRICS_TOKEN.

- /healthz: the process is up and its event loop answers. No I/O, so a slow database
  never gets a healthy process restarted.
- /readyz: this process can do its work: the database, Redis, the channel layer, and
  (PREDICTION_EXECUTOR=celery) a Celery worker seen in the last WORKER_TTL seconds. The
  default token's upstream is checked too, at most every READYZ_UPSTREAM_CACHE_SECONDS,
  and reported; it does not make the process unready: Replicate being down is the same
  for every process, and taking them all out of the load balancer would only hide the
  console's own pages (history, results) as well.

Workers announce themselves with a Redis key that expires (`worker_alive`, from
tasks.py), so "seen recently" holds across machines and needs no Celery broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import upstream
from .database import db
from .models import ApiToken, Prediction

logger = logging.getLogger(__name__)

# Each check gives up after this long: a probe must answer even when a service hangs.
CHECK_TIMEOUT = 3.0
WORKER_KEY = "console:worker:"
WORKER_TTL = 30
UPSTREAM_CACHE_KEY = "console:readyz:upstream"


# ---------------------------------------------------------------------------- checks


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def database() -> None:
    await db(_select_one)()


async def redis_ping() -> None:
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def channel_layer() -> None:
    """A message through the layer to ourselves: what every live update relies on."""
    layer = get_channel_layer()
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    await layer.receive(channel)


async def celery_workers() -> None:
    seen = await asyncio.to_thread(workers_seen)
    if not seen:
        raise RuntimeError(f"no Celery worker seen in the last {WORKER_TTL} s")


def _default_credentials() -> upstream.Credentials | None:
    token = ApiToken.objects.default()
    return None if token is None else upstream.credentials_for(token)


async def default_upstream() -> str:
    """'ok', 'not configured' or why not; the answer is cached, so probes cost nothing."""
    try:
        cached = await cache.aget(UPSTREAM_CACHE_KEY)
        if cached is not None:
            return cached
        creds = await db(_default_credentials)()
        if creds is None:
            result = "not configured"
        else:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await upstream.get_account(creds)
            result = "ok"
    except upstream.UpstreamError as exc:
        result = f"unreachable ({exc.kind})"
    except TimeoutError:
        result = "unreachable (timeout)"
    except Exception as exc:  # the database or cache failing: reported by their own checks
        return f"unknown ({type(exc).__name__})"
    with contextlib.suppress(Exception):
        await cache.aset(UPSTREAM_CACHE_KEY, result, settings.READYZ_UPSTREAM_CACHE_SECONDS)
    return result


async def _outcome(check: Callable[[], Awaitable[Any]]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check()
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        # The kind of failure only: messages can carry host names or credentials.
        logger.warning("readiness check %s failed: %s", check.__name__, type(exc).__name__)
        return f"failed ({type(exc).__name__})"
    return "ok"


# ---------------------------------------------------------------------------- views


@never_cache
@require_GET
@login_not_required
async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
@login_not_required
async def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "database": database,
        "channel_layer": channel_layer,
    }
    if settings.REDIS_URL:
        checks["redis"] = redis_ping
    if settings.PREDICTION_EXECUTOR == "celery":
        checks["celery_workers"] = celery_workers
    started = time.monotonic()
    names = list(checks)
    outcomes = await asyncio.gather(*(_outcome(checks[name]) for name in names))
    results = dict(zip(names, outcomes, strict=True))
    ready = all(outcome == "ok" for outcome in outcomes)
    # Needs the database (which token is the default): only asked when it answers.
    results["upstream"] = await default_upstream() if results["database"] == "ok" else "unknown"
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": results,
        "seconds": round(time.monotonic() - started, 3),
    }
    return JsonResponse(body, status=200 if ready else 503)


# ---------------------------------------------------------------------------- numbers


def _redis() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT)


def worker_alive(hostname: str) -> None:
    """A worker says it is alive (every WORKER_TTL / 3 s, from tasks.py)."""
    client = _redis()
    if client is not None:
        with client:
            client.set(WORKER_KEY + hostname, "1", ex=WORKER_TTL)


def worker_gone(hostname: str) -> None:
    client = _redis()
    if client is not None:
        with client:
            client.delete(WORKER_KEY + hostname)


def workers_seen() -> int | None:
    """Celery workers alive in the last WORKER_TTL seconds (None without Redis)."""
    client = _redis()
    if client is None:
        return None
    with client:
        return sum(1 for _ in client.scan_iter(match=WORKER_KEY + "*", count=1000))


def queue_depth() -> int | None:
    """Tasks waiting in the Celery queue (None unless the executor is celery)."""
    if settings.PREDICTION_EXECUTOR != "celery":
        return None
    client = _redis()
    if client is None:
        return None
    with client:
        return int(client.llen(getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")))


def active_predictions() -> int:
    return Prediction.objects.exclude(status__in=Prediction.TERMINAL_STATUSES).count()


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
        yield GaugeMetricFamily(
            "console_active_predictions",
            "Predictions not yet in a final status",
            value=active_predictions(),
        )
        depth, workers = queue_depth(), workers_seen()
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
