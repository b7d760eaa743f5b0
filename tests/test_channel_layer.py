"""The production channel layer (channels_redis) as the console configures it."""

from __future__ import annotations

import asyncio

import pytest
from channels_redis.core import RedisChannelLayer

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
