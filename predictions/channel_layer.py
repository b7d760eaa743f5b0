"""The embedded mode's channel layer: Channels' in-memory layer, made cheap per message.

settings.CHANNEL_LAYERS names it when there is no Redis (channels_redis otherwise).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import channels.exceptions
import channels.layers


class InMemoryChannelLayer(channels.layers.InMemoryChannelLayer):
    """Channels' in-memory layer (the embedded mode's), made cheap per message.

    Channels' version sweeps for expired messages — a walk over every channel and every
    group member — on each receive and each group send, and starts a task per member
    for every group send. With a few hundred browsers watching, that was most of the
    server's CPU (N x N). Here the sweep runs at most once a second (messages expire
    after a minute anyway) and a group send puts the message on each member's queue
    directly, which is all Channels' tasks did.
    """

    sweep_seconds = 1.0
    _swept_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at >= self.sweep_seconds:
            self._swept_at = now
            super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            with contextlib.suppress(channels.exceptions.ChannelFull):
                await self.send(channel, message)
