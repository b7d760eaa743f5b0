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

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]


async def forget_group(group: str) -> None:
    layer = get_channel_layer()
    if hasattr(layer, "groups"):  # the in-memory layer
        layer.groups.pop(group, None)
    else:  # channels_redis: the group's key, which a restarted Redis no longer has
        connection = layer.connection(layer.consistent_hash(group))
        await connection.delete(layer._group_key(group))


@pytest.mark.slow
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
    await forget_group(events.prediction_group(prediction.pk))

    assert await browser.until_finished() == expected
    await socket.disconnect()


async def test_the_feed_socket_rejoins_its_groups_and_hears_its_owner_again(
    member: User, monkeypatch: Any
) -> None:
    monkeypatch.setattr(events, "WATCHDOG_SECONDS", 0.2)
    socket = await open_socket("/ws/predictions/", member)
    assert (await socket.connect())[0]
    await forget_group(events.user_group(member.pk))

    # Published until it arrives: each try is lost until the watchdog has re-joined.
    event = events.user_status_event("p-1", "processing", "sandbox/text", False)
    received = None
    for _ in range(50):
        await events.publish_user_status(member.pk, event)
        if not await socket.receive_nothing(timeout=0.2):
            received = await socket.receive_json_from()
            break
    await socket.disconnect()

    assert received is not None
    assert {key: received[key] for key in event} == event  # and the badge, drawn
