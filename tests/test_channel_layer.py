"""The channel layers as the console configures them: channels_redis in production, its
own in-memory layer in the embedded mode."""

from __future__ import annotations

import asyncio

import channels.layers
import pytest
from channels_redis.core import RedisChannelLayer

from predictions.channel_layer import InMemoryChannelLayer
from project.settings import redis_channel_layer

# Longer than redis-py's default socket timeout (5 s) and channels_redis's blocking read (5 s).
QUIET_SECONDS = 12


@pytest.mark.slow
async def test_an_idle_socket_s_listener_outlasts_redis_timeouts(redis_url: str) -> None:
    # A websocket nobody writes to waits in layer.receive() for as long as it is open; it
    # used to die with 1011 when redis-py's read timeout raced the blocking read.
    layer = RedisChannelLayer(**redis_channel_layer(redis_url)["CONFIG"])
    channel = await layer.new_channel()

    async def speak_later() -> None:
        await asyncio.sleep(QUIET_SECONDS)
        await layer.send(channel, {"type": "still.here"})

    speaker = asyncio.create_task(speak_later())
    try:
        message = await asyncio.wait_for(layer.receive(channel), QUIET_SECONDS + 10)
    finally:
        await speaker
        await layer.close_pools()

    assert message["type"] == "still.here"


async def test_a_group_send_reaches_every_member_past_a_full_one() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    for channel in (full, free):
        await layer.group_add("watchers", channel)
    await layer.send(full, {"type": "first"})

    await layer.group_send("watchers", {"type": "second"})

    assert (await layer.receive(full))["type"] == "first"
    assert (await layer.receive(free))["type"] == "second"


async def test_expired_messages_are_swept_at_most_once_a_second() -> None:
    layer = InMemoryChannelLayer(expiry=60)
    channel = await layer.new_channel()
    await layer.group_add("watchers", channel)
    sweeps = 0
    sweep = channels.layers.InMemoryChannelLayer._clean_expired

    def counted(self: InMemoryChannelLayer) -> None:
        nonlocal sweeps
        sweeps += 1
        sweep(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(channels.layers.InMemoryChannelLayer, "_clean_expired", counted)
        for n in range(50):
            await layer.group_send("watchers", {"type": f"m{n}"})

    assert sweeps == 1
