"""commerce's paid orders and gifts, delivered to identity's real consumer, become the profile
counters behind the buyer, frequent_buyer, gift_giver and gift_receiver rule tags — once per event —
and tier changes become the member's one tier tag."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.events.commerce import GiftAccepted, GiftSent, OrderPaid, TierChanged
from shared.events.envelope import Envelope
from tests.integration.identity_fixtures import Identity, identity
from tests.integration.test_identity_tags import follower

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

__all__ = ["identity"]

SHOP = "wx0000000000000003"


def paid(member_id: str | None, order_id: str, fen: int = 9900) -> Envelope:
    data = OrderPaid(
        order_id=order_id,
        shop_appid=SHOP,
        member_id=member_id,
        status=20,
        paid_fen=fen,
        title="礼盒",
        item_count=1,
        update_time=1_764_800_000,
        paid_at=datetime.now(UTC),
    )
    return Envelope.wrap(data, producer="commerce")


def gift(cls: type[GiftSent] | type[GiftAccepted], giver: str | None, recipient: str | None) -> Envelope:
    extra = {"expires_at": datetime.now(UTC)} if cls is GiftSent else {}
    data = cls(
        present_order_id=f"p{uuid.uuid4().int % 10**18}",
        order_id=f"{uuid.uuid4().int % 10**19}",
        shop_appid=SHOP,
        giver_member_id=giver,
        recipient_member_id=recipient,
        title="礼盒",
        paid_fen=9900,
        **extra,
    )
    return Envelope.wrap(data, producer="commerce")


async def profile(identity: Identity, member_id: str) -> tuple[int, int, int, int]:
    [row] = await identity.sql(
        "SELECT orders, spent_fen, gifts_sent, gifts_received FROM profiles WHERE member_id = $1", uuid.UUID(member_id)
    )
    return row["orders"], row["spent_fen"], row["gifts_sent"], row["gifts_received"]


async def test_paid_orders_make_a_buyer_then_a_frequent_buyer_each_counted_once(identity: Identity) -> None:
    _, member = await follower(identity)
    first = paid(member, "3700000000000000001")
    assert await identity.deliver(first) == "handled"
    assert await identity.deliver(first) == "duplicate"  # the same event again counts nothing
    assert await profile(identity, member) == (1, 9900, 0, 0)
    assert "buyer" in (await identity.member(member))["tags"]
    for n in (2, 3):
        assert await identity.deliver(paid(member, f"370000000000000000{n}")) == "handled"
    assert await profile(identity, member) == (3, 29700, 0, 0)
    assert {"buyer", "frequent_buyer"} <= set((await identity.member(member))["tags"])
    added = [e["data"]["added"] for e in await identity.published("identity.member.tags_changed")]
    assert added[-2:] == [["buyer"], ["frequent_buyer"]]


async def test_a_gift_tags_its_giver_and_on_acceptance_its_recipient(identity: Identity) -> None:
    _, giver = await follower(identity)
    _, recipient = await follower(identity)
    sent = gift(GiftSent, giver, None)
    assert await identity.deliver(sent) == "handled"
    assert await identity.deliver(sent) == "duplicate"
    accepted = gift(GiftAccepted, giver, recipient)
    assert await identity.deliver(accepted) == "handled"
    assert await identity.deliver(accepted) == "duplicate"
    assert await profile(identity, giver) == (0, 0, 1, 0)
    assert await profile(identity, recipient) == (0, 0, 0, 1)
    assert "gift_giver" in (await identity.member(giver))["tags"]
    assert "gift_receiver" in (await identity.member(recipient))["tags"]
    assert "gift_receiver" not in (await identity.member(giver))["tags"]


async def test_an_order_of_a_merged_member_counts_for_the_survivor(identity: Identity) -> None:
    async def shop_buyer() -> str:
        body = {"appid": SHOP, "openid": f"o{uuid.uuid4().hex[:16]}", "source": "shop_order"}
        answer = await identity.api.post("/internal/identities", json=body)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["member_id"])

    older, newer = await shop_buyer(), await shop_buyer()
    r = await identity.api.post("/internal/merges", json={"member_ids": [older, newer], "detail": "the same person"})
    assert r.status_code == 201, r.text
    survivor = str(r.json()["survivor_id"])
    merged = newer if survivor == older else older
    assert await identity.deliver(paid(merged, "3700000000000000009")) == "handled"
    assert (await profile(identity, survivor))[0] == 1


@pytest.mark.parametrize("member", [None, str(uuid.UUID(int=7))], ids=["no member", "unknown member"])
async def test_an_order_for_no_or_an_unknown_member_changes_nothing_and_is_not_retried(
    identity: Identity, member: str | None
) -> None:
    before = await identity.snapshot()
    assert await identity.deliver(paid(member, "3700000000000000010")) == "handled"
    after = await identity.snapshot()
    # Only the inbox row of the handled event is new.
    assert after == before


async def test_a_paid_order_with_malformed_data_is_poison_and_writes_nothing(identity: Identity) -> None:
    _, member = await follower(identity)
    bad = paid(member, "3700000000000000011").model_copy(update={"data": {"order_id": 5}})
    with pytest.raises(Exception, match="invalid data"):
        await identity.deliver(bad)
    assert await profile(identity, member) == (0, 0, 0, 0)


def tier(member_id: str, old: str, new: str, at: datetime | None = None) -> Envelope:
    data = TierChanged(
        member_id=member_id,
        old_tier=old,
        new_tier=new,
        direction="up" if new != "base" else "down",
        spend_12m_fen=500_000,
        multiplier_pct=150,
    )
    envelope = Envelope.wrap(data, producer="commerce")
    return envelope if at is None else envelope.model_copy(update={"occurred_at": at})


async def test_the_tier_is_one_tier_tag_that_follows_each_change_once(identity: Identity) -> None:
    _, member = await follower(identity)
    up = tier(member, "base", "silver")
    assert await identity.deliver(up) == "handled"
    assert await identity.deliver(up) == "duplicate"
    assert "tier_silver" in (await identity.member(member))["tags"]
    assert await identity.deliver(tier(member, "silver", "gold")) == "handled"
    tags = (await identity.member(member))["tags"]
    assert "tier_gold" in tags and "tier_silver" not in tags
    changes = [
        (e["data"]["added"], e["data"]["removed"], e["data"]["by"])
        for e in await identity.published("identity.member.tags_changed")
        if e["data"]["by"] == "tier"
    ]
    assert changes == [(["tier_silver"], [], "tier"), (["tier_gold"], ["tier_silver"], "tier")]
    # A tier tag is synced to WeChat (conditional menus target it) and is not the operator's to set.
    [row] = await identity.sql("SELECT kind, wechat_sync FROM tags WHERE name = 'tier_gold'")
    assert (row["kind"], row["wechat_sync"]) == ("tier", True)
    r = await identity.api.post(f"/internal/members/{member}/tags", json={"remove": ["tier_gold"], "operator": "ops"})
    assert r.status_code == 422
    r = await identity.api.post("/internal/tags", json={"name": "tier_vip", "description": "x"})
    assert r.status_code == 422


async def test_concurrent_tier_changes_of_many_members_make_one_tag(identity: Identity) -> None:
    members = [(await follower(identity))[1] for _ in range(6)]
    outcomes = await asyncio.gather(*(identity.deliver(tier(m, "base", "silver")) for m in members))
    assert outcomes == ["handled"] * len(members)
    assert await identity.count("SELECT count(*) FROM tags WHERE name = 'tier_silver'") == 1
    for m in members:
        assert "tier_silver" in (await identity.member(m))["tags"]


async def test_a_tier_that_makes_no_tag_name_is_poison_and_writes_nothing(identity: Identity) -> None:
    _, member = await follower(identity)
    with pytest.raises(Exception, match="does not make a tag name"):
        await identity.deliver(tier(member, "base", "金卡 VIP!"))
    assert await identity.count("SELECT count(*) FROM tags WHERE kind = 'tier'") == 0


async def test_a_tier_change_older_than_the_members_tier_changes_nothing(identity: Identity) -> None:
    _, member = await follower(identity)
    t0 = datetime.now(UTC)
    # silver→gold is handled first; the base→silver before it comes late (a retry): gold stays.
    assert await identity.deliver(tier(member, "silver", "gold", at=t0 + timedelta(seconds=10))) == "handled"
    assert await identity.deliver(tier(member, "base", "silver", at=t0)) == "handled"
    tags = (await identity.member(member))["tags"]
    assert "tier_gold" in tags and "tier_silver" not in tags
    by_tier = [e for e in await identity.published("identity.member.tags_changed") if e["data"]["by"] == "tier"]
    assert len(by_tier) == 1
