"""A socket that silently left its groups (Redis restarted: channels_redis keeps group
memberships there) still ends with exactly the upstream text: the watchdog notices the
quiet, re-joins and re-reads the row."""

from __future__ import annotations

from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth.models import User

from predictions import events
from tests.engine_helpers import MakeModel
from tests.test_consumers import Browser, open_socket, start_text

pytest_plugins = ["tests.sandbox_server", "tests.engine_fixtures"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]


async def test_a_socket_that_lost_its_groups_still_ends_exact(
    sandbox_model: MakeModel, member: User, monkeypatch: Any
) -> None:
    monkeypatch.setattr(events, "WATCHDOG_SECONDS", 0.3)
    prediction, expected = await start_text(await sandbox_model("text"), member, tokens=120)
    socket = await open_socket(f"/ws/predictions/{prediction.pk}/", member)
    assert (await socket.connect())[0]
    browser = Browser(socket)
    await browser.receive()  # the snapshot
    await browser.until("output")

    # What a Redis restart does to every open socket: it is in no group any more.
    layer = get_channel_layer()
    group = events.prediction_group(prediction.pk)
    for channel in list(layer.groups.get(group, {})):
        await layer.group_discard(group, channel)

    assert await browser.until_finished() == expected
    await socket.disconnect()
