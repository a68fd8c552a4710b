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
        order_id=order_id, shop_appid="wx0000000000000003", member_id=member_id, status=20, paid_fen=12800,
        title="山茶花精华面霜 50ml 滋润修护特别版礼盒装", item_count=1, update_time=1, paid_at=datetime.now(UTC),
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
