"""notify: transactional rules, channel choice and fallback, the ledger, receipts, idempotency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

from shared.events.commerce import OrderPaid
from tests.integration.notify_fixtures import MP, OA, Notify, notify_stack, query, sends_of, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def notify(clean_databases: dict[str, str], amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[Notify]:
    async for n in notify_stack(amqp):
        yield n


def order_paid(member_id: str, order_id: str = "3705115058471208928", **kw: Any) -> OrderPaid:
    return OrderPaid(
        order_id=order_id,
        shop_appid="wx0000000000000003",
        member_id=member_id,
        status=20,
        paid_fen=12800,
        title="山茶花精华面霜 50ml 滋润修护特别版礼盒装",
        item_count=1,
        update_time=1,
        paid_at=datetime.now(UTC),
        **kw,
    )


async def final_send(member_id: str) -> Any:
    async def done() -> Any:
        rows = await sends_of(member_id)
        return rows and rows[-1]["status"] not in ("pending",) and rows[-1]

    return await wait_for(done)


async def test_order_paid_goes_by_template_to_a_follower(notify: Notify) -> None:
    member_id, user = await notify.member(follow=True)
    await notify.publish(order_paid(member_id))
    send = await final_send(member_id)
    assert (send["status"], send["channel"]) == ("sent", "oa_template")
    [msg] = await notify.sandbox.inbox(user)
    assert msg["kind"] == "template" and msg["appid"] == OA
    assert msg["data"]["amount2"]["value"] == "¥128.00"
    assert len(msg["data"]["thing3"]["value"]) <= 20  # WeChat's thing limit, shortened
    pagepath = msg["jump"]["miniprogram"]["pagepath"]
    assert "order_id=3705115058471208928" in pagepath and f"siyu_send={send['id']}" in pagepath


async def test_an_authorised_mini_program_subscribe_message_comes_first_and_spends_the_authorisation(
    notify: Notify,
) -> None:
    member_id, user = await notify.member(follow=True)
    tid = await notify.sandbox.template_id(MP, "订单支付成功通知", "subscribe_once")
    await notify.popup(user, MP, {tid: "accept"})
    await notify.publish(order_paid(member_id, "1000000000000000001"))
    await notify.publish(order_paid(member_id, "1000000000000000002"))

    async def both() -> Any:
        rows = await sends_of(member_id)
        return len(rows) == 2 and all(r["status"] != "pending" for r in rows) and rows

    first, second = sorted(await wait_for(both), key=lambda r: r["channel"])
    # One authorisation, one subscribe message; the other order falls back to the template message.
    assert {first["channel"], second["channel"]} == {"mp_subscribe", "oa_template"}
    [left] = await query("SELECT remaining FROM authorisations WHERE template_id = $1", tid)
    assert left["remaining"] == 0
    kinds = sorted(m["kind"] for m in await notify.sandbox.inbox(user))
    assert kinds == ["subscribe", "template"]


async def test_not_following_and_no_authorisation_is_skipped_with_the_reason(notify: Notify) -> None:
    member_id, user = await notify.member(follow=False)
    await notify.publish(order_paid(member_id))
    send = await final_send(member_id)
    assert (send["status"], send["reason"], send["channel"]) == ("skipped", "not_following", None)
    assert await notify.sandbox.inbox(user) == []
    r = await notify.api.get(f"/internal/members/{member_id}/messages")
    assert r.status_code == 200
    [entry] = r.json()
    assert entry["rule"] == "order_paid" and entry["status"] == "skipped" and entry["reason"] == "not_following"


async def test_customer_service_window_is_the_last_fallback(notify: Notify) -> None:
    from shared.events.commerce import OrderRefunded

    member_id, user = await notify.member(follow=True)
    # The member unfollows (template messages impossible) but wrote to the account before: a window.
    openid = user["openids"][OA]
    await notify.push("oa", OA, openid, {"MsgType": "text", "Content": "在吗", "MsgId": "123456789"})
    await wait_for(lambda: query("SELECT 1 FROM service_windows WHERE openid = $1", openid))
    await query("UPDATE member_apps SET following = false WHERE openid = $1", openid)
    refund = OrderRefunded(
        order_id="3705115058471208928",
        shop_appid="wx0000000000000003",
        member_id=member_id,
        status=200,
        paid_fen=12800,
        title="面霜",
        item_count=1,
        update_time=1,
        after_sale_order_id="9000000000000000001",
        refunded_fen=3990,
        refunded_total_fen=3990,
        points_reversed=39,
    )
    await notify.publish(refund)
    send = await final_send(member_id)
    assert send["channel"] == "customer_service"
    # The sandbox still has the user following (only notify's projection changed), so it delivers.
    assert send["status"] == "sent"
    [msg] = await notify.sandbox.inbox(user)
    assert msg["kind"] == "customer_service"


async def test_a_redelivered_event_sends_nothing_new(notify: Notify) -> None:
    member_id, user = await notify.member(follow=True)
    envelope = await notify.publish(order_paid(member_id))
    await final_send(member_id)
    await notify.publish(order_paid(member_id), envelope=envelope)  # the same event again
    # And the same order paid again under a new event id (a producer's retry): one message per order.
    await notify.publish(order_paid(member_id))
    await wait_for(
        lambda: query(
            "SELECT 1 FROM inbox WHERE consumer = 'notify' AND event_type = 'commerce.order.paid' HAVING count(*) >= 2"
        )
    )
    assert len(await sends_of(member_id)) == 1
    assert len(await notify.sandbox.inbox(user)) == 1


async def test_template_receipt_marks_the_send_delivered(notify: Notify) -> None:
    member_id, user = await notify.member(follow=True)
    await notify.publish(order_paid(member_id))
    send = await final_send(member_id)
    [msg] = await notify.sandbox.inbox(user)
    assert send["msgid"] == msg["msgid"]
    await notify.push(
        "oa",
        OA,
        user["openids"][OA],
        {"MsgType": "event", "Event": "TEMPLATESENDJOBFINISH", "MsgID": msg["msgid"], "Status": "success"},
    )

    async def delivered() -> bool:
        return (await sends_of(member_id))[0]["status"] == "delivered"

    await wait_for(delivered)


async def test_subscription_notice_receipt_and_long_term_consent(notify: Notify) -> None:
    from shared.events.commerce import PointsEarned

    member_id, user = await notify.member(follow=False)
    tid = await notify.sandbox.template_id(OA, "积分到账提醒", "subscribe_long")
    await notify.popup(user, OA, {tid: "accept"})
    for n in range(2):
        await notify.publish(
            PointsEarned(
                member_id=member_id,
                available=100 + n,
                pending=0,
                entry_id=f"e{n}",
                points=10,
                state="available",
                rule="order",
            )
        )

    async def both_sent() -> Any:
        rows = await sends_of(member_id)
        return len(rows) == 2 and all(r["status"] == "sent" for r in rows) and rows

    rows = await wait_for(both_sent)
    # Long-term consent is not spent by a send.
    assert {r["channel"] for r in rows} == {"oa_subscribe_notice"}
    [auth] = await query("SELECT long_term FROM authorisations WHERE template_id = $1", tid)
    assert auth["long_term"] is True
    msgid = rows[0]["msgid"]
    await notify.push(
        "oa",
        OA,
        user["openids"][OA],
        {
            "MsgType": "event",
            "Event": "subscribe_msg_sent_event",
            "List": {"TemplateId": tid, "MsgID": msgid, "ErrorCode": "0", "ErrorStatus": "success"},
        },
    )

    async def delivered() -> bool:
        return any(r["status"] == "delivered" for r in await sends_of(member_id))

    await wait_for(delivered)


async def test_subscriptions_endpoint_records_what_the_mini_program_reported(notify: Notify) -> None:
    member_id, user = await notify.member(follow=False)
    tid = await notify.sandbox.template_id(MP, "订单发货通知", "subscribe_once")
    r = await notify.api.post(f"/internal/members/{member_id}/subscriptions", json={"results": {tid: "accept"}})
    assert r.status_code == 204
    # WeChat's push of the same popup is the same acceptance, not a second one.
    await notify.popup(user, MP, {tid: "accept"})
    rows = await query("SELECT remaining FROM authorisations WHERE template_id = $1", tid)
    assert [r["remaining"] for r in rows] == [1]
    r = await notify.api.post(f"/internal/members/{member_id}/subscriptions", json={"results": {tid: "ban"}})
    assert r.status_code == 204
    rows = await query("SELECT remaining FROM authorisations WHERE template_id = $1", tid)
    assert [r["remaining"] for r in rows] == [0]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"results": {}},
        {"results": {"a": "maybe"}},
        {"results": {"a": "accept", "b": "accept", "c": "accept", "d": "accept"}},
        {"results": {"bad id with spaces": "accept"}},
        {"results": {"a": "accept"}, "extra": 1},
        {"results": {"a": "accept"}, "appid": "wx0000000000000001"},
        ["not", "an", "object"],
    ],
)
async def test_subscriptions_bad_input_is_refused_and_writes_nothing(notify: Notify, body: Any) -> None:
    member_id, _ = await notify.member(follow=False)
    r = await notify.api.post(f"/internal/members/{member_id}/subscriptions", json=body)
    assert r.status_code == 422, r.text
    assert await query("SELECT 1 FROM authorisations") == []


async def test_internal_routes_need_the_internal_token(notify: Notify) -> None:
    r = await notify.api.get("/internal/members/x/messages", headers={"X-Siyu-Internal-Token": "wrong"})
    assert r.status_code == 401
    r = await notify.api.post(
        "/internal/opens", json={"member_id": "x", "page": "p"}, headers={"X-Siyu-Internal-Token": ""}
    )
    assert r.status_code == 401


async def test_unknown_member_subscriptions_is_404(notify: Notify) -> None:
    r = await notify.api.post("/internal/members/nobody/subscriptions", json={"results": {"a": "accept"}})
    assert r.status_code == 404


async def test_a_push_that_is_not_a_popup_is_dead_lettered_not_applied(notify: Notify) -> None:
    _, user = await notify.member(follow=False)
    await notify.push(
        "mp", MP, user["openids"][MP], {"MsgType": "event", "Event": "subscribe_msg_popup_event", "List": "garbage"}
    )
    await notify.push("mp", MP, user["openids"][MP], {"MsgType": "text", "Content": "hi", "MsgId": "42"})
    await wait_for(lambda: query("SELECT 1 FROM service_windows"))
    assert await query("SELECT 1 FROM authorisations") == []
