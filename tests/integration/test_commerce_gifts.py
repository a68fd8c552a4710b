"""Gifting against the sandbox shop: the state machine, the same-price swap, expiry and refund, the
giver's points, and that the giver never sees where the recipient lives."""

from __future__ import annotations

import json

import pytest

from services.commerce.jobs import housekeeping_once
from tests.integration import commerce_fixtures
from tests.integration.commerce_fixtures import Commerce
from tests.integration.test_commerce_orders import sku

pytestmark = pytest.mark.integration
commerce = commerce_fixtures.commerce


async def test_a_gift_accepted_with_a_swap_then_completed_earns_the_giver_points(commerce: Commerce) -> None:
    c = commerce
    giver, recipient = await c.sandbox.user(), await c.sandbox.user(nickname="收礼人")
    white, black = await sku(c, product=1, index=0), await sku(c, product=1, index=1)  # both 9900 fen
    order_id, present_id = await c.sandbox.gift(giver, white)
    await c.sandbox.act(order_id, "pay")
    await c.deliver_pushes()
    giver_member = await c.member_of(giver)
    sent = (await c.published("commerce.gift.sent"))[0]["data"]
    assert sent["giver_member_id"] == giver_member and sent["present_order_id"] == present_id
    assert sent["recipient_member_id"] is None and sent["paid_fen"] == 9900
    assert (await c.points(giver_member))["pending"] == 0  # not before the gift completes

    await c.sandbox.accept(present_id, recipient, sku_id=black["sku_id"])
    await c.deliver_pushes()
    recipient_member = await c.member_of(recipient)
    accepted = (await c.published("commerce.gift.accepted"))[0]["data"]
    assert accepted["recipient_member_id"] == recipient_member and accepted["recipient_is_new"] is True
    assert (accepted["swapped"], accepted["original_sku_id"], accepted["accepted_sku_id"]) == (
        True,
        white["sku_id"],
        black["sku_id"],
    )
    for action in ("ship", "confirm"):
        await c.sandbox.act(order_id, action)
    await c.deliver_pushes()
    assert (await c.points(giver_member))["pending"] == 99
    assert (await c.published("commerce.gift.completed"))[0]["data"]["points_pending"] == 99
    await c.sandbox.act(order_id, "settle")
    await c.deliver_pushes()
    assert (await c.points(giver_member))["available"] == 99
    assert (await c.points(recipient_member)) == {"available": 0, "pending": 0, "expiring": []}

    gifts = (await c.api.get(f"/internal/members/{giver_member}/gifts")).json()
    assert gifts == [
        {"order_id": order_id, "present_order_id": present_id, "role": "giver", "state": "accepted", "points": 99}
    ]
    gifts = (await c.api.get(f"/internal/members/{recipient_member}/gifts")).json()
    assert gifts == [
        {"order_id": order_id, "present_order_id": present_id, "role": "recipient", "state": "accepted", "points": 0}
    ]
    received = (await c.api.get(f"/internal/members/{recipient_member}/orders")).json()
    assert received == [{"order_id": order_id, "status": 100, "paid_fen": 9900, "is_gift": True, "points": 0}]

    # The recipient's address and phone reached commerce nowhere: not stored, not shown, not published.
    address = (await c.sandbox.get(f"/sandbox/shop/orders/{order_id}"))["order_detail"]["delivery_info"]["address_info"]
    street, phone = address["detail_info"], address["tel_number"]
    assert street and phone  # the shop has them...
    everything = json.dumps([dict(r) for r in await c.sql("SELECT * FROM orders")], default=str)
    everything += json.dumps([dict(r) for r in await c.sql("SELECT * FROM gifts")], default=str)
    everything += json.dumps(await c.published())
    everything += (await c.api.get(f"/internal/admin/members/{giver_member}")).text
    everything += (await c.api.get(f"/internal/admin/orders/{order_id}")).text
    for secret in (street, phone, "tel_number", "address_info"):
        assert secret not in everything, secret  # ...commerce does not
    await c.ledger_check()


async def test_a_gift_nobody_accepts_expires_and_is_refunded(commerce: Commerce) -> None:
    c = commerce
    giver = await c.sandbox.user()
    order_id, present_id = await c.sandbox.gift(giver, await sku(c, product=2))
    await c.sandbox.act(order_id, "pay")
    await c.sandbox.expire(present_id)
    await c.deliver_pushes()
    giver_member = await c.member_of(giver)
    assert [e["type"] for e in await c.published() if e["type"].startswith("commerce.gift.")] == [
        "commerce.gift.sent",
        "commerce.gift.expired",
        "commerce.gift.refunded",
    ]
    gifts = (await c.api.get(f"/internal/members/{giver_member}/gifts")).json()
    assert [g["state"] for g in gifts] == ["expired"]
    assert await c.points(giver_member) == {"available": 0, "pending": 0, "expiring": []}
    assert await c.published("commerce.coupon.issued") == []  # an expired gift is not an abandoned order


async def test_a_lost_expiry_push_is_found_by_the_gift_check(commerce: Commerce) -> None:
    c = commerce
    giver = await c.sandbox.user()
    order_id, present_id = await c.sandbox.gift(giver, await sku(c, product=2))
    await c.sandbox.act(order_id, "pay")
    await c.deliver_pushes()
    await c.sandbox.expire(present_id, push="none")
    assert (await housekeeping_once(c.deps))["gifts_rechecked"] == 0  # not overdue yet
    c.clock.advance(hours=24, minutes=11)
    assert (await housekeeping_once(c.deps))["gifts_rechecked"] == 1
    assert len(await c.published("commerce.gift.expired")) == 1
    assert (await housekeeping_once(c.deps))["gifts_rechecked"] == 0  # expired: no longer waiting


async def test_one_gift_per_present_order_id_whatever_the_pushes(commerce: Commerce) -> None:
    c = commerce
    giver, recipient = await c.sandbox.user(), await c.sandbox.user()
    order_id, present_id = await c.sandbox.gift(giver, await sku(c, product=1))
    await c.sandbox.act(order_id, "pay", push="twice")
    await c.sandbox.accept(present_id, recipient)
    pushes = list(c.sandbox.pushed)
    c.sandbox.pushed[:] = pushes[::-1] + pushes  # reversed, then all again
    await c.deliver_pushes()
    assert await c.val("SELECT count(*) FROM gifts") == 1
    assert len(await c.published("commerce.gift.sent")) == 1
    assert len(await c.published("commerce.gift.accepted")) == 1
    accepted = (await c.published("commerce.gift.accepted"))[0]["data"]
    assert accepted["swapped"] is False
