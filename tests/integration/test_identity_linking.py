"""One member per person: linking by unionid, late-unionid merges, undo, concurrency, replays.

Real PostgreSQL, the WeChat sandbox in-process, identity's real consumer and API in-process
(``identity_fixtures.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from services.identity.crypto import session_key_binding
from tests.integration.identity_fixtures import MP, OA, Identity, identity, oa_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

__all__ = ["identity"]  # the fixture, re-exported for pytest


async def test_follow_then_login_is_one_member(identity: Identity) -> None:
    user = await identity.sandbox.user()
    assert await identity.deliver(await identity.sandbox.follow(user, scene="store_42")) == "handled"
    follower = await identity.resolve(OA, user["openids"][OA])
    assert follower is not None

    login = await identity.login(user)

    assert login == {
        "member_id": follower["member_id"],
        "openid": user["openids"][MP],
        "unionid_known": True,
        "created": False,
    }
    member = await identity.member(login["member_id"])
    assert sorted(i["appid"] for i in member["identities"]) == [OA, MP]
    assert member["first_scene"] == "store_42"
    assert await identity.count("SELECT count(*) FROM members") == 1
    assert [e["data"]["appid"] for e in await identity.published("identity.member.linked")] == [MP]
    assert len(await identity.published("identity.member.registered")) == 1


async def test_login_then_follow_is_one_member(identity: Identity) -> None:
    user = await identity.sandbox.user()
    login = await identity.login(user)
    assert login["created"] is True and login["unionid_known"] is True

    await identity.deliver(await identity.sandbox.follow(user, scene="poster_7"))

    member = await identity.member(login["member_id"])
    assert sorted(i["appid"] for i in member["identities"]) == [OA, MP]
    assert member["follows"][0]["subscribed"] is True
    assert member["follows"][0]["first_scene"] == "poster_7"
    # The member met us first through the mini-program; the follow is its first attributed channel.
    assert member["source"] == "mp_login"
    assert member["first_scene"] == "poster_7"
    assert await identity.count("SELECT count(*) FROM members") == 1


async def test_session_key_is_stored_encrypted_and_never_returned(identity: Identity) -> None:
    user = await identity.sandbox.user()
    login = await identity.login(user)
    assert "session_key" not in login
    [row] = await identity.sql("SELECT appid, openid, session_key_enc FROM app_identities")
    issued = identity.sandbox.app.state.sandbox.users[user["user_id"]].session_keys[MP]
    sealed = bytes(row["session_key_enc"])
    assert issued.encode() not in sealed
    assert identity.deps.vault.open(sealed, bound_to=session_key_binding(MP, row["openid"])) == issued
    member = await identity.member(login["member_id"])
    assert "session_key" not in repr(member)


async def late_unionid_members(identity: Identity) -> tuple[dict[str, Any], str, str]:
    """A person whose apps are bound to the Open Platform only after they followed and logged in."""
    user = await identity.sandbox.user(unionid_bound=False)
    await identity.deliver(await identity.sandbox.follow(user, scene="store_1"))
    follower = await identity.resolve(OA, user["openids"][OA])
    assert follower is not None and follower["unionid_known"] is False
    login = await identity.login(user)
    assert login["created"] is True and login["member_id"] != follower["member_id"]
    return user, follower["member_id"], login["member_id"]


async def test_late_unionid_merges_two_members_once(identity: Identity) -> None:
    user, oa_member, mp_member = await late_unionid_members(identity)
    await identity.sandbox.bind_unionid(user)

    # The mini-program learns the unionid first: nobody else holds it, so it is only attached.
    again = await identity.login(user)
    assert again["member_id"] == mp_member and again["unionid_known"] is True
    assert await identity.published("identity.member.merged") == []

    # Then a SCAN on the service account reveals the same unionid through user/info: one person.
    scan = await identity.sandbox.follow(user, scene="counter_3")
    assert await identity.deliver(scan) == "handled"

    [merged_event] = await identity.published("identity.member.merged")
    # The older member (the follower) survives; the mini-program member becomes a tombstone.
    assert merged_event["data"]["survivor_id"] == oa_member
    assert merged_event["data"]["merged_id"] == mp_member
    assert merged_event["data"]["reason"] == "unionid"
    assert merged_event["causation_id"] == str(scan.event_id)

    survivor = await identity.member(oa_member)
    assert sorted(i["appid"] for i in survivor["identities"]) == [OA, MP]
    assert survivor["unionid_known"] is True
    old = await identity.member(mp_member)
    assert old["member_id"] == oa_member and old["resolved_from"] == mp_member
    assert (await identity.login(user))["member_id"] == oa_member

    [log] = (await identity.api.get(f"/internal/members/{mp_member}/merges")).json()
    assert log["reason"] == "unionid" and log["source_event_id"] == str(scan.event_id)
    assert log["moved"]["identities"] == 1

    # The same delivery again (inbox), and the same push under a new event id (the follow log):
    before = await identity.snapshot()
    assert await identity.deliver(scan) == "duplicate"
    replay = scan.model_copy(update={"event_id": uuid.uuid4()})
    assert await identity.deliver(replay) == "handled"
    assert await identity.snapshot() == before
    assert len(await identity.published("identity.member.merged")) == 1


async def test_operator_undoes_a_wrong_merge_and_it_stays_undone(identity: Identity) -> None:
    user, oa_member, mp_member = await late_unionid_members(identity)
    await identity.sandbox.bind_unionid(user)
    await identity.login(user)
    scan = await identity.sandbox.follow(user, scene="counter_3")
    await identity.deliver(scan)
    [log] = (await identity.api.get(f"/internal/members/{oa_member}/merges")).json()

    r = await identity.api.post(f"/internal/merges/{log['merge_id']}/undo", json={"reason": "two people, one phone"})
    assert r.status_code == 200, r.text
    assert r.json()["undone_at"] is not None

    restored = await identity.member(mp_member)
    assert restored["member_id"] == mp_member and "resolved_from" not in restored
    assert [i["appid"] for i in restored["identities"]] == [MP]
    assert restored["unionid_known"] is True  # it held the unionid before the merge
    survivor = await identity.member(oa_member)
    assert [i["appid"] for i in survivor["identities"]] == [OA]
    [unmerged] = await identity.published("identity.member.unmerged")
    assert unmerged["data"] == {
        "survivor_id": oa_member,
        "restored_id": mp_member,
        "merge_id": log["merge_id"],
        "reason": "two people, one phone",
    }
    # Each identity that went back is announced as linked to the restored member (notify's projection).
    relinked = [
        e["data"] for e in await identity.published("identity.member.linked") if e["data"]["source"] == "unmerge"
    ]
    assert [(d["member_id"], d["appid"], d["openid"]) for d in relinked] == [(mp_member, MP, user["openids"][MP])]

    # The evidence that merged them arrives again: the pair is blocked, nothing merges.
    await identity.deliver(scan.model_copy(update={"event_id": uuid.uuid4()}))
    await identity.deliver(await identity.sandbox.follow(user, scene="counter_4"))
    assert len(await identity.published("identity.member.merged")) == 1
    assert (await identity.member(mp_member))["member_id"] == mp_member

    again = await identity.api.post(f"/internal/merges/{log['merge_id']}/undo", json={"reason": "twice"})
    assert again.status_code == 409


async def test_operator_merge_moves_everything_and_is_logged(identity: Identity) -> None:
    a = await identity.sandbox.user(unionid_bound=False)
    b = await identity.sandbox.user(unionid_bound=False)
    await identity.deliver(await identity.sandbox.follow(a))
    member_a = (await identity.resolve(OA, a["openids"][OA]) or {})["member_id"]
    member_b = (await identity.login(b))["member_id"]
    r = await identity.api.post(
        "/internal/merges", json={"member_ids": [member_b, member_a], "detail": "same person, confirmed by phone"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["survivor_id"] == member_a and r.json()["merged_id"] == member_b
    assert (await identity.member(member_b))["member_id"] == member_a
    same = await identity.api.post("/internal/merges", json={"member_ids": [member_b, member_a], "detail": "again"})
    assert same.status_code == 409


async def test_concurrent_first_contact_from_two_apps_converges_on_one_member(identity: Identity) -> None:
    users = [await identity.sandbox.user() for _ in range(8)]
    follows = [await identity.sandbox.follow(u, scene=f"s{i}") for i, u in enumerate(users)]
    codes = [await identity.sandbox.login_code(u) for u in users]

    async def login(code: str) -> dict[str, Any]:
        r = await identity.api.post("/internal/logins", json={"appid": MP, "code": code})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    # Each person's follow and login race each other (and everyone else's).
    results = await asyncio.gather(*(identity.deliver(f) for f in follows), *(login(c) for c in codes))
    assert results[: len(users)] == ["handled"] * len(users)

    assert await identity.count("SELECT count(*) FROM members") == len(users)
    for user in users:
        via_oa = await identity.resolve(OA, user["openids"][OA])
        via_mp = await identity.resolve(MP, user["openids"][MP])
        assert via_oa is not None and via_mp is not None
        assert via_oa["member_id"] == via_mp["member_id"]
    assert len(await identity.published("identity.member.registered")) == len(users)
    assert await identity.published("identity.member.merged") == []


async def test_concurrent_late_unionid_from_both_apps_merges_once(identity: Identity) -> None:
    user, oa_member, _ = await late_unionid_members(identity)
    await identity.sandbox.bind_unionid(user)
    scan = await identity.sandbox.follow(user, scene="again")
    code = await identity.sandbox.login_code(user)
    login = identity.api.post("/internal/logins", json={"appid": MP, "code": code})
    outcome, answer = await asyncio.gather(identity.deliver(scan), login)
    assert outcome == "handled" and answer.status_code == 200
    # Whichever won the race, the id the login answered now resolves to the survivor.
    assert (await identity.member(answer.json()["member_id"]))["member_id"] == oa_member
    assert len(await identity.published("identity.member.merged")) == 1
    assert await identity.count("SELECT count(*) FROM members WHERE merged_into IS NULL") == 1


async def test_the_same_event_delivered_concurrently_is_handled_once(identity: Identity) -> None:
    user = await identity.sandbox.user()
    follow = await identity.sandbox.follow(user)
    outcomes = await asyncio.gather(*(identity.deliver(follow) for _ in range(4)))
    assert sorted(outcomes) == ["duplicate"] * 3 + ["handled"]
    assert await identity.count("SELECT count(*) FROM members") == 1


@pytest.mark.parametrize("twice", ["same event id", "new event id"])
async def test_every_consumed_event_delivered_twice_is_a_no_op(identity: Identity, twice: str) -> None:
    user = await identity.sandbox.user()
    steps = [
        await identity.sandbox.follow(user, scene="qr_a"),
        await identity.sandbox.follow(user, scene="qr_b"),  # SCAN
        await identity.sandbox.unfollow(user),
    ]
    for event in steps:
        assert await identity.deliver(event) == "handled"
        before = await identity.snapshot()
        again = event if twice == "same event id" else event.model_copy(update={"event_id": uuid.uuid4()})
        await identity.deliver(again)
        assert await identity.snapshot() == before, f"{event.type} delivered twice changed something"


async def test_follow_lifecycle_keeps_first_and_last_touch(identity: Identity) -> None:
    user = await identity.sandbox.user()
    await identity.deliver(await identity.sandbox.follow(user, scene="store_1"))
    await identity.deliver(await identity.sandbox.follow(user, scene="poster_2"))  # SCAN while following
    await identity.deliver(await identity.sandbox.unfollow(user))
    resubscribe = await identity.sandbox.follow(user, scene="event_3")
    await identity.deliver(resubscribe)

    member = await identity.resolve(OA, user["openids"][OA])
    assert member is not None
    [follow] = member["follows"]
    assert follow["subscribed"] is True
    assert follow["first_scene"] == "store_1"
    assert follow["last_scene"] == "event_3"
    assert follow["subscribe_count"] == 2
    changes = [e["data"]["change"] for e in await identity.published("identity.follow.changed")]
    assert changes == ["subscribe", "scan", "unsubscribe", "subscribe"]
    scenes = await identity.sql("SELECT change, scene FROM follow_events ORDER BY occurred_at, id")
    assert [(r["change"], r["scene"]) for r in scenes] == [
        ("subscribe", "store_1"),
        ("scan", "poster_2"),
        ("unsubscribe", None),
        ("subscribe", "event_3"),
    ]


async def test_a_late_retry_of_an_older_push_does_not_flip_the_follow_back(identity: Identity) -> None:
    user = await identity.sandbox.user()
    subscribe = await identity.sandbox.follow(user)
    await identity.deliver(subscribe)
    payload = dict(subscribe.data["payload"])
    unsubscribe_later = oa_event(payload | {"Event": "unsubscribe", "CreateTime": str(int(payload["CreateTime"]) + 60)})
    await identity.deliver(unsubscribe_later)
    # A subscribe from before the unsubscribe, delivered late (e.g. re-driven from the DLQ).
    stale = oa_event(payload | {"CreateTime": str(int(payload["CreateTime"]) - 30)})
    await identity.deliver(stale)
    member = await identity.resolve(OA, user["openids"][OA])
    assert member is not None and member["follows"][0]["subscribed"] is False


async def test_an_unsubscribe_from_someone_unknown_creates_nobody(identity: Identity) -> None:
    user = await identity.sandbox.user()
    await identity.sandbox.follow(user)  # followed before Siyu was listening: never delivered
    assert await identity.deliver(await identity.sandbox.unfollow(user)) == "handled"
    assert await identity.count("SELECT count(*) FROM members") == 0
    assert await identity.published() == []


async def test_a_follower_gone_before_user_info_is_still_recorded(identity: Identity) -> None:
    user = await identity.sandbox.user()
    subscribe = await identity.sandbox.follow(user, scene="flash")
    await identity.sandbox.post("/sandbox/faults", {"path": "/cgi-bin/user/info", "errcode": 40003})
    assert await identity.deliver(subscribe) == "handled"
    member = await identity.resolve(OA, user["openids"][OA])
    assert member is not None and member["unionid_known"] is False
    assert member["follows"][0]["first_scene"] == "flash"
