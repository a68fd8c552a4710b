"""Follow state in WeChat's order: whatever order a subscribe and an unsubscribe are handled in
(deliveries run concurrently; a retry can come late), the state is the newest by ``CreateTime``.

Through identity's real consumer and handlers on the real database (``identity_fixtures.py``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.identity.follows.schemas import FollowState, LoggedChange
from services.identity.follows.service import apply, fold
from shared.events.envelope import Envelope
from tests.integration.identity_fixtures import OA, Identity, identity, oa_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

__all__ = ["identity"]

PAIRS = 40  # users; each gets a subscribe and an unsubscribe one second apart


def push(openid: str, event: str, create_time: int, scene: str | None = None) -> Envelope:
    payload: dict[str, Any] = {
        "ToUserName": "gh_000000000001",
        "FromUserName": openid,
        "CreateTime": str(create_time),
        "MsgType": "event",
        "Event": event,
    }
    if scene:
        payload["EventKey"] = f"qrscene_{scene}"
        payload["Ticket"] = "gQ-test-ticket"
    return oa_event(payload)


async def pairs(identity: Identity, n: int) -> list[tuple[str, Envelope, Envelope, bool]]:
    """(openid, older, newer, subscribed at the end) for ``n`` users: half subscribe then
    unsubscribe, half unsubscribe (a follower from before Siyu) then subscribe again."""
    t0 = int(identity.sandbox.now)
    out = []
    for i in range(n):
        user = await identity.sandbox.user()
        openid = user["openids"][OA]
        t = t0 + 10 * i
        if i % 2 == 0:
            out.append((openid, push(openid, "subscribe", t, f"s{i}"), push(openid, "unsubscribe", t + 1), False))
        else:
            out.append((openid, push(openid, "unsubscribe", t), push(openid, "subscribe", t + 1, f"s{i}"), True))
    return out


async def assert_newest_wins(identity: Identity, cases: list[tuple[str, Envelope, Envelope, bool]]) -> None:
    for openid, _older, _newer, subscribed in cases:
        member = await identity.resolve(OA, openid)
        assert member is not None, openid
        [follow] = member["follows"]
        assert follow["subscribed"] is subscribed, (openid, follow)
        assert follow["subscribe_count"] == 1
    # Every change is logged with its time, and attached to the member once there is one.
    rows = await identity.sql(
        "SELECT openid, count(*) AS n, count(member_id) AS attached FROM follow_events GROUP BY openid"
    )
    assert {r["openid"]: (r["n"], r["attached"]) for r in rows} == {c[0]: (2, 2) for c in cases}
    assert await identity.count("SELECT count(*) FROM members") == len(cases)


async def test_newer_change_handled_first_still_wins(identity: Identity) -> None:
    """Every newer change is handled (all at once) before any older one (all at once)."""
    cases = await pairs(identity, PAIRS)
    newer = await asyncio.gather(*(identity.deliver(c[2]) for c in cases))
    assert newer == ["handled"] * PAIRS
    older = await asyncio.gather(*(identity.deliver(c[1]) for c in cases))
    assert older == ["handled"] * PAIRS
    await assert_newest_wins(identity, cases)


async def test_pairs_handled_concurrently_in_any_order_end_in_the_newest_state(identity: Identity) -> None:
    cases = await pairs(identity, PAIRS)
    deliveries = [c[1] for c in cases] + [c[2] for c in cases]
    random.Random(7).shuffle(deliveries)
    outcomes = await asyncio.gather(*(identity.deliver(e) for e in deliveries))
    assert outcomes == ["handled"] * len(deliveries)
    await assert_newest_wins(identity, cases)
    # Redelivering everything (new event ids, any order) changes nothing.
    before = await identity.snapshot()
    again = [e.model_copy(update={"event_id": uuid.uuid4()}) for e in reversed(deliveries)]
    await asyncio.gather(*(identity.deliver(e) for e in again))
    assert await identity.snapshot() == before


async def test_an_unsubscribe_before_its_subscribe_publishes_no_follow_and_keeps_attribution(
    identity: Identity,
) -> None:
    user = await identity.sandbox.user()
    openid = user["openids"][OA]
    t = int(identity.sandbox.now)
    assert await identity.deliver(push(openid, "unsubscribe", t + 5)) == "handled"
    assert await identity.count("SELECT count(*) FROM members") == 0
    assert await identity.published() == []
    assert await identity.deliver(push(openid, "subscribe", t, "poster_9")) == "handled"
    member = await identity.resolve(OA, openid)
    assert member is not None
    [follow] = member["follows"]
    assert (follow["subscribed"], follow["first_scene"], follow["subscribe_count"]) == (False, "poster_9", 1)
    assert member["first_scene"] == "poster_9"
    # The person was met (registered), but their follow never flipped to on as far as we know now.
    assert len(await identity.published("identity.member.registered")) == 1
    assert await identity.published("identity.follow.changed") == []
    assert "follower" not in member["tags"]


# --- the rule itself (pure) --------------------------------------------------------------------------

T = datetime(2026, 1, 1, tzinfo=UTC)


def change(kind: str, seconds: int, scene: str | None = None) -> LoggedChange:
    return LoggedChange(kind, scene, "ticket" if scene else None, T + timedelta(seconds=seconds))


@pytest.mark.parametrize("seed", range(6))
def test_fold_is_the_same_in_every_order(seed: int) -> None:
    log = [
        change("subscribe", 0, "a"),
        change("scan", 5, "b"),
        change("unsubscribe", 9),
        change("subscribe", 12, "c"),
        change("unsubscribe", 20),
    ]
    shuffled = list(log)
    random.Random(seed).shuffle(shuffled)
    state = FollowState()
    # Applied one by one in the shuffled order: only a change newer than the state flips it.
    for c in shuffled:
        state = apply(state, c)
    assert state.subscribed is False and state.state_at == T + timedelta(seconds=20)
    assert (state.first_scene, state.last_scene) == ("a", "c")
    assert fold(shuffled).subscribed is False
    assert fold(shuffled).subscribe_count == 2


def test_two_changes_in_the_same_second_end_the_same_whichever_comes_first() -> None:
    both = [change("subscribe", 3, "x"), change("unsubscribe", 3)]
    one = apply(apply(FollowState(), both[0]), both[1])
    other = apply(apply(FollowState(), both[1]), both[0])
    assert one.subscribed is other.subscribed is False
