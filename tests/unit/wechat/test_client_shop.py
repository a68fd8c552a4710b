"""The WeChat Shop reads commerce makes: exact ids, the request bodies, retries and errors (respx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from shared.http import create_client
from shared.wechat import errors as E
from shared.wechat.apps import AppKind, WeChatApp, WeChatApps
from shared.wechat.client import WeChatClient
from shared.wechat.token import STABLE_TOKEN_PATH

BASE = "https://api.weixin.test"
SHOP = WeChatApp(
    name="shop",
    kind=AppKind.SHOP,
    appid="wx00000000000000a3",
    secret="shop-secret",
    token="tok789",
    encoding_aes_key="a" * 43,
)
APPS = WeChatApps(apps=[SHOP])
ORDER_ID = "3705115058471208928"  # past 2^53: a float would corrupt it


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as r:
        r.post(STABLE_TOKEN_PATH).respond(200, json={"access_token": "T", "expires_in": 7200})
        yield r


@pytest.fixture
async def client() -> AsyncIterator[WeChatClient]:
    http = create_client(BASE, retries=0)
    yield WeChatClient(http, APPS, max_attempts=3, backoff=0.0, sleep=_no_sleep)
    await http.aclose()


async def test_order_get_keeps_the_19_digit_ids_exact_and_asks_for_masked_data(
    router: respx.MockRouter, client: WeChatClient
) -> None:
    # The id as a bare JSON number, as the shop's samples send it.
    raw = (
        '{"errcode":0,"errmsg":"ok","order":{"order_id":3705115058471208928,"status":20,"create_time":1,'
        '"update_time":2,"openid":"oBuyer","is_present":true,"present_order_id_str":"4232433395290081234",'
        '"order_detail":{"price_info":{"order_price":9900}}}}'
    )
    route = router.post("/channels/ec/order/get").respond(200, content=raw.encode())
    order = await client.shop_order_get(SHOP.appid, ORDER_ID)
    assert order.order_id == ORDER_ID
    assert order.present_order_id_str == "4232433395290081234"
    assert order.order_detail["price_info"]["order_price"] == 9900
    sent = json.loads(route.calls[0].request.content)
    assert sent == {"order_id": ORDER_ID, "encode_sensitive_info": True}


async def test_order_get_is_repeated_after_a_network_error_because_it_only_reads(
    router: respx.MockRouter, client: WeChatClient
) -> None:
    ok = httpx.Response(200, json={"errcode": 0, "order": {"order_id": ORDER_ID, "status": 10}})
    route = router.post("/channels/ec/order/get").mock(side_effect=[httpx.ReadTimeout("slow"), ok])
    assert (await client.shop_order_get(SHOP.appid, ORDER_ID)).status == 10
    assert route.call_count == 2


async def test_an_unknown_order_is_a_typed_error_and_a_garbled_answer_is_unavailable(
    router: respx.MockRouter, client: WeChatClient
) -> None:
    router.post("/channels/ec/order/get").respond(200, json={"errcode": 100002, "errmsg": "order not exist"})
    with pytest.raises(E.WeChatAPIError) as info:
        await client.shop_order_get(SHOP.appid, ORDER_ID)
    assert info.value.errcode == 100002
    router.post("/channels/ec/aftersale/getaftersaleorder").respond(200, json={"errcode": 0, "after_sale_order": {}})
    with pytest.raises(E.WeChatUnavailable):
        await client.shop_aftersale_get(SHOP.appid, "4012345678901234567")


async def test_order_list_sends_the_update_window_and_the_page_key(
    router: respx.MockRouter, client: WeChatClient
) -> None:
    route = router.post("/channels/ec/order/list/get").respond(
        200, content=b'{"errcode":0,"order_id_list":[3705115058471208928],"next_key":"k2","has_more":true}'
    )
    page = await client.shop_order_list(SHOP.appid, update_from=100, update_to=200, page_size=50, next_key="k1")
    assert page.order_id_list == [ORDER_ID] and page.next_key == "k2" and page.has_more
    assert json.loads(route.calls[0].request.content) == {
        "update_time_range": {"start_time": 100, "end_time": 200},
        "page_size": 50,
        "next_key": "k1",
    }


async def test_aftersale_and_product_reads(router: respx.MockRouter, client: WeChatClient) -> None:
    router.post("/channels/ec/aftersale/getaftersaleorder").respond(
        200,
        json={
            "errcode": 0,
            "after_sale_order": {
                "after_sale_order_id": 4012345678901234567,
                "order_id": ORDER_ID,
                "status": "MERCHANT_REFUND_SUCCESS",
                "type": "REFUND",
                "product_info": {"product_id": 10000100000001, "sku_id": 2000000001, "count": 1},
                "refund_info": {"amount": 4950},
            },
        },
    )
    sale = await client.shop_aftersale_get(SHOP.appid, "4012345678901234567")
    assert sale.after_sale_order_id == "4012345678901234567"
    assert sale.amount_fen == 4950 and sale.product_info.sku_id == "2000000001"
    router.post("/channels/ec/product/get").respond(
        200,
        json={"errcode": 0, "product": {"product_id": 1, "title": "杯", "skus": [{"sku_id": 2, "sale_price": 9900}]}},
    )
    product = await client.shop_product_get(SHOP.appid, "1")
    assert product.title == "杯" and product.skus[0].sku_id == "2" and product.skus[0].sale_price == 9900
