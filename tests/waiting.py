"""Waiting on a condition, the one way tests do it: poll until it holds, fail after a while.

No Django here: the test servers (and bench/, which imports them) wait with it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_for(
    condition: Callable[[], Awaitable[Any]],
    within: float = 20.0,
    every: float = 0.05,
    what: str = "condition",
) -> Any:
    """Await `condition` until it returns something truthy, and return that; fail after
    `within` seconds."""
    deadline = time.monotonic() + within
    while not (value := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        await asyncio.sleep(every)
    return value


def wait_until(
    condition: Callable[[], Any],
    within: float = 30.0,
    every: float = 0.05,
    what: str = "condition",
) -> Any:
    """`wait_for` for synchronous code: call `condition` until it returns something truthy."""
    deadline = time.monotonic() + within
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        time.sleep(every)
    return value
