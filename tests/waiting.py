"""The one way a test waits for something: poll a check until it holds, with a deadline.

Tests never sleep to "let things settle": they say what they are waiting for, and fail with that
(and the last value seen) when it does not happen in time. Nothing here asserts how long anything
took; the deadline only turns a hang into a clear failure.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

WITHIN = 15.0  # seconds: generous, so a loaded machine slows a test down instead of failing it
INTERVAL = 0.05


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    within: float = WITHIN,
    interval: float = INTERVAL,
    what: str = "the condition",
) -> T:
    """Call ``check`` (sync or async) until it returns something truthy, and return that value.

    Raises ``AssertionError`` naming ``what`` and the last value once ``within`` seconds pass.
    Exceptions from ``check`` propagate: a check that cannot be evaluated is a failure, not a wait.
    """
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {within}s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(interval)
