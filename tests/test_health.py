"""/healthz and /readyz: JSON, open without a login, 503 naming the service that is down,
and nothing about addresses or secrets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from django.core.cache import cache
from django.test import AsyncClient, Client

from predictions import health

if TYPE_CHECKING:
    from tests.console_server import ConsoleServer

pytestmark = pytest.mark.django_db

# Nothing listens here: a Redis that is down.
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def fresh_upstream_answer() -> None:
    cache.delete(health.UPSTREAM_CACHE_KEY)


def test_healthz_answers_without_a_login_or_any_service(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ok_when_everything_answers() -> None:
    response = await AsyncClient().get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == body["checks"]["channel_layer"] == "ok"
    assert body["checks"]["upstream"] == "not configured"  # no default token yet


async def test_readyz_is_503_naming_redis_when_it_is_down(settings: Any) -> None:
    settings.REDIS_URL = DEAD_REDIS

    response = await AsyncClient().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"].startswith("failed")
    assert body["checks"]["database"] == "ok"
    assert "127.0.0.1" not in json.dumps(body)


async def test_readyz_is_503_until_a_celery_worker_is_seen(settings: Any, redis_url: str) -> None:
    # A Redis database of its own: workers other tests kill leave their key for WORKER_TTL.
    settings.REDIS_URL = redis_url.rsplit("/", 1)[0] + "/13"
    settings.PREDICTION_EXECUTOR = "celery"
    if await asyncio.to_thread(health.workers_seen):
        pytest.skip("a worker is announcing itself on Redis database 13")

    down = await AsyncClient().get("/readyz")
    await asyncio.to_thread(health.worker_alive, "test-worker@readyz")
    try:
        up = await AsyncClient().get("/readyz")
    finally:
        await asyncio.to_thread(health.worker_gone, "test-worker@readyz")

    assert down.status_code == 503
    assert down.json()["checks"]["celery_workers"] == "failed (RuntimeError)"
    assert up.status_code == 200
    assert up.json()["checks"]["celery_workers"] == "ok"


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_a_console_whose_database_is_down_is_alive_but_not_ready(
    console_servers: Callable[..., ConsoleServer],
) -> None:
    server = console_servers(DATABASE_URL="postgres://console@127.0.0.1:1/nowhere")

    alive = httpx.get(f"{server.url}/healthz", timeout=10)
    ready = httpx.get(f"{server.url}/readyz", timeout=10)

    assert alive.status_code == 200
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"] != "ok"
    assert checks["channel_layer"] == "ok"
    assert "nowhere" not in ready.text and "console@" not in ready.text
