"""The WeChat tag mirror at scale and after a crash: followers streamed in chunks, the decision
committed per chunk, WeChat called outside any transaction, resumable from the persisted cursor.

The sandbox stands in for WeChat (in-process); followers are written to identity's tables in bulk
and given to the sandbox directly, so tens of thousands take seconds to set up.
"""

from __future__ import annotations

import math
import tracemalloc
import uuid
from typing import Any

import pytest

from services.identity.wechat_sync.service import WeChatMirror
from tests.integration.identity_fixtures import OA, Identity, identity
from tools.wechat_sandbox.state import Follow, VirtualUser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

__all__ = ["identity"]

BULK_FOLLOWERS = 30_000
PAGE = 2_000


async def bulk_followers(identity: Identity, n: int, *, prefix: str, buyers_every: int = 10) -> list[str]:
    """``n`` members following the service account (every ``buyers_every``-th a buyer), written with
    a few statements, and the same people as followers in the sandbox. Their openids."""
    await identity.api.get("/internal/tags")  # the rule tags exist
    openids = [f"o{prefix}{i:08d}{'x' * 10}" for i in range(n)]
    async with identity.db.connection() as conn:
        await conn.execute(
            """
            WITH src AS (
                SELECT gen_random_uuid() AS id, o, ord FROM unnest($1::text[]) WITH ORDINALITY AS x (o, ord)
            ), m AS (
                INSERT INTO members (id, source) SELECT id, 'oa_subscribe' FROM src
            ), p AS (
                INSERT INTO profiles (member_id, orders) SELECT id, CASE WHEN ord % $3 = 0 THEN 1 ELSE 0 END FROM src
            ), i AS (
                INSERT INTO app_identities (member_id, appid, app_kind, openid, learned_via)
                SELECT id, $2, 'official_account', o, 'oa_subscribe' FROM src
            ), f AS (
                INSERT INTO follows (member_id, appid, openid, subscribed, subscribe_count, state_at)
                SELECT id, $2, o, true, 1, now() FROM src
            )
            INSERT INTO member_tags (member_id, tag_id, added_by)
            SELECT src.id, t.id, 'rules' FROM src JOIN tags t
              ON t.name = 'new_member' OR (t.name = 'buyer' AND src.ord % $3 = 0)
            """,
            openids,
            OA,
            buyers_every,
        )
    # The fake WeChat knows them as followers (its own create_user is meant for a handful of users).
    state = identity.sandbox.app.state.sandbox
    for i, openid in enumerate(openids):
        user = VirtualUser(
            user_id=f"{prefix}{i}",
            nickname=f"bulk {i}",
            unionid=f"u{prefix}{i:08d}",
            openids={OA: openid},
            follows={OA: Follow(following=True)},
        )
        state.users[user.user_id] = user
        state._by_openid[(OA, openid)] = user
    return openids


def sandbox_fans(identity: Identity, tag_name: str) -> int:
    book = identity.sandbox.app.state.sandbox.book(OA)
    ids = [tid for tid, name in book.all_tags().items() if name == tag_name]
    return len(book.fans.get(ids[0], [])) if ids else 0


async def test_a_large_follower_list_is_synced_in_chunks_in_bounded_memory(identity: Identity) -> None:
    await bulk_followers(identity, BULK_FOLLOWERS, prefix="big")
    mirror = WeChatMirror(identity.deps, follower_page=PAGE)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        report = await mirror.sync_tags(OA)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    buyers = BULK_FOLLOWERS // 10
    assert report["followers"] == BULK_FOLLOWERS
    assert report["chunks"] == math.ceil(BULK_FOLLOWERS / PAGE) + (BULK_FOLLOWERS % PAGE == 0)
    assert report["tagged"] == BULK_FOLLOWERS + buyers
    # Batches of 50 per chunk: 2,000 new members and 200 buyers in each.
    assert report["calls"] == (BULK_FOLLOWERS // PAGE) * (PAGE // 50 + (PAGE // 10) // 50)
    assert sandbox_fans(identity, "new_member") == BULK_FOLLOWERS
    assert sandbox_fans(identity, "buyer") == buyers
    assert await identity.count("SELECT count(*) FROM wechat_user_tags") == BULK_FOLLOWERS + buyers
    assert await identity.count("SELECT count(*) FROM wechat_sync_attempts WHERE state <> 'done'") == 0
    # What the sync held at its peak, beyond what it left behind (the sandbox keeps its 33,000 new
    # tag memberships): one chunk's worth, not the follower list. Holding every follower's openid
    # and tags at once (as the sync did before chunking) costs well over this.
    transient = peak - after
    print(f"tag sync of {BULK_FOLLOWERS} followers: transient peak {transient / 1e6:.2f} MB")
    assert transient < 3_000_000, f"transient peak {transient} bytes, retained {after - before}"

    again = await mirror.sync_tags(OA)
    assert (again["tagged"], again["untagged"], again["calls"]) == (0, 0, 0)


async def test_a_sync_that_dies_half_way_resumes_from_its_cursor(identity: Identity) -> None:
    openids = await bulk_followers(identity, 1_200, prefix="res", buyers_every=1_000_000)
    mirror = WeChatMirror(identity.deps, follower_page=500)
    # WeChat refuses the first tagging call (daily quota): the run dies after deciding its first chunk.
    await identity.sandbox.post(
        "/sandbox/faults", {"path": "/cgi-bin/tags/members/batchtagging", "errcode": 45009, "count": 1}
    )
    with pytest.raises(Exception, match=r"45009|quota"):
        await mirror.sync_tags(OA)
    [job] = await identity.sql("SELECT cursor, lease_owner, finished_at FROM wechat_sync_jobs WHERE job = 'tag_sync'")
    assert job["cursor"] == sorted(openids)[499]  # the first chunk's decision was committed
    assert job["lease_owner"] is None and job["finished_at"] is None  # released, not finished
    pending = await identity.count("SELECT count(*) FROM wechat_sync_attempts WHERE state = 'pending'")
    assert pending == 10  # 500 openids in batches of 50, none sent

    report = await mirror.sync_tags(OA)
    assert report["resumed"] is True
    assert report["followers"] == 700  # the rest after the cursor; the first chunk was not decided again
    assert report["tagged"] == 1_200
    assert sandbox_fans(identity, "new_member") == 1_200
    assert await identity.count("SELECT count(*) FROM wechat_sync_attempts") == 24  # 10 + 10 + 4, once each
    assert await identity.count("SELECT count(*) FROM wechat_sync_attempts WHERE state = 'pending'") == 0
    [job] = await identity.sql("SELECT cursor, finished_at FROM wechat_sync_jobs WHERE job = 'tag_sync'")
    assert job["cursor"] is None and job["finished_at"] is not None


async def test_one_sync_at_a_time_per_account(identity: Identity) -> None:
    await bulk_followers(identity, 10, prefix="lease")
    other = uuid.uuid4()
    await identity.sql(
        "INSERT INTO wechat_sync_jobs (appid, job, lease_owner, lease_until) "
        "VALUES ($1, 'tag_sync', $2, now() + interval '1 minute')",
        OA,
        other,
    )
    before = await identity.snapshot()
    r = await identity.api.post("/internal/wechat/tag-sync", json={"appid": OA})
    assert r.status_code == 409, r.text
    assert await identity.snapshot() == before
    assert sandbox_fans(identity, "new_member") == 0
    # A holder that died: its lease runs out and the next run goes ahead.
    await identity.sql("UPDATE wechat_sync_jobs SET lease_until = now() - interval '1 second'")
    r = await identity.api.post("/internal/wechat/tag-sync", json={"appid": OA})
    assert r.status_code == 200, r.text
    assert r.json()["tagged"] == 10 + 1  # one of the ten is a buyer


async def test_a_follower_who_left_is_forgotten_not_untagged(identity: Identity) -> None:
    openids = await bulk_followers(identity, 60, prefix="gone", buyers_every=1_000_000)
    mirror = WeChatMirror(identity.deps, follower_page=25)
    assert (await mirror.sync_tags(OA))["tagged"] == 60
    await identity.sql("UPDATE follows SET subscribed = false WHERE openid = ANY($1::text[])", openids[:7])
    report = await mirror.sync_tags(OA)
    assert (report["forgotten"], report["untagged"], report["calls"]) == (7, 0, 0)
    rows: list[Any] = await identity.sql("SELECT openid FROM wechat_user_tags ORDER BY openid")
    assert [r["openid"] for r in rows] == sorted(openids[7:])
