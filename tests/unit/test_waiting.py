"""The polling helper every test waits with: it returns what it waited for, or fails saying what."""

from __future__ import annotations

import pytest

from tests.waiting import eventually


async def test_returns_the_first_truthy_value_of_a_sync_or_async_check() -> None:
    calls: list[int] = []

    def sync_check() -> list[int] | None:
        calls.append(1)
        return calls if len(calls) == 3 else None

    assert await eventually(sync_check, interval=0) == [1, 1, 1]

    async def async_check() -> str:
        return "ready"

    assert await eventually(async_check) == "ready"


async def test_fails_after_the_deadline_naming_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"gave up after 0.05s waiting for the relay \(last value: 0\)"):
        await eventually(lambda: 0, within=0.05, interval=0.01, what="the relay")


async def test_an_error_in_the_check_is_a_failure_not_a_wait() -> None:
    def broken() -> bool:
        raise KeyError("no such row")

    with pytest.raises(KeyError):
        await eventually(broken)
