"""Rate limits: the one home of every "too many, too fast" the console enforces.

Built on the `limits` library: a moving window per (name, identity), kept in Redis when
REDIS_URL is set, so a limit holds across every daphne and worker process, and in this
process's memory otherwise (the embedded mode is one process).

Today: SUBMIT_RATE_LIMIT, per user, shared by every way a member starts a prediction
(the model form, the websocket `submit` and the gateway's creates: `check_submit`). The
gateway also counts every call per API key (`take`: API_RATE_LIMIT, API_CREATE_RATE_LIMIT),
answering with what is left; quotas call `check` (or `acheck`) with a name of their own.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from limits import parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from . import untrusted

logger = logging.getLogger(__name__)

KEY_PREFIX = "console:limits"


@dataclass(frozen=True)
class Throttled:
    """A refusal: which rate was exceeded and when the next attempt will be allowed."""

    limit: str  # as people read it: "60 per 1 minute"
    retry_after: int  # whole seconds, at least 1

    @property
    def message(self) -> str:
        unit = "second" if self.retry_after == 1 else "seconds"
        return f"Rate limit reached ({self.limit}). Try again in {self.retry_after} {unit}."


_lock = threading.Lock()


@functools.cache
def _limiter(storage_url: str) -> MovingWindowRateLimiter:
    # wrap_exceptions: any storage failure is a StorageError, whatever the backend.
    storage = storage_from_string(storage_url, key_prefix=KEY_PREFIX, wrap_exceptions=True)
    return MovingWindowRateLimiter(storage)


def limiter() -> MovingWindowRateLimiter:
    # One at a time: `limits` imports its Redis driver lazily, and threads racing through
    # that the first time see "redis 0.0.0" (found by the burst test: 8 of 50 got a 500).
    with _lock:
        return _limiter(settings.RATE_LIMIT_STORAGE_URL)


@dataclass(frozen=True)
class Window:
    """One attempt counted: whether it was allowed, and what is left of the tightest rate
    (the gateway's `ratelimit-remaining`/`ratelimit-reset`). `remaining` is None when the
    storage could not be asked (the attempt was let through)."""

    allowed: bool
    limit: str
    remaining: int | None
    reset: int  # whole seconds until the window frees an attempt, at least 1


def take(name: str, rates: str, *identity: Any) -> Window:
    """Count one attempt by `identity` at `name` against `rates` ("60/minute", or several:
    "10/second;300/hour"): the first rate it exceeds, else the one with least left.

    Each window is taken atomically (one Redis script), so concurrent attempts from
    many processes cannot slip past it together.
    """
    keys = [name, *map(str, identity)]
    rate_limiter = limiter()
    tightest: Window | None = None
    try:
        for item in parse_many(rates):  # settings checked the syntax at start-up
            allowed = rate_limiter.hit(item, *keys)
            stats = rate_limiter.get_window_stats(item, *keys)
            reset = max(1, math.ceil(stats.reset_time - time.time()))
            window = Window(allowed, str(item), stats.remaining, reset)
            if not allowed:
                return window
            if tightest is None or stats.remaining < (tightest.remaining or 0):
                tightest = window
    except StorageError:
        # Fail open: a Redis outage must not stop the team's work (and the channel layer
        # and the broker will be shouting about it already).
        logger.warning("rate limits unavailable; allowing %s", name, exc_info=True)
        return Window(True, "", None, 1)
    return tightest or Window(True, "", None, 1)


async def atake(name: str, rates: str, *identity: Any) -> Window:
    # Off the event loop: the Redis storage is synchronous.
    return await sync_to_async(take, thread_sensitive=False)(name, rates, *identity)


def check(name: str, rates: str, *identity: Any) -> Throttled | None:
    """`take`, as a refusal: None if it is allowed, else when to try again."""
    window = take(name, rates, *identity)
    return None if window.allowed else Throttled(window.limit, window.reset)


async def acheck(name: str, rates: str, *identity: Any) -> Throttled | None:
    # Off the event loop: the Redis storage is synchronous.
    return await sync_to_async(check, thread_sensitive=False)(name, rates, *identity)


def clear(name: str, rates: str, *identity: Any) -> None:
    """Forget `identity`'s attempts at `name` (an admin's "let them try again")."""
    for item in parse_many(rates):
        limiter().clear(item, name, *map(str, identity))


async def check_submit(user: Any) -> Throttled | None:
    """Count one prediction started by `user`, whichever way it comes in."""
    return await acheck("submit", settings.SUBMIT_RATE_LIMIT, user.pk)


def login_username(request: Any, credentials: dict[str, Any] | None) -> str:
    """The username django-axes records a login attempt under (AXES_USERNAME_CALLABLE).

    What was typed, cut to what a username can be (150 characters) and made storable: axes
    keeps it in a 255-character column, and a longer or NUL-holding name was a 500 on
    PostgreSQL. Such a name belongs to nobody, so it only ever locks itself out.
    """
    typed = str((credentials or {}).get("username") or "")
    return untrusted.scrub(typed)[:150]
