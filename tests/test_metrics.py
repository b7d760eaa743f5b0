"""/metrics: Prometheus text for staff or METRICS_TOKEN; the numbers move when a prediction
runs (sandbox upstream, inline executor, a real websocket watcher through the ASGI app)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from tests.engine_helpers import MakeModel, wait_until_finished
from tests.test_consumers import Browser, open_socket, start_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]

TOKEN = "metrics-token-for-tests-0123456789"


async def scrape(**headers: str) -> dict[str, float]:
    """Every sample as 'name{label="value",…}' -> value."""
    response = await AsyncClient().get("/metrics", headers=headers)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


@pytest.fixture(autouse=True)
def metrics_token(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN


async def test_metrics_are_for_staff_or_the_metrics_token(member: User) -> None:
    anonymous = await AsyncClient().get("/metrics")
    wrong = await AsyncClient().get("/metrics", headers={"Authorization": "Bearer nope"})
    client = AsyncClient()
    await client.aforce_login(member)
    not_staff = await client.get("/metrics")

    assert anonymous.status_code == wrong.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert not_staff.status_code == 403
    assert await scrape(authorization=f"Bearer {TOKEN}")

    member.is_staff = True
    await member.asave()
    staff = AsyncClient()
    await staff.aforce_login(member)
    assert (await staff.get("/metrics")).status_code == 200


async def test_a_watched_prediction_moves_the_numbers(
    sandbox_model: MakeModel, member: User
) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    before = await scrape(**auth)
    prediction, expected = await start_text(await sandbox_model("text"), member, tokens=60)
    socket = await open_socket(f"/ws/predictions/{prediction.pk}/", member)
    assert (await socket.connect())[0]
    browser = Browser(socket)
    await browser.receive()  # the snapshot: the socket is open
    during = await scrape(**auth)

    assert await browser.until_finished() == expected
    await wait_until_finished(prediction.pk)
    await socket.disconnect()
    after = await scrape(**auth)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('console_predictions_total{model="sandbox/text",status="succeeded"}') == 1
    assert during["console_websocket_connections{}"] >= 1 + before.get(
        "console_websocket_connections{}", 0
    )
    assert after["console_websocket_connections{}"] == before.get(
        "console_websocket_connections{}", 0
    )
    assert during["console_active_predictions{}"] >= 1
    assert delta("console_time_to_first_token_seconds_count{}") == 1
    # Every output event the watcher got was timed from upstream to its socket.
    assert delta("console_relay_latency_seconds_count{}") >= 1
    assert (
        0
        < delta("console_relay_latency_seconds_sum{}")
        < delta("console_relay_latency_seconds_count{}")
    )
    for name in (
        "console_upstream_errors_total",
        "console_webhook_lag_seconds",
        "console_archive_failures_total",
    ):
        assert any(key.startswith(name) for key in after), name


@pytest.mark.slow
async def test_upstream_errors_are_counted_by_kind(sandbox_model: MakeModel, member: User) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    before = await scrape(**auth)
    model = await sandbox_model("text", faults="create_429=1")
    prediction, _ = await start_text(model, member, tokens=5)
    final = await wait_until_finished(prediction.pk)
    after = await scrape(**auth)

    assert final.status == "succeeded"  # the 429 was retried
    key = 'console_upstream_errors_total{kind="rate_limited"}'
    assert after[key] - before.get(key, 0) >= 1
