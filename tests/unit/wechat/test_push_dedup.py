"""De-dup keys: only WeChat's re-delivery of one push (an identical decrypted payload) is a duplicate.

Each case of the data-path issue is a pair of distinct pushes that the old keys collapsed into one
(the later one silently dropped): the pair must get different keys while a re-delivery of the same
bytes gets the same key. ``same_readable_part`` shows that the pair really is a same-second
collision of everything but the payload.
"""

from __future__ import annotations

import copy
import hashlib
import json
from decimal import Decimal
from typing import Any

import pytest

from shared.wechat.apps import AppKind
from shared.wechat.codec import parse_json, parse_xml
from shared.wechat.crypto import MessageCrypto
from shared.wechat.push import parse_push, payload_digest

OA = AppKind.OFFICIAL_ACCOUNT
MP = AppKind.MINI_PROGRAM
SHOP = AppKind.SHOP
ORDER_ID = 3705115058471208928
CREATE_TIME = 1662480000
APPID = "wx0123456789abcdef"  # the gateway prefixes keys with the appid and hashes those over 200 chars


def envelope(event: str, **body: Any) -> dict[str, Any]:
    return {
        "ToUserName": "gh_shop",
        "FromUserName": "o7esq5OI1Uej6Xixw1lA2H7XDVbc",
        "CreateTime": CREATE_TIME,
        "MsgType": "event",
        "Event": event,
        **body,
    }


def key(payload: dict[str, Any], kind: AppKind = SHOP) -> str:
    """The key of the push as the gateway sees it: JSON bytes, decoded, typed."""
    return parse_push(parse_json(json.dumps(payload, ensure_ascii=False).encode()), kind).dedup_key


def readable_part(dedup_key: str) -> str:
    return dedup_key.rsplit(":", 1)[0]


def assert_only_the_redelivery_is_a_duplicate(first: dict[str, Any], second: dict[str, Any], kind: AppKind) -> None:
    assert key(first, kind) == key(copy.deepcopy(first), kind)  # WeChat's re-delivery
    assert key(second, kind) == key(copy.deepcopy(second), kind)
    assert key(first, kind) != key(second, kind)
    for k in (key(first, kind), key(second, kind)):
        assert len(f"{APPID}:{k}") <= 200


CASES = {
    "two dropship orders of one buyer in one second": (
        envelope("dropship_order_new", ds_order_id="4400123343235833535"),
        envelope("dropship_order_new", ds_order_id="4400123343235833536"),
        SHOP,
    ),
    "two updates of one dropship order in one second": (
        envelope("dropship_order_update", ds_order_id="4400123343235833535", update_time=1662480000),
        envelope("dropship_order_update", ds_order_id="4400123343235833535", update_time=1662480001),
        SHOP,
    ),
    "two ewaybill path steps in one second": (
        envelope(
            "ewaybill_push_path",
            waybill_info={"ewaybill_order_id": 123123123123123, "waybill_id": "SF1", "status": 1, "desc": "已揽收"},
        ),
        envelope(
            "ewaybill_push_path",
            waybill_info={"ewaybill_order_id": 123123123123123, "waybill_id": "SF1", "status": 2, "desc": "运输中"},
        ),
        SHOP,
    ),
    "two guarantee orders of one order in one second": (
        envelope(
            "channels_ec_guarantee_update",
            finder_shop_guarantee_status_update={
                "status": "STATUS_PAY_SUCC",
                "guarantee_order_id": "1234567",
                "order_id": "12345",
            },
        ),
        envelope(
            "channels_ec_guarantee_update",
            finder_shop_guarantee_status_update={
                "status": "STATUS_PAY_SUCC",
                "guarantee_order_id": "1234568",
                "order_id": "12345",
            },
        ),
        SHOP,
    ),
    "two versions of one head-supplier item in one second": (
        envelope(
            "head_supplier_item_update",
            item_info={"event_type": 2, "appid": "APPID", "product_id": "12345", "version": "1677488955"},
        ),
        envelope(
            "head_supplier_item_update",
            item_info={"event_type": 2, "appid": "APPID", "product_id": "12345", "version": "1677488956"},
        ),
        SHOP,
    ),
    "open_product_spu_status_update for two products on the mini-program": (
        envelope("open_product_spu_status_update", OpenProductSpuStatusUpdate={"product_id": 38249023, "status": 5}),
        envelope("open_product_spu_status_update", OpenProductSpuStatusUpdate={"product_id": 38249024, "status": 5}),
        MP,
    ),
    "open_product_spu_status_update of one product twice on the mini-program": (
        envelope("open_product_spu_status_update", OpenProductSpuStatusUpdate={"product_id": 38249023, "status": 5}),
        envelope("open_product_spu_status_update", OpenProductSpuStatusUpdate={"product_id": 38249023, "status": 13}),
        MP,
    ),
    "two status changes of one after-sale in one second": (
        envelope(
            "channels_ec_aftersale_update",
            finder_shop_aftersale_status_update={
                "status": "MERCHANT_PROCESSING",
                "after_sale_order_id": "1234567",
                "order_id": str(ORDER_ID),
            },
        ),
        envelope(
            "channels_ec_aftersale_update",
            finder_shop_aftersale_status_update={
                "status": "USER_WAIT_RETURN",
                "after_sale_order_id": "1234567",
                "order_id": str(ORDER_ID),
            },
        ),
        SHOP,
    ),
    "two statuses of one shop order in one second": (
        envelope("product_order_status_update", ProductOrderStatusUpdate={"order_id": ORDER_ID, "status": 20}),
        envelope("product_order_status_update", ProductOrderStatusUpdate={"order_id": ORDER_ID, "status": 30}),
        SHOP,
    ),
    "a partial and the final delivery of one order in one second": (
        envelope("channels_ec_order_deliver", order_info={"order_id": ORDER_ID, "finish_delivery": 0}),
        envelope("channels_ec_order_deliver", order_info={"order_id": ORDER_ID, "finish_delivery": 1}),
        SHOP,
    ),
    "two stock alerts of one product's SKUs in one second": (
        envelope("channels_ec_stock_no_enough", channels_ec_stock_no_enough={"product_id": 1, "sku_id": 1}),
        envelope("channels_ec_stock_no_enough", channels_ec_stock_no_enough={"product_id": 1, "sku_id": 2}),
        SHOP,
    ),
    "two score changes of one member in one second": (
        envelope("channels_ec_vip_score_update", user_info={"score": 100, "delta_score": 10, "flow_type": 1}),
        envelope("channels_ec_vip_score_update", user_info={"score": 110, "delta_score": 10, "flow_type": 1}),
        SHOP,
    ),
    "two clicks of different menu items by one user in one second": (
        {**envelope("CLICK"), "ToUserName": "gh_oa", "EventKey": "MENU_A"},
        {**envelope("CLICK"), "ToUserName": "gh_oa", "EventKey": "MENU_B"},
        OA,
    ),
    "two LOCATION reports of one user in one second": (
        {**envelope("LOCATION"), "Latitude": "23.137466", "Longitude": "113.352425"},
        {**envelope("LOCATION"), "Latitude": "23.137467", "Longitude": "113.352425"},
        OA,
    ),
    "two subscription popups of one user in one second": (
        {**envelope("subscribe_msg_popup_event"), "List": {"TemplateId": "T1", "SubscribeStatusString": "accept"}},
        {**envelope("subscribe_msg_popup_event"), "List": {"TemplateId": "T2", "SubscribeStatusString": "accept"}},
        MP,
    ),
    "two template results for one user in one second": (
        {**envelope("TEMPLATESENDJOBFINISH"), "MsgID": 200163836, "Status": "success"},
        {**envelope("TEMPLATESENDJOBFINISH"), "MsgID": 200163837, "Status": "success"},
        OA,
    ),
}


# Pairs about two different objects, with the ids their keys name: the old keys named the user
# (dropship, stock), ignored the id (guarantee_order_id) or named the user and EventKey (open_product_*
# on a mini-program), so these collided too.
DIFFERENT_OBJECTS = {
    "two dropship orders of one buyer in one second": ("4400123343235833535", "4400123343235833536"),
    "two guarantee orders of one order in one second": ("1234567", "1234568"),
    "open_product_spu_status_update for two products on the mini-program": ("38249023", "38249024"),
    "two stock alerts of one product's SKUs in one second": ("1:1", "1:2"),
}


@pytest.mark.parametrize(("first", "second", "kind"), CASES.values(), ids=CASES.keys())
def test_distinct_pushes_in_one_second_get_distinct_keys(
    first: dict[str, Any], second: dict[str, Any], kind: AppKind
) -> None:
    assert_only_the_redelivery_is_a_duplicate(first, second, kind)


@pytest.mark.parametrize("case", [c for c in CASES if c not in DIFFERENT_OBJECTS])
def test_only_the_payload_tells_these_pairs_apart(case: str) -> None:
    first, second, kind = CASES[case]
    assert readable_part(key(first, kind)) == readable_part(key(second, kind))


@pytest.mark.parametrize("case", DIFFERENT_OBJECTS)
def test_keys_name_the_object_a_shop_push_is_about(case: str) -> None:
    (first, second, kind), (first_id, second_id) = CASES[case], DIFFERENT_OBJECTS[case]
    assert key(first, kind).startswith(f"shop:{first_id}:{CREATE_TIME}:")
    assert key(second, kind).startswith(f"shop:{second_id}:{CREATE_TIME}:")


def test_identical_clicks_in_one_second_are_one_push() -> None:
    # CreateTime has second resolution and a click carries nothing else: two identical clicks in one
    # second are byte-identical, indistinguishable from WeChat's re-delivery, and count once.
    click = {**envelope("CLICK"), "EventKey": "MENU_A"}
    assert key(click, OA) == key(dict(click), OA)
    assert key(click, OA) != key({**click, "CreateTime": CREATE_TIME + 1}, OA)


def test_a_redelivery_through_the_encryption_gets_the_same_key() -> None:
    # WeChat re-encrypts a re-delivery (new random prefix): the ciphertext differs, the key does not.
    plaintext = (
        b'{"ToUserName":"gh_shop","FromUserName":"OPENID","CreateTime":1662480000,"MsgType":"event",'
        b'"Event":"channels_ec_aftersale_update","finder_shop_aftersale_status_update":'
        b'{"status":"USER_WAIT_RETURN","after_sale_order_id":"1234567","order_id":"3705115058471208928"}}'
    )
    crypto = MessageCrypto("pamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxb11529c136998cb6")
    first, second = crypto.encrypt(plaintext), crypto.encrypt(plaintext)
    assert first != second
    keys = {parse_push(parse_json(crypto.decrypt(c).plaintext), SHOP).dedup_key for c in (first, second)}
    assert len(keys) == 1


def test_an_xml_redelivery_gets_the_same_key_and_an_edit_does_not() -> None:
    xml = (
        "<xml><ToUserName><![CDATA[gh_oa]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event>"
        "<EventKey><![CDATA[MENU_A]]></EventKey></xml>"
    )
    first = parse_push(parse_xml(xml.encode()), OA).dedup_key
    assert first == parse_push(parse_xml(xml.encode()), OA).dedup_key
    assert first != parse_push(parse_xml(xml.replace("MENU_A", "MENU_B").encode()), OA).dedup_key
    assert first.startswith("evt:oUser:1700000000:click:")


# --- messages keep MsgId ------------------------------------------------------------------------------


def test_messages_are_keyed_by_msg_id() -> None:
    text = {"FromUserName": "u", "CreateTime": 1, "MsgType": "text", "MsgId": "42", "Content": "a"}
    assert parse_push(text, OA).dedup_key == "msg:u:1:42"
    # The MsgId names the message: the same MsgId is the same message.
    assert parse_push({**text, "Content": "b"}, OA).dedup_key == "msg:u:1:42"


def test_same_msg_id_from_different_users_is_distinct() -> None:
    # WxJava #333: voice messages from several users shared a MsgId.
    def from_user(user: str) -> str:
        payload = {"FromUserName": user, "CreateTime": 1, "MsgType": "voice", "MsgId": "42"}
        return parse_push(payload, OA).dedup_key

    assert from_user("a") != from_user("b")


def test_msg_id_is_normalised_to_a_string() -> None:
    xml_id = parse_push({"FromUserName": "u", "CreateTime": "1", "MsgType": "text", "MsgId": "6972028683187026694"}, OA)
    json_id = parse_push({"FromUserName": "u", "CreateTime": 1, "MsgType": "text", "MsgID": 6972028683187026694}, OA)
    assert xml_id.msg_id == json_id.msg_id == "6972028683187026694"
    assert xml_id.dedup_key == json_id.dedup_key


def test_a_message_without_msg_id_falls_back_to_the_payload() -> None:
    base = {"FromUserName": "u", "CreateTime": 1, "MsgType": "hologram"}
    assert parse_push(base, OA).dedup_key != parse_push({**base, "Depth": "3"}, OA).dedup_key


# --- the digest ------------------------------------------------------------------------------------


def test_digest_is_sha256_of_sorted_compact_json() -> None:
    payload = envelope("channels_ec_order_pay", order_info={"order_id": ORDER_ID, "pay_time": "1658509200"})
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert payload_digest(payload) == expected
    assert key(payload).endswith(":" + expected)


def test_digest_ignores_key_order_only() -> None:
    payload = {"b": 1, "a": {"y": [1, 2], "x": "中"}}
    assert payload_digest(payload) == payload_digest({"a": {"x": "中", "y": [1, 2]}, "b": 1})
    assert payload_digest(payload) != payload_digest({"b": 1, "a": {"x": "中", "y": [2, 1]}})


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"a": 1}, {"a": "1"}),
        ({"a": Decimal("1.5")}, {"a": Decimal("1.50")}),
        ({"a": Decimal("1.5")}, {"a": "1.5"}),
        ({"a": "x"}, {"a": " x"}),
        ({"a": None}, {"a": ""}),
        ({"a": True}, {"a": 1}),
        ({"a": {"b": 1}}, {"a": [{"b": 1}]}),
        ({"a": "\ud800"}, {"a": "\ufffd"}),
    ],
)
def test_digest_tells_apart_what_was_sent_differently(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert payload_digest(one) != payload_digest(other)


def test_digest_keeps_big_ids_exact() -> None:
    assert payload_digest({"order_id": ORDER_ID}) != payload_digest({"order_id": ORDER_ID + 1})
    assert payload_digest(parse_json(b'{"order_id": 3705115058471208928}')) != payload_digest(
        parse_json(b'{"order_id": 3705115058471208929}')
    )


def test_keys_fit_the_gateway_column_for_long_names() -> None:
    payload = envelope(
        "channels_ec_present_aftersale_update",
        finder_shop_present_aftersale_status_update={"after_sale_order_id": str(ORDER_ID), "status": "X"},
    )
    assert len(f"{APPID}:{key(payload)}") <= 200
