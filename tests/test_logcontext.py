"""LOG_FORMAT=json: one JSON object a line; every line of a prediction's run names its id
and upstream id; no secret ever appears, even at DEBUG level.

A real console process (daphne, inline executor) runs a prediction against the sandbox;
its whole log is then read line by line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User

from predictions.models import ApiToken, Prediction
from tests.engine_helpers import MakeModel
from tests.test_burst import session_cookie

if TYPE_CHECKING:
    from tests.console_server import ConsoleServer

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "metrics-secret-for-the-log-test-42"


def test_json_logs_name_the_prediction_and_never_a_secret(
    console_servers: Callable[..., ConsoleServer],
    sandbox_model: MakeModel,
    member: User,
    sandbox_token: str,
) -> None:
    model = async_to_sync(sandbox_model)("text", faults="create_429=1")
    api_token = ApiToken.objects.get(pk=model.token_id).get_token()
    server = console_servers(LOG_FORMAT="json", LOG_LEVEL="DEBUG", METRICS_TOKEN=METRICS_TOKEN)
    session = session_cookie(member)
    cookie = f"sessionid={session}"

    with httpx.Client(base_url=server.url, headers={"Cookie": cookie}, timeout=30) as client:
        csrf = client.get("/models/sandbox/text/").cookies["csrftoken"]
        client.headers["Cookie"] = f"{cookie}; csrftoken={csrf}"
        data = {"csrfmiddlewaretoken": csrf, "prompt": "log me", "max_tokens": "20"}
        answer = client.post("/models/sandbox/text/", data=data)
        assert answer.status_code == 303, answer.text[:300]
        pk = answer.headers["location"].rstrip("/").rsplit("/", 1)[-1]
        deadline = time.monotonic() + 30
        while Prediction.objects.get(pk=pk).is_active:
            assert time.monotonic() < deadline, "the prediction did not finish"
            time.sleep(0.1)
        client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    final = Prediction.objects.get(pk=pk)
    server.stop_keeping_log()
    log = server.log_text()

    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    about = [r for r in records if r.get("logger") == "predictions.runner"]
    assert about, log[-2000:]
    assert all(r["prediction_id"] == pk for r in about)
    # The create was refused once (429) and retried; the last line has the upstream id.
    assert any(r["upstream_id"] is None for r in about)
    assert about[-1]["upstream_id"] == final.upstream_id
    assert {"time", "level", "logger", "message"} <= set(about[-1])

    secrets = [
        settings.SECRET_KEY,
        *settings.TOKEN_ENCRYPTION_KEYS,
        sandbox_token,
        api_token,
        session,
        csrf,
        METRICS_TOKEN,
    ]
    leaked = [secret[:6] + "…" for secret in secrets if secret in log]
    assert not leaked, f"secrets in the log: {leaked}"
