"""Typed push models from the SDKs' fixtures (research/wechat.md §2, research/shop.md §1.6)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.wechat.apps import AppKind
from shared.wechat.codec import parse_json, parse_xml
from shared.wechat.crypto import MalformedPush
from shared.wechat.push import (
    ClickEvent,
    ImageMessage,
    LinkMessage,
    LocationEvent,
    LocationMessage,
    MassSendJobFinishEvent,
    MiniProgramPageMessage,
    Push,
    ScanCodeEvent,
    ScanEvent,
    ShopAfterSaleEvent,
    ShopCouponEvent,
    ShopOrderEvent,
    ShopProductEvent,
    ShopVipEvent,
    ShortVideoMessage,
    SubscribeEvent,
    SubscribeMsgEvent,
    TemplateSendJobFinishEvent,
    TextMessage,
    UnknownPush,
    UnsubscribeEvent,
    UserEnterTempSessionEvent,
    VideoMessage,
    ViewEvent,
    ViewMiniProgramEvent,
    VoiceMessage,
    parse_push,
)

OA = AppKind.OFFICIAL_ACCOUNT
MP = AppKind.MINI_PROGRAM
SHOP = AppKind.SHOP
ORDER_ID = 3705115058471208928


def xml_push(body: str, kind: AppKind = OA) -> Push:
    """The wechatpy fixtures' envelope around ``body``."""
    data = (
        "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName>"
        f"<CreateTime>1348831860</CreateTime>{body}</xml>"
    )
    return parse_push(parse_xml(data.encode()), kind)


def event(name: str, extra: str = "") -> str:
    return f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{name}]]></Event>{extra}"


def shop_push(event_name: str, body: dict[str, Any], *, create_time: int = 1662480000) -> Push:
    payload = {
        "ToUserName": "gh_shop",
        "FromUserName": "OPENID",
        "CreateTime": create_time,
        "MsgType": "event",
        "Event": event_name,
        **body,
    }
    return parse_push(parse_json(json.dumps(payload).encode()), SHOP)


# --- messages ---------------------------------------------------------------------------------------


def test_text_message() -> None:
    push = xml_push(
        "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content>"
        "<MsgId>1234567890123456</MsgId>"
    )
    assert isinstance(push, TextMessage)
    assert (push.to_user_name, push.from_user_name, push.create_time) == ("toUser", "fromUser", 1348831860)
    assert (push.msg_type, push.name, push.content, push.msg_id) == (
        "text",
        "text",
        "this is a test",
        "1234567890123456",
    )
    assert push.raw["Content"] == "this is a test"
    assert push.dedup_key == "msg:fromUser:1348831860:1234567890123456"
    assert push.event_type == "wechat.oa.text"


def test_image_message() -> None:
    push = xml_push(
        "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[this is a url]]></PicUrl>"
        "<MediaId><![CDATA[media_id]]></MediaId><MsgId>1234567890123456</MsgId>"
    )
    assert isinstance(push, ImageMessage)
    assert (push.pic_url, push.media_id) == ("this is a url", "media_id")


def test_voice_message() -> None:
    push = xml_push(
        "<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[media_id]]></MediaId>"
        "<Format><![CDATA[Format]]></Format><Recognition><![CDATA[腾讯微信团队]]></Recognition><MsgId>1</MsgId>"
    )
    assert isinstance(push, VoiceMessage)
    assert (push.media_id, push.format, push.recognition) == ("media_id", "Format", "腾讯微信团队")


@pytest.mark.parametrize(("msg_type", "model"), [("video", VideoMessage), ("shortvideo", ShortVideoMessage)])
def test_video_messages(msg_type: str, model: type[Push]) -> None:
    push = xml_push(
        f"<MsgType><![CDATA[{msg_type}]]></MsgType><MediaId><![CDATA[media_id]]></MediaId>"
        "<ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId><MsgId>1234567890123456</MsgId>"
    )
    assert type(push) is model
    assert isinstance(push, VideoMessage)
    assert (push.name, push.media_id, push.thumb_media_id) == (msg_type, "media_id", "thumb_media_id")


def test_location_message() -> None:
    push = xml_push(
        "<MsgType><![CDATA[location]]></MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y>"
        "<Scale>20</Scale><Label><![CDATA[位置信息]]></Label><MsgId>1234567890123456</MsgId>"
    )
    assert isinstance(push, LocationMessage)
    assert (push.location_x, push.location_y, push.scale, push.label) == (23.134521, 113.358803, 20, "位置信息")


def test_link_message() -> None:
    push = xml_push(
        "<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[公众平台官网链接]]></Title>"
        "<Description><![CDATA[公众平台官网链接]]></Description><Url><![CDATA[url]]></Url><MsgId>1</MsgId>"
    )
    assert isinstance(push, LinkMessage)
    assert (push.title, push.description, push.url) == ("公众平台官网链接", "公众平台官网链接", "url")


def test_miniprogrampage_message_from_json() -> None:
    payload = {
        "ToUserName": "gh_mp",
        "FromUserName": "oMP",
        "CreateTime": 1482048670,
        "MsgType": "miniprogrampage",
        "MsgId": 6972028683187026694,
        "AppId": "wxapp",
        "Title": "title",
        "PagePath": "pages/index/index",
        "ThumbUrl": "https://example.com/t.jpg",
        "ThumbMediaId": "thumb",
    }
    push = parse_push(parse_json(json.dumps(payload).encode()), MP)
    assert isinstance(push, MiniProgramPageMessage)
    assert (push.app_id, push.title, push.page_path) == ("wxapp", "title", "pages/index/index")
    assert (push.thumb_url, push.thumb_media_id) == ("https://example.com/t.jpg", "thumb")
    assert push.msg_id == "6972028683187026694"
    assert push.event_type == "wechat.mp.miniprogrampage"


# --- events -----------------------------------------------------------------------------------------


def test_plain_subscribe() -> None:
    push = xml_push(event("subscribe"))
    assert isinstance(push, SubscribeEvent)
    assert (push.name, push.scene, push.ticket, push.msg_id) == ("subscribe", None, None, None)
    assert push.dedup_key == "evt:fromUser:1348831860:subscribe:"
    assert push.event_type == "wechat.oa.subscribe"


def test_subscribe_via_qr_code_strips_the_qrscene_prefix() -> None:
    push = xml_push(
        event("subscribe", "<EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket>")
    )
    assert isinstance(push, SubscribeEvent)
    assert (push.scene, push.ticket, push.event_key) == ("123123", "TICKET", "qrscene_123123")


@pytest.mark.parametrize("key", ["", "qrscene_", "last_trade_no_4200000001"])
def test_subscribe_without_a_qr_scene(key: str) -> None:
    push = xml_push(event("subscribe", f"<EventKey><![CDATA[{key}]]></EventKey>"))
    assert isinstance(push, SubscribeEvent)
    assert push.scene is None


def test_unsubscribe() -> None:
    push = xml_push(event("unsubscribe"))
    assert isinstance(push, UnsubscribeEvent)
    assert push.name == "unsubscribe"


def test_scan_scene_is_the_bare_event_key() -> None:
    push = xml_push(event("SCAN", "<EventKey><![CDATA[SCENE_VALUE]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket>"))
    assert isinstance(push, ScanEvent)
    assert (push.event, push.name, push.scene, push.ticket) == ("SCAN", "scan", "SCENE_VALUE", "TICKET")
    assert push.event_type == "wechat.oa.scan"


def test_location_event() -> None:
    push = xml_push(
        event(
            "LOCATION",
            "<Latitude>23.137466</Latitude><Longitude>113.352425</Longitude><Precision>119.385040</Precision>",
        )
    )
    assert isinstance(push, LocationEvent)
    assert (push.name, push.latitude, push.longitude, push.precision) == ("location", 23.137466, 113.352425, 119.38504)


def test_click_event() -> None:
    push = xml_push(event("CLICK", "<EventKey><![CDATA[EVENTKEY]]></EventKey>"))
    assert isinstance(push, ClickEvent)
    assert (push.name, push.key) == ("click", "EVENTKEY")
    assert push.dedup_key == "evt:fromUser:1348831860:click:EVENTKEY"


def test_view_event() -> None:
    push = xml_push(event("VIEW", "<EventKey><![CDATA[www.qq.com]]></EventKey><MenuId>1</MenuId>"))
    assert isinstance(push, ViewEvent)
    assert (push.name, push.url, push.menu_id) == ("view", "www.qq.com", "1")


def test_view_miniprogram_event() -> None:
    push = xml_push(
        event("view_miniprogram", "<EventKey><![CDATA[pages/index/index]]></EventKey><MenuId>MENUID</MenuId>")
    )
    assert isinstance(push, ViewMiniProgramEvent)
    assert (push.page_path, push.menu_id) == ("pages/index/index", "MENUID")


@pytest.mark.parametrize("name", ["scancode_push", "scancode_waitmsg"])
def test_scancode_events(name: str) -> None:
    push = xml_push(
        event(
            name,
            "<EventKey><![CDATA[6]]></EventKey><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType>"
            "<ScanResult><![CDATA[1]]></ScanResult></ScanCodeInfo>",
        )
    )
    assert isinstance(push, ScanCodeEvent)
    assert push.name == name and push.key == "6"
    assert push.scan_code_info is not None
    assert (push.scan_code_info.scan_type, push.scan_code_info.scan_result) == ("qrcode", "1")


@pytest.mark.parametrize("status", ["success", "failed:user block", "failed: system failed"])
def test_templatesendjobfinish(status: str) -> None:
    push = xml_push(event("TEMPLATESENDJOBFINISH", f"<MsgID>200163836</MsgID><Status><![CDATA[{status}]]></Status>"))
    assert isinstance(push, TemplateSendJobFinishEvent)
    assert (push.name, push.msg_id, push.status) == ("templatesendjobfinish", "200163836", status)
    assert push.dedup_key == "msg:fromUser:1348831860:200163836"


def test_masssendjobfinish() -> None:
    push = xml_push(
        event(
            "MASSSENDJOBFINISH",
            "<MsgID>1988</MsgID><Status><![CDATA[sendsuccess]]></Status><TotalCount>100</TotalCount>"
            "<FilterCount>80</FilterCount><SentCount>75</SentCount><ErrorCount>5</ErrorCount>",
        )
    )
    assert isinstance(push, MassSendJobFinishEvent)
    assert (push.msg_id, push.status, push.total_count, push.filter_count) == ("1988", "sendsuccess", 100, 80)
    assert (push.sent_count, push.error_count) == (75, 5)


SUBSCRIBE_MSG_POPUP = (
    "<SubscribeMsgPopupEvent><List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>"
    "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>"
    "<List><TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId>"
    "<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>2</PopupScene></List>"
    "</SubscribeMsgPopupEvent>"
)


def test_subscribe_msg_popup_with_several_templates() -> None:
    push = xml_push(event("subscribe_msg_popup_event", SUBSCRIBE_MSG_POPUP))
    assert isinstance(push, SubscribeMsgEvent)
    assert [(i.template_id, i.subscribe_status, i.popup_scene) for i in push.items] == [
        ("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "accept", "2"),
        ("9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI", "reject", "2"),
    ]


def test_subscribe_msg_change_with_one_template() -> None:
    push = xml_push(
        event(
            "subscribe_msg_change_event",
            "<SubscribeMsgChangeEvent><List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]>"
            "</TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>"
            "</SubscribeMsgChangeEvent>",
        )
    )
    assert isinstance(push, SubscribeMsgEvent)
    assert push.name == "subscribe_msg_change_event"
    assert [(i.template_id, i.subscribe_status) for i in push.items] == [
        ("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "reject")
    ]


def test_subscribe_msg_sent_keeps_the_64_bit_msg_id() -> None:
    push = xml_push(
        event(
            "subscribe_msg_sent_event",
            "<SubscribeMsgSentEvent><List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]>"
            "</TemplateId><MsgID>1700827132819554304</MsgID><ErrorCode>0</ErrorCode>"
            "<ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent>",
        )
    )
    assert isinstance(push, SubscribeMsgEvent)
    (item,) = push.items
    assert (item.msg_id, item.error_code, item.error_status) == ("1700827132819554304", "0", "success")


@pytest.mark.parametrize("several", [False, True])
def test_subscribe_msg_popup_from_mini_program_json(several: bool) -> None:
    one = {
        "TemplateId": "hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgN5Wa5hY",
        "SubscribeStatusString": "accept",
        "PopupScene": "0",
    }
    payload = {
        "ToUserName": "gh_123456789abc",
        "FromUserName": "o7esq5OI1Ss7mBT4-1AsW2BanpR1",
        "CreateTime": "1620963428",
        "MsgType": "event",
        "Event": "subscribe_msg_popup_event",
        "List": [one, {**one, "TemplateId": "other", "PopupScene": 1}] if several else one,
    }
    push = parse_push(parse_json(json.dumps(payload).encode()), MP)
    assert isinstance(push, SubscribeMsgEvent)
    assert push.create_time == 1620963428
    assert [i.template_id for i in push.items] == (
        ["hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgN5Wa5hY", "other"]
        if several
        else ["hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgN5Wa5hY"]
    )
    assert push.items[-1].popup_scene == ("1" if several else "0")


def test_subscribe_msg_event_without_a_list() -> None:
    push = xml_push(event("subscribe_msg_popup_event"))
    assert isinstance(push, SubscribeMsgEvent)
    assert push.items == []


def test_user_enter_tempsession() -> None:
    payload = {
        "ToUserName": "gh_mp",
        "FromUserName": "oMP",
        "CreateTime": 1482048670,
        "MsgType": "event",
        "Event": "user_enter_tempsession",
        "SessionFrom": "sessionFrom",
    }
    push = parse_push(payload, MP)
    assert isinstance(push, UserEnterTempSessionEvent)
    assert push.session_from == "sessionFrom"
    assert push.dedup_key == "evt:oMP:1482048670:user_enter_tempsession:"


# --- WeChat Shop ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order_id", [ORDER_ID, str(ORDER_ID)], ids=["json-int", "json-string"])
def test_shop_order_id_survives_exactly_from_json(order_id: int | str) -> None:
    push = shop_push("channels_ec_order_new", {"order_info": {"order_id": order_id}})
    assert isinstance(push, ShopOrderEvent)
    assert push.order_id == "3705115058471208928"
    assert push.object_id == "3705115058471208928"
    assert push.dedup_key == "shop:channels_ec_order_new:3705115058471208928:1662480000"
    assert push.event_type == "wechat.shop.channels_ec_order_new"


def test_shop_order_id_survives_exactly_from_xml() -> None:
    data = (
        b"<xml><ToUserName>gh_shop</ToUserName><FromUserName>OPENID</FromUserName><CreateTime>1662480000</CreateTime>"
        b"<MsgType>event</MsgType><Event>channels_ec_order_pay</Event>"
        b"<order_info><order_id>3705115058471208928</order_id><pay_time>1658509200</pay_time></order_info></xml>"
    )
    push = parse_push(parse_xml(data), SHOP)
    assert isinstance(push, ShopOrderEvent)
    assert push.order_id == "3705115058471208928"
    assert push.info is not None and push.info.pay_time == 1658509200


@pytest.mark.parametrize(
    ("name", "body", "field", "value"),
    [
        ("channels_ec_order_pay", {"pay_time": "1658509200"}, "pay_time", 1658509200),
        ("channels_ec_order_cancel", {"cancel_type": "1"}, "cancel_type", 1),
        ("channels_ec_order_deliver", {"finish_delivery": 1}, "finish_delivery", 1),
        ("channels_ec_order_confirm", {"confirm_type": "2"}, "confirm_type", 2),
        ("channels_ec_order_settle", {"settle_time": "1662480000"}, "settle_time", 1662480000),
        ("channels_ec_order_ext_info_update", {"type": 1}, "type", 1),
        ("channels_ec_order_wait_shipping", {}, "order_id", str(ORDER_ID)),
    ],
)
def test_shop_order_events(name: str, body: dict[str, Any], field: str, value: object) -> None:
    push = shop_push(name, {"order_info": {"order_id": ORDER_ID, **body}})
    assert isinstance(push, ShopOrderEvent)
    assert push.order_id == str(ORDER_ID)
    assert push.info is not None and getattr(push.info, field) == value


def test_legacy_product_order_status_update() -> None:
    push = shop_push("product_order_status_update", {"ProductOrderStatusUpdate": {"order_id": ORDER_ID, "status": 20}})
    assert isinstance(push, ShopOrderEvent)
    assert push.order_id == str(ORDER_ID)
    assert push.info is not None and push.info.status == 20


def test_shop_order_info_keeps_unmodelled_fields() -> None:
    push = shop_push("channels_ec_order_new", {"order_info": {"order_id": ORDER_ID, "new_field": "x"}})
    assert isinstance(push, ShopOrderEvent)
    assert push.info is not None and push.info.model_extra == {"new_field": "x"}


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("channels_ec_aftersale_update", "finder_shop_aftersale_status_update"),
        ("channels_ec_present_aftersale_update", "finder_shop_present_aftersale_status_update"),
        ("channels_ec_present_aftersale_update", "finder_shop_aftersale_status_update"),
    ],
)
def test_shop_aftersale_events(name: str, key: str) -> None:
    body = {key: {"status": "USER_WAIT_RETURN", "after_sale_order_id": 1234567, "order_id": ORDER_ID}}
    push = shop_push(name, body)
    assert isinstance(push, ShopAfterSaleEvent)
    assert (push.after_sale_order_id, push.order_id) == ("1234567", str(ORDER_ID))
    assert push.info is not None and push.info.status == "USER_WAIT_RETURN"
    assert push.dedup_key == f"shop:{name}:1234567:1662480000"


def test_shop_aftersale_object_sent_as_a_string_is_tolerated() -> None:
    push = shop_push(
        "channels_ec_aftersale_update", {"finder_shop_aftersale_status_update": "status:X\nafter_sale_order_id:1"}
    )
    assert isinstance(push, ShopAfterSaleEvent)
    assert push.info is None and push.after_sale_order_id is None
    assert push.dedup_key == "shop:channels_ec_aftersale_update:OPENID:1662480000"


def test_shop_complaint_event() -> None:
    body = {"finder_shop_complaint": {"complaint_status": 100, "after_sale_order_id": "1234567", "complaint_id": "99"}}
    push = shop_push("channels_ec_complaint_update", body)
    assert isinstance(push, ShopAfterSaleEvent)
    assert push.info is not None and (push.info.complaint_id, push.info.complaint_status) == ("99", 100)
    assert push.object_id == "99"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("product_spu_audit", "ProductSpuAudit"),
        ("product_spu_listing", "ProductSpuListing"),
        ("product_spu_update", "ProductSpuUpdate"),
    ],
)
def test_shop_product_events(name: str, key: str) -> None:
    push = shop_push(name, {key: {"product_id": "12345678", "status": 3, "reason": "abc"}})
    assert isinstance(push, ShopProductEvent)
    assert push.product_id == "12345678"
    assert push.info is not None and (push.info.status, push.info.reason) == (3, "abc")
    assert push.dedup_key == f"shop:{name}:12345678:1662480000"


def test_shop_stock_events_are_keyed_per_sku() -> None:
    def stock(sku: int) -> Push:
        body = {"product_id": 10000029995861, "sku_id": sku, "remaining_stock_amount": 2}
        return shop_push("channels_ec_stock_no_enough", {"channels_ec_stock_no_enough": body})

    first, second = stock(1), stock(2)
    assert isinstance(first, ShopProductEvent) and first.product_id == "10000029995861"
    assert first.dedup_key == "shop:channels_ec_stock_no_enough:10000029995861:1:1662480000"
    assert first.dedup_key != second.dedup_key


@pytest.mark.parametrize(
    ("name", "key", "expected_id"),
    [
        ("channels_ec_coupon_receive", "receive_info", "29730"),
        ("channels_ec_coupon_create", "coupon_info", "19126"),
        ("channels_ec_coupon_expire", "coupon_info", "19126"),
        ("channels_ec_user_coupon_expire", "user_coupon_info", "29730"),
        ("channels_ec_user_coupon_use", "user_info", "29730"),
        ("channels_ec_user_coupon_unuse", "user_info", "29730"),
    ],
)
def test_shop_coupon_events(name: str, key: str, expected_id: str) -> None:
    info: dict[str, Any] = {"coupon_id": "19126", "receive_time": "1662480000"}
    if key != "coupon_info":
        info["user_coupon_id"] = 29730
    push = shop_push(name, {key: info})
    assert isinstance(push, ShopCouponEvent)
    assert push.coupon_id == "19126"
    # A user coupon is the specific object: one coupon is received by many users in the same second.
    assert push.object_id == expected_id


def test_shop_vip_score_update() -> None:
    push = shop_push("channels_ec_vip_score_update", {"user_info": {"score": 100, "delta_score": -10, "flow_type": 3}})
    assert isinstance(push, ShopVipEvent)
    assert push.info is not None
    assert (push.info.score, push.info.delta_score, push.info.flow_type) == (100, -10, 3)
    assert push.dedup_key == "shop:channels_ec_vip_score_update:OPENID:1662480000"


@pytest.mark.parametrize("name", ["channels_ec_vip_join", "channels_ec_vip_close", "channels_ec_vip_grade_info_update"])
def test_shop_vip_membership_events(name: str) -> None:
    push = shop_push(name, {"user_info": {"join_time": 1662480000, "grade": 2, "experience_value": 300}})
    assert isinstance(push, ShopVipEvent)
    assert push.info is not None and (push.info.grade, push.info.experience_value) == (2, 300)


def test_shop_vip_score_exchange() -> None:
    body = {"exchange_info": {"pay_score": 100, "score_item_type": 1, "coupon_info": {"related_coupon_id": 1}}}
    push = shop_push("channels_ec_vip_score_exchange", body)
    assert isinstance(push, ShopVipEvent)
    assert push.exchange_info is not None and push.exchange_info["pay_score"] == 100


def test_unknown_shop_event_still_gets_a_shop_dedup_key() -> None:
    push = shop_push("channels_ec_guarantee_update", {"finder_shop_guarantee_status_update": {"order_id": ORDER_ID}})
    assert isinstance(push, UnknownPush)
    assert push.name == "channels_ec_guarantee_update"
    assert push.dedup_key == f"shop:channels_ec_guarantee_update:{ORDER_ID}:1662480000"


def test_shop_event_pushed_to_the_mini_program_uses_a_shop_key() -> None:
    payload = {
        "ToUserName": "gh_mp",
        "FromUserName": "oMP",
        "CreateTime": 1662480000,
        "MsgType": "event",
        "Event": "channels_ec_order_cancel",
        "order_info": {"order_id": ORDER_ID, "cancel_type": 1},
    }
    push = parse_push(payload, MP)
    assert isinstance(push, ShopOrderEvent)
    assert push.dedup_key.startswith("shop:channels_ec_order_cancel:")
    assert push.event_type == "wechat.mp.channels_ec_order_cancel"


# --- dedup keys -------------------------------------------------------------------------------------


def test_location_events_with_different_create_time_are_distinct() -> None:
    def at(ts: int) -> str:
        return parse_push(
            {"FromUserName": "u", "CreateTime": ts, "MsgType": "event", "Event": "LOCATION", "Latitude": "1"}, OA
        ).dedup_key

    assert at(1700000000) != at(1700000005)
    assert at(1700000000) == at(1700000000)  # a retry is the same push


def test_subscribe_and_unsubscribe_in_the_same_second_are_distinct() -> None:
    base = {"FromUserName": "u", "CreateTime": "1700000000", "MsgType": "event"}
    subscribe = parse_push({**base, "Event": "subscribe"}, OA)
    unsubscribe = parse_push({**base, "Event": "unsubscribe"}, OA)
    assert subscribe.dedup_key != unsubscribe.dedup_key


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


# --- unknown and malformed --------------------------------------------------------------------------


def test_unknown_message_type() -> None:
    push = xml_push("<MsgType><![CDATA[hologram]]></MsgType><MsgId>7</MsgId>")
    assert isinstance(push, UnknownPush)
    assert (push.name, push.msg_id, push.raw["MsgType"]) == ("hologram", "7", "hologram")


def test_unknown_event() -> None:
    push = xml_push(event("kf_create_session", "<KfAccount><![CDATA[test1@test]]></KfAccount>"))
    assert isinstance(push, UnknownPush)
    assert (push.name, push.event) == ("kf_create_session", "kf_create_session")
    assert push.dedup_key == "evt:fromUser:1348831860:kf_create_session:"
    assert push.raw["KfAccount"] == "test1@test"


def test_event_without_an_event_name_is_unknown() -> None:
    push = xml_push("<MsgType><![CDATA[event]]></MsgType>")
    assert isinstance(push, UnknownPush)
    assert push.name == "event"


def test_event_names_are_matched_case_insensitively() -> None:
    assert isinstance(xml_push(event("Subscribe")), SubscribeEvent)
    assert isinstance(xml_push("<MsgType><![CDATA[TEXT]]></MsgType><Content>x</Content>"), TextMessage)


ENVELOPE = {"ToUserName": "gh", "FromUserName": "u", "CreateTime": "1700000000", "MsgType": "text"}


@pytest.mark.parametrize("missing", ["FromUserName", "MsgType", "CreateTime"])
def test_missing_envelope_fields_are_malformed(missing: str) -> None:
    payload = {k: v for k, v in ENVELOPE.items() if k != missing}
    with pytest.raises(MalformedPush, match=missing) as err:
        parse_push(payload, OA)
    assert err.value.status == 400


@pytest.mark.parametrize("value", ["", "abc", "1.5", "-1", "１２３", True, 1.5, None, {"a": 1}, "9" * 5000])
def test_non_integer_create_time_is_malformed(value: object) -> None:
    with pytest.raises(MalformedPush, match="CreateTime"):
        parse_push({**ENVELOPE, "CreateTime": value}, OA)


def test_empty_from_user_is_malformed() -> None:
    with pytest.raises(MalformedPush, match="FromUserName"):
        parse_push({**ENVELOPE, "FromUserName": ""}, OA)


def test_missing_to_user_name_is_tolerated() -> None:
    payload = {k: v for k, v in ENVELOPE.items() if k != "ToUserName"}
    assert parse_push(payload, OA).to_user_name == ""


def test_badly_typed_field_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedPush, match="Latitude"):
        xml_push(event("LOCATION", "<Latitude>north</Latitude>"))


def test_models_are_frozen() -> None:
    push = xml_push(event("subscribe"))
    with pytest.raises(ValueError, match="frozen"):
        push.create_time = 2  # type: ignore[misc]
