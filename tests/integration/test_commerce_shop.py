"""commerce's synchronous shop callbacks: membership discounts reserved and released idempotently."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.commerce.app import create_app
from services.commerce.settings import CommerceSettings
from shared.http import INTERNAL_TOKEN_HEADER
from shared.settings import DEV_INTERNAL_TOKEN, load_settings
from tests.conftest import db_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def commerce(clean_databases: dict[str, str], amqp: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(load_settings(CommerceSettings))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://commerce.test",
            headers={INTERNAL_TOKEN_HEADER: DEV_INTERNAL_TOKEN},
        ) as client:
            yield client


async def reservations() -> list[tuple[str, str]]:
    conn = await asyncpg.connect(db_url("commerce"))
    try:
        return [tuple(r) for r in await conn.fetch("SELECT unique_id, status FROM vip_discount_reservations")]
    finally:
        await conn.close()


def callback(unique_id: str) -> dict[str, object]:
    return {
        "appid": "wx0000000000000002",
        "openid": "oMpBuyer1",
        "payload": {
            "order_info": {
                "unique_id": unique_id,
                "order_session_id": "s1",
                "price_info": {"vip_discounted_price": 100},
            }
        },
    }


async def test_use_is_reserved_once_and_release_is_idempotent(commerce: httpx.AsyncClient) -> None:
    for _ in range(2):
        r = await commerce.post("/internal/shop/vip-discount/use", json=callback("u-1"))
        assert r.json() == {"errcode": 0, "errmsg": "ok", "result": 1}
    assert await reservations() == [("u-1", "reserved")]
    for _ in range(2):
        assert (await commerce.post("/internal/shop/vip-discount/release", json=callback("u-1"))).json()["errcode"] == 0
    assert await reservations() == [("u-1", "released")]
    # A late retry of the use after the release is not granted again.
    assert (await commerce.post("/internal/shop/vip-discount/use", json=callback("u-1"))).json()["result"] == 2


async def test_bad_input_is_rejected_and_writes_nothing(commerce: httpx.AsyncClient) -> None:
    no_id = {"appid": "wx0000000000000002", "openid": "o", "payload": {"order_info": {}}}
    assert (await commerce.post("/internal/shop/vip-discount/use", json=no_id)).status_code == 422
    extra = callback("u-2") | {"member_id": "someone-else"}
    assert (await commerce.post("/internal/shop/vip-discount/use", json=extra)).status_code == 422
    unsigned = await commerce.post(
        "/internal/shop/vip-discount/use", json=callback("u-3"), headers={INTERNAL_TOKEN_HEADER: "x"}
    )
    assert unsigned.status_code == 401
    assert await reservations() == []
