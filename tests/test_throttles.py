"""Rate limits: one per-user submit limit across the form and the websocket, kept in Redis
when there is one, so every process counts against the same window."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

from predictions import throttles
from predictions.models import Prediction
from tests.engine_helpers import MakeModel
from tests.test_consumers import open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]

ROOT = Path(__file__).resolve().parent.parent
LIMIT = "2/minute"


@pytest.fixture
def two_a_minute(settings: Any, member: User) -> Iterator[None]:
    """A small limit, with the member's window empty (ids repeat across test databases,
    and Redis outlives them)."""
    settings.SUBMIT_RATE_LIMIT = LIMIT
    throttles.clear("submit", LIMIT, member.pk)
    yield
    throttles.clear("submit", LIMIT, member.pk)


async def logged_in(user: User) -> AsyncClient:
    sync = Client()
    await sync_to_async(sync.force_login)(user)
    client = AsyncClient()
    client.cookies["sessionid"] = sync.cookies["sessionid"].value
    return client


async def test_submits_past_the_limit_are_refused_with_when_to_retry(
    sandbox_model: MakeModel, member: User, two_a_minute: None
) -> None:
    await sandbox_model("text")
    socket = await open_socket("/ws/predictions/", member)
    assert (await socket.connect())[0]
    message = {
        "type": "submit",
        "model": "sandbox/text",
        "input": {"prompt": "hi", "max_tokens": 2},
    }

    # A typo costs no attempt.
    await socket.send_json_to({**message, "input": {"max_tokens": "many"}})
    assert set((await socket.receive_json_from(timeout=5))["errors"]) == {"prompt", "max_tokens"}
    replies = []
    for _ in range(3):
        await socket.send_json_to(message)
        while (reply := await socket.receive_json_from(timeout=5))["type"] == "status":
            pass  # the feed also reports the runs' progress
        replies.append(reply)

    assert [r["type"] for r in replies] == ["submitted", "submitted", "error"]
    refused = replies[-1]
    assert 1 <= refused["retry_after"] <= 60
    assert refused["message"] == (
        f"Rate limit reached (2 per 1 minute). Try again in {refused['retry_after']} seconds."
    )
    assert await Prediction.objects.acount() == 2

    # The form shares the limit: a 429, with the message and what was typed kept.
    client = await logged_in(member)
    response = await client.post("/models/sandbox/text/", {"prompt": "kept words"})

    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    page = response.content.decode()
    assert "Rate limit reached (2 per 1 minute). Try again in" in page
    assert "kept words" in page
    assert await Prediction.objects.acount() == 2
    await socket.disconnect()


async def test_each_user_has_a_window_of_their_own(
    sandbox_model: MakeModel, member: User, stranger: User, two_a_minute: None
) -> None:
    await sandbox_model("text")
    throttles.clear("submit", LIMIT, stranger.pk)
    for user in (member, stranger):
        client = await logged_in(user)
        for _ in range(2):
            response = await client.post("/models/sandbox/text/", {"prompt": "x"})
            assert response.status_code == 303
    assert await Prediction.objects.acount() == 4
    throttles.clear("submit", LIMIT, stranger.pk)


@pytest.mark.services
@pytest.mark.processes
def test_with_redis_every_process_counts_against_the_same_window(
    redis_url: str, tmp_path: Path
) -> None:
    """Two console processes (here: two Python processes) share the window."""
    identity = uuid.uuid4().hex
    code = (
        "import django, sys; django.setup(); from predictions import throttles; "
        f"refused = throttles.check('test', '1/minute', '{identity}'); "
        "print('refused' if refused else 'allowed')"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "REDIS_URL": redis_url,
        "VAR_DIR": str(tmp_path / "var"),
    }
    env.pop("DATABASE_URL", None)

    def attempt() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    # A fresh identity: no other run's window, and this one expires within the minute.
    assert [attempt(), attempt()] == ["allowed", "refused"]


def test_when_the_limit_store_is_down_runs_are_allowed_with_a_warning(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.RATE_LIMIT_STORAGE_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    assert throttles.check("test", "1/minute", "someone") is None
    assert throttles.check("test", "1/minute", "someone") is None
    assert "rate limits unavailable" in caplog.text
