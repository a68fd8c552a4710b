"""The sandbox's WeChat Shop: catalog, orders through their life, gifts, after-sales, their pushes and
the /channels/ec API answering from the same state.

Same harness as test_sandbox_identity.py (in-process sandbox, respx for the gateway). Pushes are
decrypted with wechatpy, the independent oracle, and parsed with the gateway's own push parser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from shared.wechat.apps import AppKind
from shared.wechat.push import ShopAfterSaleEvent, ShopOrderEvent, parse_push
from tests.integration.test_sandbox import MP, OA, SHOP, T0, callbacks, query
from tests.integration.test_sandbox_identity import Harness, gateway, oid
from tests.integration.test_sandbox_messaging import decrypt_json

__all__ = ["gateway"]  # fixture shared with test_sandbox_identity

DAY = 86400


class Shop(Harness):
    """The harness plus shortcuts for the shop's control routes and WeChat API."""

    catalog: list[dict[str, Any]]

    async def load_catalog(self) -> None:
        self.catalog = await self.get("/sandbox/shop/products")

    def sku(self, product: int, sku: int = 0) -> tuple[str, str]:
        p = self.catalog[product]
        return p["product_id"], p["skus"][sku]["sku_id"]

    async def order(
        self, user: dict[str, Any], *lines: tuple[int, int, int], push: str = "once", **extra: Any
    ) -> dict[str, Any]:
        """Order ``(product index, sku index, count)`` lines (one cup by default)."""
        items = [
            {"product_id": self.sku(p, s)[0], "sku_id": self.sku(p, s)[1], "count": n}
            for p, s, n in lines or [(1, 0, 1)]
        ]
        r = await self.http.post(
            "/sandbox/shop/orders", json={"user_id": user["user_id"], "items": items, "push": push, **extra}
        )
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def act(self, order_id: str, action: str, push: str = "once", **extra: Any) -> dict[str, Any]:
        return await self.post(f"/sandbox/shop/orders/{order_id}/{action}", {"push": push, **extra})  # type: ignore[no-any-return]

    async def refuse(self, path: str, body: Any = None, status: int = 409) -> str:
        r = await self.http.post(path, json=body)
        assert r.status_code == status, r.text
        return r.json()["detail"]  # type: ignore[no-any-return]

    async def shop_api(self, path: str, body: Any, app: dict[str, str] = SHOP) -> dict[str, Any]:
        return await self.wx(path, body, app)  # type: ignore[no-any-return]

    async def order_get(self, order_id: str) -> dict[str, Any]:
        answer = await self.shop_api("/channels/ec/order/get", {"order_id": order_id})
        assert (answer["errcode"], answer["errmsg"]) == (0, "ok")
        return answer["order"]  # type: ignore[no-any-return]

    async def through(self, order_id: str, *actions: str) -> None:
        for action in actions:
            await self.act(order_id, action)

    async def stock(self, product: int, sku: int) -> int:
        await self.load_catalog()
        return self.catalog[product]["skus"][sku]["stock_num"]  # type: ignore[no-any-return]


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    harness = Shop()
    await harness.load_catalog()
    yield harness
    await harness.aclose()


@pytest.fixture
def pushes(gateway: respx.MockRouter) -> respx.Route:
    return callbacks(gateway, SHOP)


def opened(route: respx.Route) -> list[dict[str, Any]]:
    """Every shop push so far, verified and decrypted with wechatpy."""
    return [decrypt_json(call.request, SHOP) for call in route.calls]


def order_push(event: str, user: dict[str, Any], order_id: str, **extra: Any) -> dict[str, Any]:
    """A WeChat Shop order push exactly as the docs show it (research/shop.md §1.6)."""
    return {
        "ToUserName": SHOP["original_id"],
        "FromUserName": oid(user, SHOP),
        "CreateTime": int(T0),
        "MsgType": "event",
        "Event": event,
        "order_info": {"order_id": int(order_id), **extra},
    }


# -- catalog ----------------------------------------------------------------------------------------


async def test_catalog_is_seeded_with_two_same_price_skus_and_served_on_the_product_apis(shop: Shop) -> None:
    assert [p["title"] for p in shop.catalog] == ["Siyu 茉莉花茶", "Siyu 随行保温杯", "Siyu 帆布袋"]
    cup = shop.catalog[1]
    assert [s["sale_price"] for s in cup["skus"]] == [9900, 9900, 12900]
    assert cup["skus"][0]["attrs"] == [{"attr_key": "颜色", "attr_value": "月白"}]
    assert all(len(p["product_id"]) == 14 and len(s["sku_id"]) == 10 for p in shop.catalog for s in p["skus"])
    again = Shop()
    try:
        assert await again.get("/sandbox/shop/products") == shop.catalog  # the seed fixes every id
    finally:
        await again.aclose()

    got = await shop.shop_api("/channels/ec/product/get", {"product_id": cup["product_id"]})
    assert (got["errcode"], set(got)) == (0, {"errcode", "errmsg", "product"})
    product = got["product"]
    assert (product["product_id"], product["title"], product["status"], product["min_price"]) == (
        cup["product_id"],
        "Siyu 随行保温杯",
        5,
        9900,
    )
    assert [(s["sku_id"], s["sale_price"], s["stock_num"]) for s in product["skus"]] == [
        (s["sku_id"], s["sale_price"], s["stock_num"]) for s in cup["skus"]
    ]
    both = await shop.shop_api("/channels/ec/product/get", {"product_id": cup["product_id"], "data_type": 3})
    assert both["edit_product"]["edit_status"] == 4
    assert "edit_status" not in both["product"]
    draft = await shop.shop_api("/channels/ec/product/get", {"product_id": cup["product_id"], "data_type": 2})
    assert "product" not in draft
    assert await shop.shop_api("/channels/ec/product/get", {"product_id": "123"}) == {
        "errcode": 40097,
        "errmsg": "invalid args",
    }

    first = await shop.shop_api("/channels/ec/product/list/get", {"page_size": 2})
    assert (first["product_ids"], first["total_num"]) == ([p["product_id"] for p in shop.catalog[:2]], 3)
    rest = await shop.shop_api("/channels/ec/product/list/get", {"page_size": 2, "next_key": first["next_key"]})
    assert rest["product_ids"] == [shop.catalog[2]["product_id"]]
    assert (await shop.shop_api("/channels/ec/product/list/get", {"status": 11}))["product_ids"] == []
    assert (await shop.shop_api("/channels/ec/product/list/get", {"page_size": 31}))["errcode"] == 40097


# -- an order's life ----------------------------------------------------------------------------------


async def test_every_transition_pushes_its_event_and_order_get_follows(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    created = await shop.order(buyer, (1, 0, 2))
    order_id = created["order_id"]
    assert (created["status"], created["push"]) == (
        10,
        [{"event": "channels_ec_order_new", "status": 200, "body": "success"}],
    )
    assert "present_order_id" not in created
    assert len(order_id) == 19 and order_id.isdigit() and int(order_id) > 2**53

    steps = [
        ("pay", 20, "channels_ec_order_pay", {"pay_time": int(T0) + 60}),
        ("ship", 30, "channels_ec_order_deliver", {"finish_delivery": 1}),
        ("confirm", 100, "channels_ec_order_confirm", {"confirm_type": 1}),
        ("settle", 100, "channels_ec_order_settle", {"settle_time": int(T0) + 240}),
    ]
    expected = [order_push("channels_ec_order_new", buyer, order_id)]
    for action, status, event, extra in steps:
        shop.clock.advance(60)
        answer = await shop.act(order_id, action)
        assert answer == {
            "order_id": order_id,
            "status": status,
            "push": [{"event": event, "status": 200, "body": "success"}],
        }
        expected.append(order_push(event, buyer, order_id, **extra) | {"CreateTime": int(shop.clock())})
        order = await shop.order_get(order_id)
        assert (order["status"], order["update_time"]) == (status, int(shop.clock()))
    assert opened(pushes) == expected

    order = await shop.order_get(order_id)
    assert order["create_time"] == int(T0)
    detail = order["order_detail"]
    assert detail["pay_info"]["pay_time"] == int(T0) + 60
    assert len(detail["pay_info"]["transaction_id"]) == 28
    assert detail["delivery_info"]["ship_done_time"] == int(T0) + 120
    assert detail["delivery_info"]["delivery_product_info"][0]["product_infos"] == [
        {"product_id": shop.sku(1)[0], "sku_id": shop.sku(1)[1], "product_cnt": 2}
    ]
    assert detail["ext_info"]["confirm_receipt_time"] == int(T0) + 180
    assert detail["settle_info"]["settle_time"] == int(T0) + 240


async def test_a_pushed_body_decrypts_to_exactly_the_shop_event(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    order_id = (await shop.order(buyer))["order_id"]
    request = pushes.calls.last.request
    q = query(request)
    assert request.headers["content-type"] == "application/json"
    assert set(httpx.Response(200, content=request.content).json()) == {"ToUserName", "Encrypt"}
    assert q["encrypt_type"] == "aes"
    assert q["openid"] == oid(buyer, SHOP)
    assert decrypt_json(request, SHOP) == order_push("channels_ec_order_new", buyer, order_id)
    # The 19 digits survive as an exact integer and the gateway's parser reads them back as the string.
    push = parse_push(decrypt_json(request, SHOP), AppKind.SHOP)
    assert isinstance(push, ShopOrderEvent)
    assert push.order_id == order_id
    assert float(order_id) != int(order_id)  # a double would have corrupted it


async def test_twice_redelivers_identical_bytes_and_none_loses_the_event(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    order_id = (await shop.order(buyer))["order_id"]
    paid = await shop.act(order_id, "pay", push="twice")
    assert [p["event"] for p in paid["push"]] == ["channels_ec_order_pay"] * 2
    first, second = pushes.calls[-2].request, pushes.calls[-1].request
    assert (str(first.url), first.content) == (str(second.url), second.content)
    twins = [parse_push(decrypt_json(r, SHOP), AppKind.SHOP) for r in (first, second)]
    assert twins[0].dedup_key == twins[1].dedup_key

    calls = pushes.call_count
    lost = await shop.act(order_id, "ship", push="none")
    assert lost == {"order_id": order_id, "status": 30, "push": []}
    assert pushes.call_count == calls
    # order/get shows the current state even though the deliver event never arrived.
    order = await shop.order_get(order_id)
    assert order["status"] == 30
    assert order["order_detail"]["delivery_info"]["delivery_product_info"]
    lost_order = await shop.order(buyer, push="none")
    assert lost_order["push"] == []
    assert (await shop.order_get(lost_order["order_id"]))["status"] == 10


async def test_illegal_transitions_answer_409_and_change_nothing(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    order_id = (await shop.order(buyer))["order_id"]
    base = f"/sandbox/shop/orders/{order_id}"
    calls = pushes.call_count
    assert "status is 10, not 20 or 21" in await shop.refuse(f"{base}/ship")
    for action in ("confirm", "settle"):
        await shop.refuse(f"{base}/{action}")
    await shop.act(order_id, "pay")
    assert "is paid" in await shop.refuse(f"{base}/cancel")
    assert "status is 20, not 10" in await shop.refuse(f"{base}/pay")
    await shop.act(order_id, "ship")
    await shop.refuse(f"{base}/ship")
    await shop.through(order_id, "confirm", "settle")
    assert "was settled" in await shop.refuse(f"{base}/settle")
    assert pushes.call_count == calls + 4  # only the legal moves pushed
    assert (await shop.order_get(order_id))["status"] == 100

    await shop.refuse(f"{base}/refund", status=404)
    await shop.refuse("/sandbox/shop/orders/3700000000000000000/pay", status=404)
    await shop.refuse(f"{base}/pay", {"push": "thrice"}, status=422)
    await shop.refuse(f"{base}/pay", {"items": [{"sku_id": "1", "count": 1}]}, status=422)
    await shop.refuse(f"{base}/pay", {"surprise": 1}, status=422)
    await shop.refuse("/sandbox/shop/orders", {"user_id": buyer["user_id"], "items": []}, status=422)
    await shop.refuse(
        "/sandbox/shop/orders", {"user_id": "u9999", "items": [{"product_id": "1", "sku_id": "1"}]}, status=404
    )
    bad_sku = {"user_id": buyer["user_id"], "items": [{"product_id": shop.sku(1)[0], "sku_id": shop.sku(0)[1]}]}
    await shop.refuse("/sandbox/shop/orders", bad_sku, status=404)
    hostile = {"user_id": buyer["user_id"], "items": [{"product_id": "1' OR 1=1", "sku_id": "1"}]}
    await shop.refuse("/sandbox/shop/orders", hostile, status=422)


async def test_partial_shipping_goes_through_21(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    order_id = (await shop.order(buyer, (0, 0, 1), (2, 0, 3)))["order_id"]
    await shop.act(order_id, "pay")
    tea, bag = shop.sku(0)[1], shop.sku(2)[1]
    part = await shop.act(order_id, "ship", items=[{"sku_id": bag, "count": 2}])
    assert part["status"] == 21
    assert opened(pushes)[-1]["order_info"] == {"order_id": int(order_id), "finish_delivery": 0}
    await shop.refuse(f"/sandbox/shop/orders/{order_id}/ship", {"items": [{"sku_id": bag, "count": 2}]})
    await shop.refuse(f"/sandbox/shop/orders/{order_id}/confirm")
    rest = await shop.act(order_id, "ship")
    assert rest["status"] == 30
    assert opened(pushes)[-1]["order_info"] == {"order_id": int(order_id), "finish_delivery": 1}
    parcels = (await shop.order_get(order_id))["order_detail"]["delivery_info"]["delivery_product_info"]
    assert [[(p["sku_id"], p["product_cnt"]) for p in parcel["product_infos"]] for parcel in parcels] == [
        [(bag, 2)],
        [(tea, 1), (bag, 1)],
    ]


async def test_stock_is_taken_on_order_and_given_back_on_cancel(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    gilded = await shop.stock(1, 2)
    assert gilded == 5
    order_id = (await shop.order(buyer, (1, 2, 4)))["order_id"]
    assert await shop.stock(1, 2) == 1
    assert "库存不足" in await shop.refuse(
        "/sandbox/shop/orders",
        {
            "user_id": buyer["user_id"],
            "items": [{"product_id": shop.sku(1, 2)[0], "sku_id": shop.sku(1, 2)[1], "count": 2}],
        },
    )
    cancelled = await shop.act(order_id, "cancel")
    assert cancelled["status"] == 250
    assert opened(pushes)[-1] == order_push("channels_ec_order_cancel", buyer, order_id, cancel_type=1)
    assert await shop.stock(1, 2) == 5
    assert (await shop.order_get(order_id))["status"] == 250
    await shop.refuse(f"/sandbox/shop/orders/{order_id}/pay")


# -- the order JSON ---------------------------------------------------------------------------------


async def test_order_json_carries_the_buyer_prices_address_and_sharer(shop: Shop) -> None:
    buyer = await shop.user(nickname="陈先生", phone="13912345678")
    sharer = await shop.user(nickname="分享员小王")
    order_id = (await shop.order(buyer, (1, 0, 2), (0, 1, 1), sharer_user_id=sharer["user_id"]))["order_id"]
    await shop.act(order_id, "pay")
    order = await shop.order_get(order_id)
    assert (order["openid"], order["unionid"], order["is_present"]) == (oid(buyer, SHOP), buyer["unionid"], False)
    assert "present_order_id_str" not in order
    detail = order["order_detail"]
    cup, tea = detail["product_infos"]
    assert (cup["product_id"], cup["sku_id"], cup["sku_cnt"], cup["sale_price"], cup["real_price"]) == (
        *shop.sku(1),
        2,
        9900,
        19800,
    )
    assert (tea["sku_id"], tea["sale_price"], tea["real_price"]) == (shop.sku(0, 1)[1], 12800, 12800)
    assert cup["sku_attrs"] == [{"attr_key": "颜色", "attr_value": "月白"}]
    price = detail["price_info"]
    assert (price["product_price"], price["order_price"], price["freight"]) == (32600, 32600, 0)
    assert detail["delivery_info"]["address_info"] | {"detail_info": "x"} == {
        "user_name": "陈先生",
        "postal_code": "200120",
        "province_name": "上海市",
        "city_name": "上海市",
        "county_name": "浦东新区",
        "detail_info": "x",
        "national_code": "310115",
        "tel_number": "13912345678",
    }
    assert detail["ext_info"]["order_scene"] == 4
    assert detail["sharer_info"]["sharer_openid"] == oid(sharer, SHOP)
    assert detail["sharer_info"]["sharer_unionid"] == sharer["unionid"]
    assert [s["sharer_openid"] for s in detail["sku_sharer_infos"]] == [oid(sharer, SHOP)] * 2
    assert [(s["sku_id"], s["sale_channel"]) for s in detail["source_infos"]] == [
        (cup["sku_id"], 100),
        (tea["sku_id"], 100),
    ]
    assert [(c["sku_id"], c["status"], c["amount"], c["nickname"]) for c in detail["commission_infos"]] == [
        (cup["sku_id"], 1, 1980, "分享员小王"),
        (tea["sku_id"], 1, 1280, "分享员小王"),
    ]
    masked = (await shop.shop_api("/channels/ec/order/get", {"order_id": order_id, "encode_sensitive_info": True}))[
        "order"
    ]["order_detail"]["delivery_info"]["address_info"]
    assert (masked["user_name"], masked["tel_number"], masked["detail_info"]) == ("陈**", "139****5678", "****")


async def test_unionid_only_for_bound_users_and_no_sharer_fields_without_a_sharer(shop: Shop) -> None:
    stranger = await shop.user(unionid_bound=False)
    order_id = (await shop.order(stranger))["order_id"]
    order = await shop.order_get(order_id)
    assert order["openid"] == oid(stranger, SHOP)
    assert "unionid" not in order
    assert not {"sharer_info", "source_infos", "commission_infos"} & set(order["order_detail"])
    await shop.post(f"/sandbox/users/{stranger['user_id']}/bind-unionid", {"appid": SHOP["appid"]})
    assert (await shop.order_get(order_id))["unionid"] == stranger["unionid"]


# -- the order list ---------------------------------------------------------------------------------


async def test_order_list_windows_filters_and_paging(shop: Shop) -> None:
    alice, bob = await shop.user(), await shop.user()
    ids = []
    for n in range(5):
        shop.clock.now = T0 + n * DAY
        ids.append((await shop.order(alice if n % 2 == 0 else bob))["order_id"])
    shop.clock.now = T0 + 6 * DAY
    await shop.act(ids[0], "pay")  # updated last

    async def listing(**body: Any) -> dict[str, Any]:
        return await shop.shop_api("/channels/ec/order/list/get", body)

    week = {"start_time": int(T0), "end_time": int(T0) + 7 * DAY}
    everything = await listing(update_time_range=week, page_size=100)
    assert (everything["errcode"], everything["has_more"]) == (0, False)
    assert everything["order_id_list"] == [*ids[1:], ids[0]]  # by update time
    assert (await listing(create_time_range=week, page_size=100))["order_id_list"] == ids

    seen, next_key, pages = [], "", 0
    while True:
        page = await listing(create_time_range=week, page_size=2, next_key=next_key)
        seen += page["order_id_list"]
        next_key, pages = page["next_key"], pages + 1
        if not page["has_more"]:
            break
    assert (seen, pages) == (ids, 3)

    narrow = {"start_time": int(T0) + DAY, "end_time": int(T0) + 2 * DAY}
    assert (await listing(create_time_range=narrow))["order_id_list"] == ids[1:3]
    assert (await listing(create_time_range=week, openid=oid(bob, SHOP)))["order_id_list"] == [ids[1], ids[3]]
    assert (await listing(create_time_range=week, status=20))["order_id_list"] == [ids[0]]

    invalid = {"errcode": 40097, "errmsg": "invalid args"}
    too_wide = {"start_time": int(T0), "end_time": int(T0) + 7 * DAY + 1}
    assert await listing(update_time_range=too_wide) == invalid
    assert await listing(create_time_range=too_wide) == invalid
    assert await listing(create_time_range={"start_time": int(T0) + 10, "end_time": int(T0)}) == invalid
    assert await listing(page_size=10) == invalid  # no window at all
    assert await listing(create_time_range=week, page_size=101) == invalid
    assert await listing(create_time_range=week, page_size=0) == invalid
    assert await listing(create_time_range=week, next_key="%%%not-a-key") == invalid
    assert await listing(create_time_range="yesterday") == invalid


# -- gifts -----------------------------------------------------------------------------------------


async def test_gift_waits_then_the_recipient_accepts_with_a_same_price_swap(shop: Shop, pushes: respx.Route) -> None:
    giver, friend = await shop.user(), await shop.user(nickname="收礼人")
    created = await shop.order(giver, (1, 0, 1), gift=True)
    order_id, present_id = created["order_id"], created["present_order_id"]
    assert (created["status"], len(present_id), present_id[:2]) == (10, 19, "42")
    paid = await shop.act(order_id, "pay")
    assert (paid["status"], paid["present_order_id"]) == (12, present_id)
    assert opened(pushes)[-2:] == [
        order_push("channels_ec_order_new", giver, order_id),
        order_push("channels_ec_order_pay", giver, order_id, pay_time=int(T0)),
    ]
    waiting = await shop.order_get(order_id)
    assert (waiting["status"], waiting["is_present"], waiting["present_order_id_str"]) == (12, True, present_id)
    assert waiting["present_order_id"] == int(present_id)
    assert (waiting["present_giver_openid"], waiting["present_giver_unionid"]) == (oid(giver, SHOP), giver["unionid"])
    assert "openid" not in waiting and "unionid" not in waiting
    assert "address_info" not in waiting["order_detail"]["delivery_info"]
    await shop.refuse(f"/sandbox/shop/orders/{order_id}/ship")

    white, black = shop.sku(1, 0)[1], shop.sku(1, 1)[1]
    before = (await shop.stock(1, 0), await shop.stock(1, 1))
    shop.clock.advance(3600)
    accepted = await shop.post(
        f"/sandbox/shop/gifts/{present_id}/accept", {"user_id": friend["user_id"], "sku_id": black}
    )
    assert accepted == {
        "order_id": order_id,
        "status": 20,
        "present_order_id": present_id,
        "push": [{"event": "channels_ec_order_wait_shipping", "status": 200, "body": "success"}],
    }
    assert opened(pushes)[-1] == order_push("channels_ec_order_wait_shipping", friend, order_id) | {
        "CreateTime": int(T0) + 3600
    }
    assert (await shop.stock(1, 0), await shop.stock(1, 1)) == (before[0] + 1, before[1] - 1)
    order = await shop.order_get(order_id)
    assert (order["status"], order["openid"], order["unionid"]) == (20, oid(friend, SHOP), friend["unionid"])
    assert order["present_giver_openid"] == oid(giver, SHOP)
    line = order["order_detail"]["product_infos"][0]
    assert (line["sku_id"], line["sale_price"], line["sku_attrs"][0]["attr_value"]) == (black, 9900, "墨黑")
    assert line["accept_change_sku_info"] == {"old_sku_id": white, "new_sku_id": black}
    assert order["order_detail"]["delivery_info"]["address_info"]["user_name"] == "收礼人"

    present = await shop.shop_api("/channels/ec/order/present/get", {"present_order_id": present_id})
    assert present["present"]["sub_order_list"] == [{"order_id": order_id, "openid": oid(friend, SHOP), "status": 20}]
    assert present["present"]["present_detail"] == {
        "price_info": {"order_price": 9900},
        "pay_info": {"pay_time": int(T0)},
        "wishmessage": "",
    }
    from_mp = await shop.shop_api("/channels/ec/order/present/get", {"present_order_id": present_id}, MP)
    assert from_mp["present"]["sub_order_list"][0]["openid"] == oid(friend, MP)
    subs = await shop.shop_api("/channels/ec/order/presentsuborder/get", {"present_order_id": present_id})
    assert subs == {"errcode": 0, "errmsg": "ok", "order_ids": [order_id]}

    # One gift, one recipient: accepting again is refused; the rest of the life is an ordinary order's.
    await shop.refuse(f"/sandbox/shop/gifts/{present_id}/accept", {"user_id": giver["user_id"]})
    await shop.refuse(f"/sandbox/shop/gifts/{present_id}/expire")
    await shop.through(order_id, "ship", "confirm", "settle")
    assert opened(pushes)[-1]["FromUserName"] == oid(friend, SHOP)


async def test_gift_refusals(shop: Shop, pushes: respx.Route) -> None:
    giver, friend = await shop.user(), await shop.user()
    created = await shop.order(giver, (1, 0, 1), gift=True)
    present_id, order_id = created["present_order_id"], created["order_id"]
    accept = f"/sandbox/shop/gifts/{present_id}/accept"
    assert "not paid" in await shop.refuse(accept, {"user_id": friend["user_id"]})
    await shop.act(order_id, "pay")
    calls = pushes.call_count
    dearer = shop.sku(1, 2)[1]
    assert "same price" in await shop.refuse(accept, {"user_id": friend["user_id"], "sku_id": dearer})
    assert "no SKU" in await shop.refuse(accept, {"user_id": friend["user_id"], "sku_id": shop.sku(0)[1]})
    assert "own gift" in await shop.refuse(accept, {"user_id": giver["user_id"]})
    await shop.refuse(accept, {"user_id": "u9999"}, status=404)
    await shop.refuse("/sandbox/shop/gifts/4200000000000000000/accept", {"user_id": friend["user_id"]}, status=404)
    await shop.refuse(accept, {"sku_id": dearer}, status=422)
    assert pushes.call_count == calls
    order = await shop.order_get(order_id)
    assert (order["status"], order["order_detail"]["product_infos"][0]["sku_id"]) == (12, shop.sku(1, 0)[1])

    two = {
        "user_id": giver["user_id"],
        "gift": True,
        "items": [{"product_id": shop.sku(1)[0], "sku_id": shop.sku(1)[1], "count": 2}],
    }
    assert "exactly one item" in await shop.refuse("/sandbox/shop/orders", two)

    # 24 hours after payment the gift can no longer be accepted, only expire.
    shop.clock.advance(DAY)
    assert "expired" in await shop.refuse(accept, {"user_id": friend["user_id"]})


async def test_gift_expiry_cancels_refunds_and_gives_the_stock_back(shop: Shop, pushes: respx.Route) -> None:
    giver, friend = await shop.user(), await shop.user()
    stock = await shop.stock(1, 0)
    created = await shop.order(giver, (1, 0, 1), gift=True)
    order_id, present_id = created["order_id"], created["present_order_id"]
    await shop.refuse(f"/sandbox/shop/gifts/{present_id}/expire")  # unpaid: nothing to time out
    await shop.act(order_id, "pay")
    shop.clock.advance(DAY)
    expired = await shop.post(f"/sandbox/shop/gifts/{present_id}/expire")
    assert (expired["status"], expired["push"][0]["event"]) == (250, "channels_ec_order_cancel")
    assert opened(pushes)[-1] == order_push("channels_ec_order_cancel", giver, order_id, cancel_type=2) | {
        "CreateTime": int(T0) + DAY
    }
    assert await shop.stock(1, 0) == stock
    order = await shop.order_get(order_id)
    assert (order["status"], order["present_order_id_str"]) == (250, present_id)
    assert order["order_detail"]["pay_info"]["pay_time"] == int(T0)  # it was paid, and is refunded
    assert "openid" not in order
    await shop.refuse(f"/sandbox/shop/gifts/{present_id}/accept", {"user_id": friend["user_id"]})
    await shop.refuse(f"/sandbox/shop/gifts/{present_id}/expire")
    present = await shop.shop_api("/channels/ec/order/present/get", {"present_order_id": present_id})
    assert present["present"]["sub_order_list"] == [{"order_id": order_id, "status": 250}]


# -- after-sales -----------------------------------------------------------------------------------


async def test_aftersale_on_a_settled_order_refunds_and_updates_the_order(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    order_id = (await shop.order(buyer, (1, 0, 2)))["order_id"]
    await shop.through(order_id, "pay", "ship", "confirm", "settle")
    shop.clock.advance(3600)
    sku = shop.sku(1)[1]
    opened_as = await shop.post(
        f"/sandbox/shop/orders/{order_id}/aftersales", {"sku_id": sku, "count": 1, "type": "REFUND"}
    )
    as_id = opened_as["after_sale_order_id"]
    assert (len(as_id), opened_as["status"], opened_as["order_status"]) == (19, "MERCHANT_PROCESSING", 100)
    push = opened(pushes)[-1]
    assert push == {
        "ToUserName": SHOP["original_id"],
        "FromUserName": oid(buyer, SHOP),
        "CreateTime": int(T0) + 3600,
        "MsgType": "event",
        "Event": "channels_ec_aftersale_update",
        "finder_shop_aftersale_status_update": {
            "after_sale_order_id": as_id,
            "order_id": order_id,
            "status": "MERCHANT_PROCESSING",
        },
    }
    parsed = parse_push(push, AppKind.SHOP)
    assert isinstance(parsed, ShopAfterSaleEvent)
    assert (parsed.after_sale_order_id, parsed.order_id) == (as_id, order_id)

    order = await shop.order_get(order_id)
    assert order["aftersale_detail"] == {
        "on_aftersale_order_cnt": 1,
        "aftersale_order_list": [{"aftersale_order_id": as_id}],
    }
    assert order["order_detail"]["product_infos"][0]["on_aftersale_sku_cnt"] == 1
    shop.clock.advance(60)
    refunded = await shop.post(f"/sandbox/shop/aftersales/{as_id}/refund")
    assert (refunded["status"], refunded["order_status"]) == ("MERCHANT_REFUND_SUCCESS", 100)
    assert opened(pushes)[-1]["finder_shop_aftersale_status_update"]["status"] == "MERCHANT_REFUND_SUCCESS"
    order = await shop.order_get(order_id)
    line = order["order_detail"]["product_infos"][0]
    assert (line["on_aftersale_sku_cnt"], line["finish_aftersale_sku_cnt"]) == (0, 1)
    assert (order["status"], order["aftersale_detail"]["on_aftersale_order_cnt"]) == (100, 0)
    assert order["update_time"] == int(T0) + 3660

    got = (await shop.shop_api("/channels/ec/aftersale/getaftersaleorder", {"after_sale_order_id": as_id}))[
        "after_sale_order"
    ]
    assert (got["status"], got["type"], got["order_id"], got["openid"]) == (
        "MERCHANT_REFUND_SUCCESS",
        "REFUND",
        order_id,
        oid(buyer, SHOP),
    )
    assert got["product_info"] == {"product_id": shop.sku(1)[0], "sku_id": sku, "count": 1}
    assert got["refund_info"]["amount"] == 9900
    assert (got["create_time"], got["update_time"]) == (int(T0) + 3600, int(T0) + 3660)
    assert await shop.get(f"/sandbox/shop/aftersales/{as_id}") == got

    await shop.refuse(f"/sandbox/shop/aftersales/{as_id}/refund")
    await shop.refuse(f"/sandbox/shop/aftersales/{as_id}/approve", status=404)
    await shop.refuse("/sandbox/shop/aftersales/4000000000000000000/refund", status=404)
    # One cup is left to refund, not two.
    assert "1 can still be refunded" in await shop.refuse(
        f"/sandbox/shop/orders/{order_id}/aftersales", {"sku_id": sku, "count": 2, "type": "RETURN"}
    )


async def test_refunding_everything_before_shipping_cancels_the_order(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    order_id = (await shop.order(buyer, (2, 0, 2)))["order_id"]
    bag = shop.sku(2)[1]
    aftersales = f"/sandbox/shop/orders/{order_id}/aftersales"
    assert "nothing paid" in await shop.refuse(aftersales, {"sku_id": bag, "count": 1, "type": "REFUND"})
    await shop.act(order_id, "pay")
    assert "nothing shipped" in await shop.refuse(aftersales, {"sku_id": bag, "count": 1, "type": "RETURN"})
    await shop.refuse(aftersales, {"sku_id": bag, "count": 1, "type": "EXCHANGE"}, status=422)
    await shop.refuse(aftersales, {"sku_id": bag, "count": 0, "type": "REFUND"}, status=422)

    withdrawn = await shop.post(aftersales, {"sku_id": bag, "count": 2, "type": "REFUND"})
    cancelled = await shop.post(f"/sandbox/shop/aftersales/{withdrawn['after_sale_order_id']}/cancel")
    assert (cancelled["status"], cancelled["order_status"]) == ("USER_CANCELD", 20)
    rejected = await shop.post(aftersales, {"sku_id": bag, "count": 2, "type": "REFUND"})
    assert (await shop.post(f"/sandbox/shop/aftersales/{rejected['after_sale_order_id']}/reject"))["status"] == (
        "MERCHANT_REJECT_REFUND"
    )
    full = await shop.post(aftersales, {"sku_id": bag, "count": 2, "type": "REFUND"})
    done = await shop.post(f"/sandbox/shop/aftersales/{full['after_sale_order_id']}/refund")
    assert (done["status"], done["order_status"]) == ("MERCHANT_REFUND_SUCCESS", 200)
    assert [p["event"] for p in done["push"]] == ["channels_ec_aftersale_update", "channels_ec_order_cancel"]
    assert opened(pushes)[-1] == order_push("channels_ec_order_cancel", buyer, order_id, cancel_type=3)
    order = await shop.order_get(order_id)
    assert order["status"] == 200
    assert order["aftersale_detail"]["on_aftersale_order_cnt"] == 0
    assert len(order["aftersale_detail"]["aftersale_order_list"]) == 3
    await shop.refuse(f"/sandbox/shop/orders/{order_id}/ship")


async def test_a_return_after_delivery_and_the_gift_recipients_aftersale(shop: Shop, pushes: respx.Route) -> None:
    giver, friend = await shop.user(), await shop.user()
    created = await shop.order(giver, (1, 0, 1), gift=True)
    order_id = created["order_id"]
    await shop.act(order_id, "pay")
    await shop.post(f"/sandbox/shop/gifts/{created['present_order_id']}/accept", {"user_id": friend["user_id"]})
    await shop.through(order_id, "ship", "confirm")
    returned = await shop.post(
        f"/sandbox/shop/orders/{order_id}/aftersales",
        {"sku_id": shop.sku(1)[1], "count": 1, "type": "RETURN", "push": "twice"},
    )
    assert [p["event"] for p in returned["push"]] == ["channels_ec_aftersale_update"] * 2
    assert opened(pushes)[-1]["FromUserName"] == oid(friend, SHOP)  # only the recipient opens after-sales
    done = await shop.post(f"/sandbox/shop/aftersales/{returned['after_sale_order_id']}/refund")
    assert (done["status"], done["order_status"]) == ("MERCHANT_RETURN_SUCCESS", 100)
    got = await shop.get(f"/sandbox/shop/aftersales/{returned['after_sale_order_id']}")
    assert (got["openid"], got["type"], got["details"]["receive_product"]) == (oid(friend, SHOP), "RETURN", True)
    assert got["return_info"]["waybill_id"].startswith("SF")


async def test_aftersale_list_windows_and_paging(shop: Shop) -> None:
    buyer = await shop.user()
    order_id = (await shop.order(buyer, (2, 0, 3)))["order_id"]
    await shop.act(order_id, "pay")
    ids = []
    for _ in range(3):
        shop.clock.advance(600)
        ids.append(
            (
                await shop.post(
                    f"/sandbox/shop/orders/{order_id}/aftersales",
                    {"sku_id": shop.sku(2)[1], "count": 1, "type": "REFUND"},
                )
            )["after_sale_order_id"]
        )

    async def listing(**body: Any) -> dict[str, Any]:
        return await shop.shop_api("/channels/ec/aftersale/getaftersalelist", body)

    day = await listing(begin_create_time=int(T0), end_create_time=int(T0) + DAY)
    assert day == {
        "errcode": 0,
        "errmsg": "ok",
        "after_sale_order_id_list": ids,
        "has_more": False,
        "next_key": day["next_key"],
    }
    assert (await listing(begin_create_time=int(T0) + 1200, end_create_time=int(T0) + 1800))[
        "after_sale_order_id_list"
    ] == ids[1:]
    assert await listing(begin_create_time=int(T0), end_create_time=int(T0) + DAY + 1) == {
        "errcode": 10020004,
        "errmsg": "非法的时间区间,不得大于24小时",
    }
    assert (await listing(begin_create_time=int(T0)))["errcode"] == 40097


# -- the API's own rules ---------------------------------------------------------------------------


async def test_the_shop_api_wants_a_shop_token_and_wechat_bodies(shop: Shop) -> None:
    buyer = await shop.user()
    order_id = (await shop.order(buyer))["order_id"]
    path = "/channels/ec/order/get"
    assert (await shop.post(path, {"order_id": order_id}))["errcode"] == 41001
    assert (await shop.post(path, {"order_id": order_id}, access_token="nope"))["errcode"] == 40001
    assert (await shop.wx(path, {"order_id": order_id}, OA))["errcode"] == 48001
    assert await shop.shop_api(path, {"order_id": "3700000000000000001"}) == {
        "errcode": 100002,
        "errmsg": "order not exist",
    }
    for bad in ({}, {"order_id": True}, {"order_id": 3.5}, {"order_id": "37x"}, {"order_id": "9" * 40}):
        assert (await shop.shop_api(path, bad))["errcode"] == 40097
    # A JSON integer works too: 19 digits parse exactly.
    assert (await shop.shop_api(path, {"order_id": int(order_id)}))["order"]["order_id"] == order_id
    token = await shop.token(SHOP)
    empty = await shop.http.post(path, params={"access_token": token}, content=b"")
    assert empty.json()["errcode"] == 44002
    not_object = await shop.http.post(path, params={"access_token": token}, content=b"[1]")
    assert not_object.json()["errcode"] == 47001
    wrong_method = await shop.http.get(path, params={"access_token": token})
    assert wrong_method.json() == {"errcode": 43002, "errmsg": "require POST method"}
    # Faults apply to shop paths like any other WeChat path.
    await shop.post("/sandbox/faults", {"path": path, "errcode": 45009})
    assert (await shop.shop_api(path, {"order_id": order_id}))["errcode"] == 45009
    assert (await shop.shop_api(path, {"order_id": order_id}))["errcode"] == 0


async def test_shop_push_and_callback_still_work_beside_the_stateful_shop(shop: Shop, pushes: respx.Route) -> None:
    buyer = await shop.user()
    raw = await shop.post("/sandbox/shop/push", {"event": "channels_ec_order_pay", "user_id": buyer["user_id"]})
    assert raw[0]["acknowledged"] is True
    assert opened(pushes)[-1]["Event"] == "channels_ec_order_pay"
    order_id = (await shop.order(buyer))["order_id"]
    # Raw pushes draw their ids from a stream of their own: the next order's id is the same either way.
    twin = Shop()
    try:
        await twin.load_catalog()
        twin_buyer = await twin.user()
        assert (await twin.order(twin_buyer))["order_id"] == order_id
    finally:
        await twin.aclose()


async def test_openapi_documents_the_shop_routes(shop: Shop) -> None:
    spec = await shop.get("/openapi.json")
    for path in (
        "/channels/ec/order/get",
        "/channels/ec/order/list/get",
        "/channels/ec/order/present/get",
        "/channels/ec/order/presentsuborder/get",
        "/channels/ec/aftersale/getaftersaleorder",
        "/channels/ec/aftersale/getaftersalelist",
        "/channels/ec/product/get",
        "/channels/ec/product/list/get",
    ):
        post = spec["paths"][path]["post"]
        assert post["description"]
        assert "example" in post["requestBody"]["content"]["application/json"]
    for path in (
        "/sandbox/shop/products",
        "/sandbox/shop/orders",
        "/sandbox/shop/orders/{order_id}/{action}",
        "/sandbox/shop/orders/{order_id}/aftersales",
        "/sandbox/shop/gifts/{present_order_id}/accept",
        "/sandbox/shop/gifts/{present_order_id}/expire",
        "/sandbox/shop/aftersales/{after_sale_order_id}/{action}",
    ):
        assert path in spec["paths"]
