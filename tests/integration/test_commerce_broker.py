"""Through the real broker: a pay push published as the gateway publishes it reaches commerce's
consumer on this run's queue, and ``commerce.order.paid`` comes out of its outbox relay."""

from __future__ import annotations

import json

import aio_pika
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from shared.bus.topology import Topology
from tests.conftest import NAMESPACE
from tests.integration import commerce_fixtures
from tests.integration.commerce_fixtures import Commerce, shop_envelope
from tests.integration.test_commerce_orders import sku
from tests.waiting import eventually

pytestmark = pytest.mark.integration
commerce = commerce_fixtures.commerce


async def next_of(queue: AbstractQueue, event_type: str, deadline: float = 20.0) -> dict[str, object]:
    async def arrived() -> dict[str, object] | None:
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            if message.type == event_type:
                return json.loads(message.body)  # type: ignore[no-any-return]
        return None

    return await eventually(arrived, within=deadline, what=f"a {event_type} on the probe")


async def test_a_pay_push_on_the_broker_comes_out_as_commerce_order_paid(
    commerce: Commerce, amqp: AbstractRobustConnection, event_probe: AbstractQueue
) -> None:
    c = commerce
    user = await c.sandbox.user()
    order_id = await c.sandbox.order(user, await sku(c))
    await c.sandbox.act(order_id, "pay")
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await Topology(namespace=NAMESPACE).declare_exchanges(channel)
    for payload in list(c.sandbox.pushed):
        envelope = shop_envelope(payload)
        await exchange.publish(
            aio_pika.Message(
                envelope.model_dump_json().encode(),
                message_id=str(envelope.event_id),
                type=envelope.type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=envelope.type,
        )
    await channel.close()
    paid = await next_of(event_probe, "commerce.order.paid")
    data = paid["data"]
    assert isinstance(data, dict) and data["order_id"] == order_id and data["points_pending"] == 68
    assert paid["producer"] == "commerce" and paid["causation_id"]
