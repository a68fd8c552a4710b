"""Tags, segments, and their mirror on WeChat: user tags and conditional menus (through the sandbox)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.identity.behaviour.service import BehaviourService
from services.identity.members.service import utcnow
from tests.integration.identity_fixtures import OA, Identity, identity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

__all__ = ["identity"]


async def record_orders(identity: Identity, member_id: str, n: int) -> None:
    """What commerce's paid-order events will feed in (no commerce events exist yet)."""
    async with identity.db.unit_of_work() as uow:
        service = BehaviourService(uow)
        for _ in range(n):
            await service.record_order(uuid.UUID(member_id), amount_fen=9900, at=utcnow())


async def follower(identity: Identity, scene: str | None = None) -> tuple[dict[str, Any], str]:
    user = await identity.sandbox.user()
    await identity.deliver(await identity.sandbox.follow(user, scene=scene))
    found = await identity.resolve(OA, user["openids"][OA])
    assert found is not None
    return user, found["member_id"]


async def test_rule_tags_follow_what_identity_knows(identity: Identity) -> None:
    user, member = await follower(identity)
    assert (await identity.member(member))["tags"] == ["new_member", "follower"]
    await record_orders(identity, member, 1)
    assert (await identity.member(member))["tags"] == ["new_member", "buyer", "follower"]
    await record_orders(identity, member, 2)
    assert (await identity.member(member))["tags"] == ["new_member", "frequent_buyer", "buyer", "follower"]
    await identity.deliver(await identity.sandbox.unfollow(user))
    assert "follower" not in (await identity.member(member))["tags"]
    changes = [
        (e["data"]["added"], e["data"]["removed"]) for e in await identity.published("identity.member.tags_changed")
    ]
    assert changes == [
        (["follower", "new_member"], []),
        (["buyer"], []),
        (["frequent_buyer"], []),
        ([], ["follower"]),
    ]


async def test_time_based_rules_are_refreshed_by_the_sweep(identity: Identity) -> None:
    old_user, old = await follower(identity)
    _, fresh = await follower(identity)
    await identity.sql("UPDATE members SET created_at = now() - interval '100 days' WHERE id = $1", uuid.UUID(old))
    await identity.sql(
        "UPDATE profiles SET last_active_at = now() - interval '95 days' WHERE member_id = $1", uuid.UUID(old)
    )
    r = await identity.api.post("/internal/rules/refresh", json={"limit": 1})
    assert r.status_code == 200
    page = r.json()
    assert page["refreshed"] == 1 and page["next_after"] is not None
    rest = await identity.api.post("/internal/rules/refresh", json={"after": page["next_after"], "limit": 1})
    assert rest.json()["refreshed"] == 1
    done = await identity.api.post("/internal/rules/refresh", json={"after": rest.json()["next_after"], "limit": 1})
    assert done.json() == {"refreshed": 0, "changed": 0, "next_after": None}
    assert (await identity.member(old))["tags"] == ["follower", "lapsed"]
    assert (await identity.member(fresh))["tags"] == ["new_member", "follower"]
    # Coming back (a login through the mini-program) ends "lapsed" at once.
    await identity.login(old_user)
    assert (await identity.member(old))["tags"] == ["follower"]


async def test_operator_tags_and_segments(identity: Identity) -> None:
    assert (
        await identity.api.post("/internal/tags", json={"name": "vip", "description": "key account"})
    ).status_code == 201
    assert (await identity.api.post("/internal/tags", json={"name": "vip"})).status_code == 409
    assert (await identity.api.post("/internal/tags", json={"name": "buyer"})).status_code == 409
    assert (await identity.api.post("/internal/tags", json={"name": "has space"})).status_code == 422
    long_cjk = "会员" * 6  # 36 bytes: too long for a WeChat tag
    assert (await identity.api.post("/internal/tags", json={"name": long_cjk, "wechat_sync": True})).status_code == 422

    members = [(await follower(identity))[1] for _ in range(3)]
    for m in members[:2]:
        r = await identity.api.post(f"/internal/members/{m}/tags", json={"add": ["vip"], "operator": "ops@brand"})
        assert r.status_code == 200 and "vip" in r.json()["tags"]
    await record_orders(identity, members[1], 1)

    before = await identity.snapshot()
    refused = [
        ({"add": ["buyer"], "operator": "ops"}, 422),  # rule tags are computed
        ({"add": ["nope"], "operator": "ops"}, 404),
        ({"add": ["vip"], "remove": ["vip"], "operator": "ops"}, 422),
        ({"add": ["vip"]}, 422),
        ({"add": ["vip"], "operator": "ops", "by": "rules"}, 422),
    ]
    for body, status in refused:
        r = await identity.api.post(f"/internal/members/{members[2]}/tags", json=body)
        assert r.status_code == status, (body, r.text)
    assert await identity.snapshot() == before

    seg = {"name": "vip_not_buyers", "all_tags": ["vip"], "none_tags": ["buyer"]}
    assert (await identity.api.post("/internal/segments", json=seg)).status_code == 201
    assert (await identity.api.post("/internal/segments", json=seg)).status_code == 409
    assert (await identity.api.post("/internal/segments", json={"name": "x", "all_tags": ["nope"]})).status_code == 422
    page = (await identity.api.get("/internal/members", params={"segment": "vip_not_buyers"})).json()
    assert [m["member_id"] for m in page["members"]] == [members[0]]
    assert page["members"][0]["following"] == [OA]
    assert page["members"][0]["identities"][0]["appid"] == OA

    seen: list[str] = []
    after = None
    while True:
        params = {"tag": "follower", "limit": 2} | ({"after": after} if after else {})
        body = (await identity.api.get("/internal/members", params=params)).json()
        seen += [m["member_id"] for m in body["members"]]
        after = body["next_after"]
        if after is None:
            break
    assert sorted(seen) == sorted(members) and len(seen) == 3
    assert (await identity.api.get("/internal/members", params={"segment": "nope"})).status_code == 404
    assert (await identity.api.get("/internal/members")).status_code == 422
    assert (await identity.api.get("/internal/members", params={"tag": "vip", "limit": 501})).status_code == 422


async def test_a_merge_carries_operator_tags_and_an_undo_gives_them_back(identity: Identity) -> None:
    await identity.api.post("/internal/tags", json={"name": "vip"})
    user = await identity.sandbox.user(unionid_bound=False)
    await identity.deliver(await identity.sandbox.follow(user))
    oa_member = (await identity.resolve(OA, user["openids"][OA]) or {})["member_id"]
    mp_member = (await identity.login(user))["member_id"]
    await identity.api.post(f"/internal/members/{mp_member}/tags", json={"add": ["vip"], "operator": "ops"})
    await identity.sandbox.bind_unionid(user)
    await identity.login(user)
    await identity.deliver(await identity.sandbox.follow(user, scene="x"))
    assert "vip" in (await identity.member(oa_member))["tags"]
    [log] = (await identity.api.get(f"/internal/members/{oa_member}/merges")).json()
    await identity.api.post(f"/internal/merges/{log['merge_id']}/undo", json={"reason": "test"})
    assert "vip" not in (await identity.member(oa_member))["tags"]
    assert "vip" in (await identity.member(mp_member))["tags"]


# --- WeChat user tags and conditional menus ------------------------------------------------------------


def sandbox_book(identity: Identity) -> Any:
    return identity.sandbox.app.state.sandbox.book(OA)


def wechat_tags_of(identity: Identity, user: dict[str, Any]) -> set[str]:
    book = sandbox_book(identity)
    return {book.all_tags()[t] for t in book.tags_of(user["user_id"])}


async def test_tags_are_mirrored_on_wechat_in_batches_of_50(identity: Identity) -> None:
    users = [(await follower(identity))[0] for _ in range(60)]
    buyer = await identity.resolve(OA, users[0]["openids"][OA])
    assert buyer is not None
    await record_orders(identity, buyer["member_id"], 3)
    await identity.api.post("/internal/tags", json={"name": "vip", "wechat_sync": True, "priority": 5})
    await identity.api.post(f"/internal/members/{buyer['member_id']}/tags", json={"add": ["vip"], "operator": "ops"})

    r = await identity.api.post("/internal/wechat/tag-sync", json={"appid": OA})
    assert r.status_code == 200, r.text
    report = r.json()
    assert sorted(report["tags_created"]) == ["buyer", "frequent_buyer", "new_member", "vip"]
    assert report["tagged"] == 60 + 3  # everyone is new; one is also a (frequent) buyer and vip
    assert report["calls"] == 2 + 3  # new_member: 50 + 10; buyer, frequent_buyer, vip: 1 each
    assert wechat_tags_of(identity, users[0]) == {"new_member", "buyer", "frequent_buyer", "vip"}
    assert wechat_tags_of(identity, users[1]) == {"new_member"}

    again = (await identity.api.post("/internal/wechat/tag-sync", json={"appid": OA})).json()
    assert (again["tagged"], again["untagged"], again["calls"], again["tags_created"]) == (0, 0, 0, [])

    await identity.api.post(f"/internal/members/{buyer['member_id']}/tags", json={"remove": ["vip"], "operator": "ops"})
    third = (await identity.api.post("/internal/wechat/tag-sync", json={"appid": OA})).json()
    assert (third["tagged"], third["untagged"], third["calls"]) == (0, 1, 1)
    assert wechat_tags_of(identity, users[0]) == {"new_member", "buyer", "frequent_buyer"}


async def test_a_follower_at_wechats_20_tag_limit_is_skipped_not_fatal(identity: Identity) -> None:
    crowded, _ = await follower(identity)
    plain, _ = await follower(identity)
    book = sandbox_book(identity)
    for i in range(20):  # tags set by hand in the WeChat admin console
        tag_id, _ = book.create_tag(f"manual_{i}")
        book.tag_users(tag_id, [crowded["user_id"]])
    report = (await identity.api.post("/internal/wechat/tag-sync", json={"appid": OA})).json()
    assert report["skipped_user_limit"] == 1
    assert report["tagged"] == 1
    assert wechat_tags_of(identity, plain) == {"new_member"}
    assert "new_member" not in wechat_tags_of(identity, crowded)


async def test_conditional_menus_show_each_audience_its_entry(identity: Identity) -> None:
    newbie, _ = await follower(identity)
    buyer, buyer_id = await follower(identity)
    loyal, loyal_id = await follower(identity)
    veteran, veteran_id = await follower(identity)
    await record_orders(identity, buyer_id, 1)
    await record_orders(identity, loyal_id, 3)
    await identity.sql(
        "UPDATE members SET created_at = now() - interval '60 days' WHERE id = $1", uuid.UUID(veteran_id)
    )
    await identity.api.post("/internal/rules/refresh", json={})
    assert (await identity.api.post("/internal/wechat/tag-sync", json={"appid": OA})).status_code == 200

    r = await identity.api.post("/internal/wechat/menus", json={"appid": OA})
    assert r.status_code == 200, r.text
    assert [m["tag"] for m in r.json()["conditional"]] == ["new_member", "buyer", "frequent_buyer"]

    async def first_button(user: dict[str, Any]) -> str:
        seen = (await identity.sandbox.http.get(f"/sandbox/users/{user['user_id']}/menu", params={"appid": OA})).json()
        return str(seen["button"][0]["name"])

    assert await first_button(newbie) == "新人福利"
    assert await first_button(buyer) == "会员专享"  # also new, but the buyer menu is newer: it wins
    assert await first_button(loyal) == "积分兑换"
    assert await first_button(veteran) == "会员中心"  # the default menu

    # Publishing again replaces the conditional menus instead of stacking them.
    assert (await identity.api.post("/internal/wechat/menus", json={"appid": OA})).status_code == 200
    assert len(sandbox_book(identity).conditional) == 3


async def test_wechat_sync_refuses_apps_that_are_not_service_accounts(identity: Identity) -> None:
    for path in ("/internal/wechat/tag-sync", "/internal/wechat/menus"):
        r = await identity.api.post(path, json={"appid": "wx0000000000000002"})
        assert r.status_code == 422


async def test_the_schedule_refreshes_every_page_and_replicas_take_turns(
    identity: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.identity import schedule

    monkeypatch.setattr(schedule, "PAGE", 1)  # three members: three pages
    members = [(await follower(identity))[1] for _ in range(3)]
    for m in members:
        await identity.sql("UPDATE members SET created_at = now() - interval '100 days' WHERE id = $1", uuid.UUID(m))
    # Another replica holds the schedule lock: this one skips the round and changes nothing.
    async with identity.db.unit_of_work() as other:
        await other.conn.execute("SELECT pg_advisory_xact_lock($1)", schedule.LOCK_KEY)
        assert await schedule.refresh_all_rules(identity.deps) == 0
    assert ["new_member" in (await identity.member(m))["tags"] for m in members] == [True] * 3
    assert await schedule.refresh_all_rules(identity.deps) == 3
    assert ["new_member" in (await identity.member(m))["tags"] for m in members] == [False] * 3
    assert await schedule.refresh_all_rules(identity.deps) == 0  # idempotent
