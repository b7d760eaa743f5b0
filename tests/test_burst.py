"""A burst on the production setup: everyone presses Run at the same instant.

PostgreSQL (this session's database must be one), Redis, the Celery executor with one
worker, a console daphne started the way production runs it, and the sandbox upstream in
its own process. Every submit must be answered with a redirect (no 500, no hang) and every
watcher must end with exactly the text the model produced. The same through the gateway:
fifty programs create at once, each holding its request open (`Prefer: wait`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest
import websockets
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection

from predictions.models import ApiKey, Prediction
from tests.engine_helpers import MakeModel, expected_text

if TYPE_CHECKING:
    from tests.console_server import ConsoleServer, Workers

pytestmark = [pytest.mark.services, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

BURST = 50
TOKENS = 40
SEED = 5
# Generous: the whole burst shares two cores with the sandbox, worker and Redis.
WITHIN = 120.0


def on_postgresql() -> None:
    # Not a missing service: `make test-services` runs this on PostgreSQL, `make test` not.
    if connection.vendor != "postgresql":
        pytest.skip("about the production setup: runs with DATABASE_URL=postgres://…")


def session_cookie(user: User) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key or ""


async def submit_form(client: httpx.AsyncClient, csrf: str, prompt: str) -> httpx.Response:
    data = {
        "csrfmiddlewaretoken": csrf,
        "prompt": prompt,
        "seed": str(SEED),
        "max_tokens": str(TOKENS),
        "token_delay_ms": "10",
    }
    return await client.post("/models/sandbox/text/", data=data)


async def watch(server: ConsoleServer, cookie: str, prediction_url: str) -> tuple[str, str]:
    """Follow one prediction's socket to `done`: (text assembled from events, final text)."""
    pk = prediction_url.rstrip("/").rsplit("/", 1)[-1]
    url = f"ws://127.0.0.1:{server.port}/ws/predictions/{pk}/"
    headers = {"Cookie": cookie}
    async with websockets.connect(url, origin=server.url, additional_headers=headers) as ws:
        text = ""
        seq = 0
        async for raw in ws:
            message = json.loads(raw)
            kind = message["type"]
            if kind == "snapshot":
                text, seq = message["prediction"]["text_output"], message["seq"]
            elif kind == "done":
                return text, message["prediction"]["text_output"]
            elif message.get("seq", 0) > seq:
                assert message["seq"] == seq + 1, f"out of order: {seq} then {message['seq']}"
                seq = message["seq"]
                if kind == "output":
                    text += message.get("text", "")
        raise AssertionError(f"socket closed before done: {ws.close_code}")


def test_a_burst_of_web_submits_on_postgresql_and_celery_streams_every_text_exactly(
    console_servers: Callable[..., ConsoleServer],
    celery_workers: Workers,
    sandbox_model: MakeModel,
    member: User,
) -> None:
    on_postgresql()
    # No rate limit on the sandbox: the burst is the point, not Replicate's limits.
    asyncio.run(sandbox_model("text", faults="create_limit=0,read_limit=0"))
    celery_workers.start()
    server = console_servers(
        PREDICTION_EXECUTOR="celery",
        REDIS_URL=celery_workers.env["REDIS_URL"],
        CELERY_TASK_DEFAULT_QUEUE=celery_workers.queue,
        # One member's burst: about load, not the per-member limit (counted in Redis,
        # which outlives this test).
        SUBMIT_RATE_LIMIT="1000/minute",
    )
    cookie = f"sessionid={session_cookie(member)}"
    prompts = [f"burst {i} {uuid.uuid4().hex[:6]}" for i in range(BURST)]

    async def burst() -> tuple[list[httpx.Response], list[tuple[str, str]]]:
        headers = {"Cookie": cookie}
        limits = httpx.Limits(max_connections=BURST)
        async with httpx.AsyncClient(
            base_url=server.url, headers=headers, limits=limits, timeout=WITHIN
        ) as client:
            page = await client.get("/models/sandbox/text/")
            assert page.status_code == 200, page.text[:500]
            csrf = page.cookies["csrftoken"]
            client.headers["Cookie"] = f"{cookie}; csrftoken={csrf}"
            answers = await asyncio.gather(*(submit_form(client, csrf, p) for p in prompts))
        located = [a.headers.get("location", "") for a in answers if a.status_code == 303]
        watched = await asyncio.gather(*(watch(server, cookie, url) for url in located))
        return list(answers), list(watched)

    answers, watched = asyncio.run(asyncio.wait_for(burst(), WITHIN))

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [303] * BURST, f"{statuses}\n{server.output()}"
    expected = sorted(expected_text(p, SEED, TOKENS) for p in prompts)
    assert sorted(final for _, final in watched) == expected
    assert sorted(text for text, _ in watched) == expected


def test_an_exhausted_database_answers_the_busy_page_at_once_and_writes_nothing(
    console_servers: Callable[..., ConsoleServer],
    sandbox_model: MakeModel,
    member: User,
    redis_url: str,
) -> None:
    on_postgresql()
    asyncio.run(sandbox_model("text"))
    cookie = f"sessionid={session_cookie(member)}"
    # PostgreSQL refuses every connection of this role, as it does when max_connections
    # are all taken.
    role = f"exhausted_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    try:
        db = connection.settings_dict
        url = f"postgres://{role}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
        server = console_servers(
            DATABASE_URL=f"{url}/{db['NAME']}", PREDICTION_EXECUTOR="celery", REDIS_URL=redis_url
        )
        headers = {"Cookie": f"{cookie}; csrftoken={'x' * 32}", "X-CSRFToken": "x" * 32}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            page = client.get("/")
            submit = client.post("/models/sandbox/text/", data={"prompt": "lost?"})
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP ROLE {role}")

    for response in (page, submit):
        assert response.status_code == 503, response.text[:300]
        assert response.headers["Retry-After"] == "5"
        assert "The console is busy" in response.text
        assert "Traceback" not in response.text
    assert "Traceback" not in server.log.read_text()
    assert not Prediction.objects.filter(input__prompt="lost?").exists()


async def create_and_follow(client: httpx.AsyncClient, prompt: str) -> tuple[int, str]:
    """One program's create, held open as `async_run` holds it: (the create's status code,
    the output text once finished, following the prediction if the wait ran out)."""
    body = {"input": {"prompt": prompt, "seed": SEED, "max_tokens": TOKENS, "token_delay_ms": 10}}
    created = await client.post(
        "/v1/models/sandbox/text/predictions", json=body, headers={"Prefer": "wait"}
    )
    if created.status_code not in (201, 202):
        return created.status_code, created.text[:300]
    prediction = created.json()
    while prediction["status"] in ("starting", "processing"):
        await asyncio.sleep(0.2)
        prediction = (await client.get(prediction["urls"]["get"])).json()
    return created.status_code, "".join(prediction["output"] or [])


def test_a_burst_of_gateway_creates_on_postgresql_and_celery_answers_every_one(
    console_servers: Callable[..., ConsoleServer],
    celery_workers: Workers,
    sandbox_model: MakeModel,
    member: User,
) -> None:
    on_postgresql()
    asyncio.run(sandbox_model("text", faults="create_limit=0,read_limit=0"))
    celery_workers.start()
    server = console_servers(
        PREDICTION_EXECUTOR="celery",
        REDIS_URL=celery_workers.env["REDIS_URL"],
        CELERY_TASK_DEFAULT_QUEUE=celery_workers.queue,
        SUBMIT_RATE_LIMIT="1000/minute",
    )
    _, key = ApiKey.issue(member, "burst")
    prompts = [f"gateway burst {i} {uuid.uuid4().hex[:6]}" for i in range(BURST)]

    async def burst() -> list[tuple[int, str]]:
        async with httpx.AsyncClient(
            base_url=f"{server.url}/api",
            headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=BURST),
            timeout=WITHIN,
        ) as client:
            return list(await asyncio.gather(*(create_and_follow(client, p) for p in prompts)))

    answers = asyncio.run(asyncio.wait_for(burst(), WITHIN))

    statuses = sorted(status for status, _ in answers)
    assert set(statuses) <= {201, 202}, f"{answers}\n{server.output()}"
    assert [text for _, text in answers] == [expected_text(p, SEED, TOKENS) for p in prompts]
    assert (
        Prediction.objects.filter(owner=member, source="api", status="succeeded").count() == BURST
    )
