"""Typed push models from the SDKs' fixtures (research/wechat.md §2, research/shop.md §1.6).

Payloads are the official docs' examples as the SDKs carry them (wechatpy tests/test_events.py,
WxJava WxMpXmlMessageTest, SKIT EventSamples/); wechatpy 1.8.18 is the oracle where it parses the type.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from wechatpy import parse_message

from shared.wechat.apps import AppKind
from shared.wechat.codec import parse_json, parse_xml
from shared.wechat.crypto import MalformedPush
from shared.wechat.push import (
    CardEvent,
    ClickEvent,
    ImageMessage,
    KfSessionEvent,
    LinkMessage,
    LocationEvent,
    LocationMessage,
    LocationSelectEvent,
    MassSendJobFinishEvent,
    MerchantOrderEvent,
    MiniProgramPageMessage,
    PicEvent,
    PublishJobFinishEvent,
    Push,
    ScanCodeEvent,
    ScanEvent,
    ShopAfterSaleEvent,
    ShopAuditEvent,
    ShopCommissionOrderEvent,
    ShopCooperationOrderEvent,
    ShopCouponEvent,
    ShopDropshipEvent,
    ShopEwaybillPathEvent,
    ShopFundsEvent,
    ShopGuaranteeEvent,
    ShopHeadSupplierItemEvent,
    ShopOrderEvent,
    ShopProductEvent,
    ShopSharerChangeEvent,
    ShopStoreEvent,
    ShopVipCallbackEvent,
    ShopVipDiscountEvent,
    ShopVipEvent,
    ShopVoucherEvent,
    ShortVideoMessage,
    SubscribeEvent,
    SubscribeMsgChangeEvent,
    SubscribeMsgEvent,
    SubscribeMsgPopupEvent,
    SubscribeMsgSentEvent,
    TemplateSendJobFinishEvent,
    TextMessage,
    UnknownPush,
    UnsubscribeEvent,
    UserAuthorizationRevokeEvent,
    UserEnterTempSessionEvent,
    UserInfoModifiedEvent,
    VideoMessage,
    ViewEvent,
    ViewMiniProgramEvent,
    VoiceMessage,
    WeappAuditEvent,
    WxaMediaCheckEvent,
    parse_push,
)

OA = AppKind.OFFICIAL_ACCOUNT
MP = AppKind.MINI_PROGRAM
SHOP = AppKind.SHOP
ORDER_ID = 3705115058471208928
BOM = "\ufeff"


def xml_push(body: str, kind: AppKind = OA) -> Push:
    """The wechatpy fixtures' envelope around ``body``."""
    return parse_push(parse_xml(xml_of(body).encode()), kind)


def xml_of(body: str) -> str:
    return (
        "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName>"
        f"<CreateTime>1348831860</CreateTime>{body}</xml>"
    )


def event(name: str, extra: str = "") -> str:
    return f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{name}]]></Event>{extra}"


def shop_payload(event_name: str, body: dict[str, Any], *, create_time: int = 1662480000) -> dict[str, Any]:
    return {
        "ToUserName": "gh_shop",
        "FromUserName": "OPENID",
        "CreateTime": create_time,
        "MsgType": "event",
        "Event": event_name,
        **body,
    }


def json_push(payload: dict[str, Any], kind: AppKind = SHOP) -> Push:
    return parse_push(parse_json(json.dumps(payload).encode()), kind)


def shop_push(event_name: str, body: dict[str, Any], *, create_time: int = 1662480000) -> Push:
    return json_push(shop_payload(event_name, body, create_time=create_time))


# --- trimming and case, as the SDKs do --------------------------------------------------------------

# WeChat's samples wrap values in spaces and newlines; wechatpy (xmltodict) strips every text node.
ODD_SPACING = (
    "<xml>\n  <ToUserName><![CDATA[ gh_123456789abc ]]></ToUserName>\n"
    "  <FromUserName><![CDATA[\n    oV5CrjpxgaGXNHIQigzNlgLTnwic\n  ]]></FromUserName>\n"
    "  <CreateTime> 1348831860 </CreateTime>\n"
    "  <MsgType><![CDATA[ event ]]></MsgType>\n"
    "  <Event><![CDATA[ SCAN ]]></Event>\n"
    "  <EventKey><![CDATA[ 123123 ]]></EventKey>\n"
    "  <Ticket>\n    <![CDATA[TICKET]]>\n  </Ticket>\n</xml>"
)


def test_values_are_stripped_like_wechatpy_does() -> None:
    push = parse_push(parse_xml(ODD_SPACING.encode()), OA)
    oracle = parse_message(ODD_SPACING)
    assert isinstance(push, ScanEvent)
    assert type(oracle).__name__ == "ScanEvent"
    assert (push.from_user_name, push.to_user_name, push.create_time) == (oracle.source, oracle.target, oracle.time)
    assert (push.scene, push.ticket) == (oracle.scene_id, oracle.ticket) == ("123123", "TICKET")
    assert (push.msg_type, push.event, push.name) == ("event", "SCAN", "scan")
    # The payload itself stays as WeChat sent it: it is what the gateway stores and publishes.
    assert push.raw["FromUserName"] == "\n    oV5CrjpxgaGXNHIQigzNlgLTnwic\n  "


def test_odd_spacing_in_a_message() -> None:
    data = xml_of(
        "<MsgType><![CDATA[ text ]]></MsgType><Content><![CDATA[\n  this is a test \n]]></Content>"
        "<MsgId>\n1234567890123456\n</MsgId>"
    ).replace("fromUser", "\n fromUser \n")
    push = parse_push(parse_xml(data.encode()), OA)
    oracle = parse_message(data)
    assert isinstance(push, TextMessage)
    assert (push.from_user_name, push.content, push.msg_id) == (oracle.source, oracle.content, str(oracle.id))
    assert push.dedup_key == "msg:fromUser:1348831860:1234567890123456"


def test_json_fields_the_models_read_are_stripped_too() -> None:
    payload = shop_payload(
        " channels_ec_aftersale_update ",
        {"finder_shop_aftersale_status_update": {"status": " MERCHANT_REFUND_SUCCESS\n", "after_sale_order_id": " 1 "}},
    )
    payload |= {"FromUserName": "\n OPENID \n", "MsgType": " event"}
    push = json_push(payload)
    assert isinstance(push, ShopAfterSaleEvent)
    assert (push.name, push.from_user_name, push.status) == (
        "channels_ec_aftersale_update",
        "OPENID",
        "MERCHANT_REFUND_SUCCESS",
    )
    assert push.after_sale_order_id == "1"
    assert push.event_type == "wechat.shop.channels_ec_aftersale_update"


@pytest.mark.parametrize(
    ("spellings", "model", "name"),
    [
        (["SCAN", "scan", "Scan"], ScanEvent, "scan"),
        (["CLICK", "click"], ClickEvent, "click"),
        (["VIEW", "view"], ViewEvent, "view"),
        (["LOCATION", "location"], LocationEvent, "location"),
        (["TEMPLATESENDJOBFINISH", "templatesendjobfinish"], TemplateSendJobFinishEvent, "templatesendjobfinish"),
        (["MASSSENDJOBFINISH", "MassSendJobFinish"], MassSendJobFinishEvent, "masssendjobfinish"),
        (["subscribe", "Subscribe", "SUBSCRIBE"], SubscribeEvent, "subscribe"),
    ],
)
def test_event_names_compare_case_insensitively(spellings: list[str], model: type[Push], name: str) -> None:
    for spelling in spellings:
        push = xml_push(event(spelling))
        assert type(push) is model
        assert push.name == name
        assert push.event_type == f"wechat.oa.{name}"


def test_msg_types_compare_case_insensitively() -> None:
    assert isinstance(xml_push("<MsgType><![CDATA[TEXT]]></MsgType><Content>x</Content>"), TextMessage)
    assert isinstance(xml_push("<MsgType><![CDATA[Event]]></MsgType><Event>subscribe</Event>"), SubscribeEvent)


def test_an_indented_xml_push_with_a_bom_from_skit() -> None:
    data = (
        f"{BOM}<xml>\n\t<ToUserName>gh_abcdefg</ToUserName>\n\t<FromUserName>oABCD</FromUserName>\n"
        "\t<CreateTime>12344555555</CreateTime>\n\t<MsgType>event</MsgType>\n"
        "\t<Event>open_product_spu_status_update</Event>\n\t<OpenProductSpuAudit>\n"
        "\t\t<out_product_id>spu_123</out_product_id>\n\t\t<product_id>38249023</product_id>\n"
        "\t\t<status>13</status>\n\t\t<reject_reason>xxx原因</reject_reason>\n\t</OpenProductSpuAudit>\n</xml>"
    )
    push = parse_push(parse_xml(data.encode()), MP)
    assert isinstance(push, ShopProductEvent)
    assert push.info is not None
    assert (push.product_id, push.info.out_product_id, push.status, push.info.reject_reason) == (
        "38249023",
        "spu_123",
        13,
        "xxx原因",
    )
    assert push.dedup_key.startswith("shop:38249023:12344555555:open_product_spu_status_update:")


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


def test_text_message_from_mini_program_json() -> None:
    payload = {
        "ToUserName": "toUser",
        "FromUserName": "fromUser",
        "CreateTime": 1482048670,
        "MsgType": "text",
        "Content": "this is a test",
        "MsgId": 1234567890123456,
    }
    push = json_push(payload, MP)
    assert isinstance(push, TextMessage)
    assert (push.content, push.msg_id, push.event_type) == ("this is a test", "1234567890123456", "wechat.mp.text")


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
    push = json_push(payload, MP)
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
    assert push.dedup_key.startswith("evt:fromUser:1348831860:subscribe:")
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
    assert push.dedup_key.startswith("evt:fromUser:1348831860:click:")


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
    assert (push.scan_code_info.scan_type, push.scan_result) == ("qrcode", "1")


@pytest.mark.parametrize("name", ["pic_sysphoto", "pic_photo_or_album", "pic_weixin"])
@pytest.mark.parametrize("count", [1, 2])
def test_picture_menu_events(name: str, count: int) -> None:
    items = "".join(f"<item><PicMd5Sum><![CDATA[md5-{i}]]></PicMd5Sum></item>" for i in range(count))
    push = xml_push(
        event(
            name, f"<EventKey><![CDATA[6]]></EventKey><SendPicsInfo><Count>{count}</Count>\n<PicList>{items}</PicList>"
        )
        + "</SendPicsInfo>"
    )
    assert isinstance(push, PicEvent)
    assert push.send_pics_info is not None and push.send_pics_info.count == count
    assert (push.key, push.pic_md5_sums) == ("6", [f"md5-{i}" for i in range(count)])


def test_location_select_event() -> None:
    push = xml_push(
        event(
            "location_select",
            "<EventKey><![CDATA[6]]></EventKey><SendLocationInfo><Location_X><![CDATA[23]]></Location_X>"
            "<Location_Y><![CDATA[113]]></Location_Y><Scale><![CDATA[15]]></Scale>"
            "<Label><![CDATA[ 广州市海珠区客村艺苑路 106号]]></Label><Poiname><![CDATA[]]></Poiname></SendLocationInfo>",
        )
    )
    assert isinstance(push, LocationSelectEvent)
    info = push.send_location_info
    assert info is not None
    assert (info.location_x, info.location_y, info.scale, info.label, info.poiname) == (
        23.0,
        113.0,
        15,
        "广州市海珠区客村艺苑路 106号",
        "",
    )


@pytest.mark.parametrize("status", ["success", "failed:user block", "failed: system failed"])
def test_templatesendjobfinish(status: str) -> None:
    push = xml_push(event("TEMPLATESENDJOBFINISH", f"<MsgID>200163836</MsgID><Status><![CDATA[{status}]]></Status>"))
    assert isinstance(push, TemplateSendJobFinishEvent)
    assert (push.name, push.msg_id, push.status) == ("templatesendjobfinish", "200163836", status)
    assert push.delivered is (status == "success")
    assert push.dedup_key.startswith("evt:fromUser:1348831860:templatesendjobfinish:")


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


def test_freepublishjobfinish_with_a_newline_wrapped_article_id() -> None:
    push = xml_push(
        event(
            "FREEPUBLISHJOBFINISH",
            "<PublishEventInfo>\n<publish_id>2247503051</publish_id>\n<publish_status>0</publish_status>\n"
            "<article_id>\n            <![CDATA[b5O2OUs25HBxRceL7hfReg-U9QGeq9zQjiDvyWP4Hq4]]>\n        </article_id>\n"
            "<article_detail><count>1</count><item><idx>1</idx><article_url><![CDATA[ARTICLE_URL]]></article_url>"
            "</item></article_detail><fail_idx>1</fail_idx><fail_idx>2</fail_idx></PublishEventInfo>",
        )
    )
    assert isinstance(push, PublishJobFinishEvent)
    info = push.publish_event_info
    assert info is not None and info.article_detail is not None
    assert (info.publish_id, info.publish_status, info.article_id) == (
        "2247503051",
        0,
        "b5O2OUs25HBxRceL7hfReg-U9QGeq9zQjiDvyWP4Hq4",
    )
    assert [(a.idx, a.article_url) for a in info.article_detail.item] == [(1, "ARTICLE_URL")]
    assert info.fail_idx == [1, 2]


SUBSCRIBE_MSG_POPUP = (
    "<SubscribeMsgPopupEvent><List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>"
    "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>"
    "<List><TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId>"
    "<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>2</PopupScene></List>"
    "</SubscribeMsgPopupEvent>"
)


def test_subscribe_msg_popup_with_several_templates() -> None:
    push = xml_push(event("subscribe_msg_popup_event", SUBSCRIBE_MSG_POPUP))
    assert isinstance(push, SubscribeMsgPopupEvent)
    assert isinstance(push, SubscribeMsgEvent)
    assert [(i.template_id, i.subscribe_status, i.popup_scene) for i in push.items] == [
        ("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "accept", "2"),
        ("9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI", "reject", "2"),
    ]
    assert push.accepted == ["VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"]
    assert push.rejected == ["9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"]
    assert push.template_ids == push.accepted + push.rejected


def test_subscribe_msg_change_with_one_template() -> None:
    push = xml_push(
        event(
            "subscribe_msg_change_event",
            "<SubscribeMsgChangeEvent><List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]>"
            "</TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>"
            "</SubscribeMsgChangeEvent>",
        )
    )
    assert isinstance(push, SubscribeMsgChangeEvent)
    assert push.name == "subscribe_msg_change_event"
    assert [(i.template_id, i.subscribe_status) for i in push.items] == [
        ("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "reject")
    ]
    assert (push.accepted, push.rejected) == ([], ["VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"])


def test_subscribe_msg_sent_keeps_the_64_bit_msg_id() -> None:
    push = xml_push(
        event(
            "subscribe_msg_sent_event",
            "<SubscribeMsgSentEvent>\n    <List>\n<TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]>"
            "</TemplateId>\n<MsgID>1700827132819554304</MsgID>\n<ErrorCode>0</ErrorCode>\n"
            "<ErrorStatus><![CDATA[success]]></ErrorStatus>\n</List>\n</SubscribeMsgSentEvent>",
        )
    )
    assert isinstance(push, SubscribeMsgSentEvent)
    (item,) = push.items
    assert (item.msg_id, item.error_code, item.error_status, item.delivered) == (
        "1700827132819554304",
        "0",
        "success",
        True,
    )


SUBSCRIBE_ONE = {
    "TemplateId": "hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgN5Wa5hY",
    "SubscribeStatusString": "accept",
    "PopupScene": "0",
}
SUBSCRIBE_TWO = {**SUBSCRIBE_ONE, "TemplateId": "other", "SubscribeStatusString": "reject", "PopupScene": 1}


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        # The mini-program doc: "List" at the top level, an object for one template...
        ({"List": SUBSCRIBE_ONE}, ["hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgN5Wa5hY"]),
        # ...and an array for several (SKIT's SubscribeMessagePopupEvent.List.json).
        ({"List": [SUBSCRIBE_ONE, SUBSCRIBE_TWO]}, ["hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgN5Wa5hY", "other"]),
        # Seen in the wild: the per-event key holds the array itself.
        ({"SubscribeMsgPopupEvent": [SUBSCRIBE_ONE]}, ["hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgN5Wa5hY"]),
        # The XML shape mirrored into JSON.
        ({"SubscribeMsgPopupEvent": {"List": [SUBSCRIBE_TWO, SUBSCRIBE_ONE]}}, ["other", SUBSCRIBE_ONE["TemplateId"]]),
        ({"SubscribeMsgPopupEvent": {"List": SUBSCRIBE_TWO}}, ["other"]),
    ],
    ids=["top-level-object", "top-level-array", "container-array", "container-list-array", "container-list-object"],
)
def test_subscribe_msg_popup_from_mini_program_json(shape: dict[str, Any], expected: list[str]) -> None:
    payload = {
        "ToUserName": "gh_123456789abc",
        "FromUserName": "o7esq5OI1Ss7mBT4-1AsW2BanpR1",
        "CreateTime": "1620963428",
        "MsgType": "event",
        "Event": "subscribe_msg_popup_event",
        **shape,
    }
    push = json_push(payload, MP)
    assert isinstance(push, SubscribeMsgPopupEvent)
    assert push.create_time == 1620963428
    assert push.template_ids == expected
    assert push.accepted == [t for t in expected if t != "other"]
    assert push.rejected == [t for t in expected if t == "other"]
    assert {i.popup_scene for i in push.items} <= {"0", "1"}


def test_subscribe_msg_sent_from_mini_program_json_with_a_bom() -> None:
    body = (
        BOM + '{"ToUserName": "gh_123456789abc", "FromUserName": "o7esq5PHRGBQYmeNyfG064wEFVpQ",'
        ' "CreateTime": "1620963428", "MsgType": "event", "Event": "subscribe_msg_sent_event",'
        ' "List": [{"TemplateId": "BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8", "MsgID": "1864323726461255680",'
        ' "ErrorCode": "0", "ErrorStatus": "success"}]}'
    )
    push = parse_push(parse_json(body.encode()), MP)
    assert isinstance(push, SubscribeMsgSentEvent)
    assert [(i.template_id, i.msg_id, i.delivered) for i in push.items] == [
        ("BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8", "1864323726461255680", True)
    ]


@pytest.mark.parametrize("extra", ["", "<SubscribeMsgPopupEvent></SubscribeMsgPopupEvent>"])
def test_subscribe_msg_event_without_a_list(extra: str) -> None:
    push = xml_push(event("subscribe_msg_popup_event", extra))
    assert isinstance(push, SubscribeMsgEvent)
    assert (push.items, push.accepted) == ([], [])


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
    assert push.dedup_key.startswith("evt:oMP:1482048670:user_enter_tempsession:")


def test_kf_session_events() -> None:
    push = xml_push(
        event("kf_switch_session", "<FromKfAccount><![CDATA[test1@test]]></FromKfAccount>")
        + "<ToKfAccount><![CDATA[test2@test]]></ToKfAccount>"
    )
    assert isinstance(push, KfSessionEvent)
    assert (push.from_kf_account, push.to_kf_account) == ("test1@test", "test2@test")
    created = xml_push(event("kf_create_session", "<KfAccount><![CDATA[test1@test]]></KfAccount>"))
    assert isinstance(created, KfSessionEvent) and created.kf_account == "test1@test"


def test_user_authorization_revoke_and_user_info_modified() -> None:
    base = {"ToUserName": "gh_870882ca4b1", "FromUserName": "oaKk346BaWE-eIn4oSRWbaM9vR7s", "CreateTime": 1627359464}
    revoke = json_push(
        {
            **base,
            "MsgType": "event",
            "Event": "user_authorization_revoke",
            "OpenID": "oaKk343WOktAaT2ygsX138BGblrg",
            "AppID": "wx13974bf780d3dc89",
            "RevokeInfo": "201",
        },
        MP,
    )
    assert isinstance(revoke, UserAuthorizationRevokeEvent)
    assert (revoke.openid, revoke.appid, revoke.revoke_info) == (
        "oaKk343WOktAaT2ygsX138BGblrg",
        "wx13974bf780d3dc89",
        "201",
    )
    modified = json_push(
        {
            **base,
            "MsgType": "event",
            "Event": "user_info_modified",
            "openid": "oaKk343WOktAaT2ygsX138BGblrg",
            "appid": "wx13974bf780d3dc89",
        },
        MP,
    )
    assert isinstance(modified, UserInfoModifiedEvent)
    assert (modified.openid, modified.appid) == ("oaKk343WOktAaT2ygsX138BGblrg", "wx13974bf780d3dc89")


def test_wxa_media_check_v2() -> None:
    payload = {
        "ToUserName": "gh_9df7d78a1234",
        "FromUserName": "o4_t144jTUSEoxydysUA2E234_tc",
        "CreateTime": 1626959646,
        "MsgType": "event",
        "Event": "wxa_media_check",
        "appid": "wx8f16a5be77871234",
        "trace_id": "60f96f1d-3845297a-1976a3ae",
        "version": 2,
        "detail": [{"strategy": "content_model", "errcode": 0, "suggest": "pass", "label": 100, "prob": 90}],
        "result": {"suggest": "pass", "label": 100},
    }
    push = json_push(payload, MP)
    assert isinstance(push, WxaMediaCheckEvent)
    assert push.result is not None
    assert (push.trace_id, push.version, push.result.suggest, push.result.label) == (
        "60f96f1d-3845297a-1976a3ae",
        2,
        "pass",
        100,
    )
    assert push.detail[0]["strategy"] == "content_model"


@pytest.mark.parametrize(
    ("name", "extra", "field", "value"),
    [
        ("weapp_audit_success", "<SuccTime>1488856741</SuccTime>", "succ_time", 1488856741),
        ("weapp_audit_fail", "<Reason><![CDATA[1:描述]]></Reason><FailTime>1488856741</FailTime>", "reason", "1:描述"),
        (
            "weapp_audit_delay",
            "<Reason><![CDATA[x]]></Reason><DelayTime>1488856741</DelayTime>",
            "delay_time",
            1488856741,
        ),
    ],
)
def test_weapp_audit_events(name: str, extra: str, field: str, value: object) -> None:
    push = xml_push(event(name, extra), MP)
    assert isinstance(push, WeappAuditEvent)
    assert getattr(push, field) == value


def test_legacy_merchant_order() -> None:
    push = xml_push(
        event("merchant_order", "<OrderId><![CDATA[test_order_id]]></OrderId><OrderStatus>2</OrderStatus>")
        + "<ProductId><![CDATA[test_product_id]]></ProductId><SkuInfo><![CDATA[10001:1000012;10002:100021]]></SkuInfo>"
    )
    assert isinstance(push, MerchantOrderEvent)
    assert (push.order_id, push.order_status, push.product_id) == ("test_order_id", 2, "test_product_id")


def test_card_event() -> None:
    push = xml_push(
        event("user_get_card", "<CardId><![CDATA[po2VNuCuRo-8sxxxxxxxxxxx]]></CardId>")
        + "<IsGiveByFriend>0</IsGiveByFriend><UserCardCode><![CDATA[226009850808]]></UserCardCode>"
        "<OuterStr><![CDATA[12b]]></OuterStr><UnionId>o6_bmasdasdsad6_2sgVt7hMZOPfL</UnionId>"
    )
    assert isinstance(push, CardEvent)
    assert (push.card_id, push.user_card_code, push.outer_str, push.union_id) == (
        "po2VNuCuRo-8sxxxxxxxxxxx",
        "226009850808",
        "12b",
        "o6_bmasdasdsad6_2sgVt7hMZOPfL",
    )


# --- wechatpy as the oracle -------------------------------------------------------------------------

ORACLE_CASES = [
    (
        "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[ 你好 ]]></Content><MsgId>1234567890123456</MsgId>",
        [("content", "content"), ("msg_id", "id")],
    ),
    (
        "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[u]]></PicUrl><MediaId><![CDATA[m]]></MediaId><MsgId>2</MsgId>",
        [("pic_url", "image"), ("media_id", "media_id")],
    ),
    (
        "<MsgType><![CDATA[voice]]></MsgType><MediaId>m</MediaId><Format>amr</Format><Recognition>r</Recognition>"
        "<MsgId>3</MsgId>",
        [("media_id", "media_id"), ("format", "format"), ("recognition", "recognition")],
    ),
    (
        "<MsgType><![CDATA[shortvideo]]></MsgType><MediaId>m</MediaId><ThumbMediaId>t</ThumbMediaId><MsgId>4</MsgId>",
        [("media_id", "media_id"), ("thumb_media_id", "thumb_media_id")],
    ),
    (
        "<MsgType><![CDATA[link]]></MsgType><Title>t</Title><Description>d</Description><Url>u</Url><MsgId>5</MsgId>",
        [("title", "title"), ("description", "description"), ("url", "url")],
    ),
    (event("CLICK", "<EventKey><![CDATA[\n EVENTKEY \n]]></EventKey>"), [("key", "key")]),
    (event("VIEW", "<EventKey><![CDATA[www.qq.com]]></EventKey>"), [("url", "url")]),
    (event("SCAN", "<EventKey>SCENE</EventKey><Ticket>T</Ticket>"), [("scene", "scene_id"), ("ticket", "ticket")]),
    (event("subscribe", "<EventKey>qrscene_42</EventKey><Ticket>T</Ticket>"), [("scene", "scene_id")]),
    (
        event("LOCATION", "<Latitude>23.1</Latitude><Longitude>113.3</Longitude><Precision>119</Precision>"),
        [
            ("latitude", "latitude"),
            ("longitude", "longitude"),
            ("precision", "precision"),
        ],
    ),
    (event("TEMPLATESENDJOBFINISH", "<MsgID>200163836</MsgID><Status>success</Status>"), [("status", "status")]),
    (
        event("MASSSENDJOBFINISH", "<MsgID>1000001625</MsgID><Status>err(30003)</Status><TotalCount>0</TotalCount>"),
        [
            ("status", "status"),
            ("total_count", "total_count"),
        ],
    ),
    (
        event(
            "scancode_waitmsg",
            "<EventKey>6</EventKey><ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>2</ScanResult></ScanCodeInfo>",
        ),
        [("key", "key"), ("scan_result", "scan_result")],
    ),
    (
        event("view_miniprogram", "<EventKey>pages/index/index</EventKey><MenuId>M</MenuId>"),
        [
            ("page_path", "page_path"),
            ("menu_id", "menu_id"),
        ],
    ),
    (event("user_enter_tempsession", "<SessionFrom>from</SessionFrom>"), [("session_from", "session_from")]),
    (event("kf_close_session", "<KfAccount>test1@test</KfAccount>"), [("kf_account", "account")]),
]


@pytest.mark.parametrize(("body", "fields"), ORACLE_CASES)
def test_models_agree_with_wechatpy(body: str, fields: list[tuple[str, str]]) -> None:
    data = xml_of(body).replace("fromUser", " \n fromUser\n ")
    push = parse_push(parse_xml(data.encode()), OA)
    oracle = parse_message(data)
    assert (push.from_user_name, push.to_user_name, push.create_time) == (oracle.source, oracle.target, oracle.time)
    for ours, theirs in fields:
        mine, expected = getattr(push, ours), getattr(oracle, theirs)
        assert (str(mine) if ours == "msg_id" else mine) == (str(expected) if ours == "msg_id" else expected), ours


# --- WeChat Shop ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order_id", [ORDER_ID, str(ORDER_ID)], ids=["json-int", "json-string"])
def test_shop_order_id_survives_exactly_from_json(order_id: int | str) -> None:
    push = shop_push("channels_ec_order_new", {"order_info": {"order_id": order_id}})
    assert isinstance(push, ShopOrderEvent)
    assert push.order_id == "3705115058471208928"
    assert push.object_id == "3705115058471208928"
    assert push.dedup_key.startswith("shop:3705115058471208928:1662480000:channels_ec_order_new:")
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
    assert (push.order_id, push.status) == (str(ORDER_ID), 20)


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
    body = {
        key: {
            "status": "USER_WAIT_RETURN",
            "after_sale_order_id": 1234567,
            "order_id": ORDER_ID,
            "wxa_vip_discounted_price": 100,
        }
    }
    push = shop_push(name, body)
    assert isinstance(push, ShopAfterSaleEvent)
    assert (push.after_sale_order_id, push.order_id, push.status) == ("1234567", str(ORDER_ID), "USER_WAIT_RETURN")
    assert push.info is not None and push.info.wxa_vip_discounted_price == 100
    assert push.dedup_key.startswith(f"shop:1234567:1662480000:{name}:")


def test_shop_aftersale_object_sent_as_a_string_is_tolerated() -> None:
    push = shop_push(
        "channels_ec_aftersale_update", {"finder_shop_aftersale_status_update": "status:X\nafter_sale_order_id:1"}
    )
    assert isinstance(push, ShopAfterSaleEvent)
    assert push.info is None and push.after_sale_order_id is None and push.status is None
    assert push.dedup_key.startswith("shop:OPENID:1662480000:channels_ec_aftersale_update:")


def test_shop_complaint_event() -> None:
    body = {
        "finder_shop_complaint": {
            "complaint_status": 100,
            "after_sale_order_id": "1234567",
            "complaint_id": "99",
            "order_id": "123244",
        }
    }
    push = shop_push("channels_ec_complaint_update", body)
    assert isinstance(push, ShopAfterSaleEvent)
    assert push.info is not None and (push.info.complaint_id, push.info.complaint_status) == ("99", 100)
    assert push.object_id == "99"


@pytest.mark.parametrize(
    "body",
    [
        {
            "finder_shop_guarantee_status_update": {
                "status": "STATUS_PAY_SUCC",
                "guarantee_order_id": "1234567",
                "order_id": "12345",
            }
        },
        {"status": "STATUS_PAY_SUCC", "guarantee_order_id": 1234567, "order_id": 12345},
    ],
    ids=["nested-as-skit", "flat-as-shop-md"],
)
def test_shop_guarantee_update(body: dict[str, Any]) -> None:
    push = shop_push("channels_ec_guarantee_update", body)
    assert isinstance(push, ShopGuaranteeEvent)
    assert (push.guarantee_order_id, push.order_id, push.status) == ("1234567", "12345", "STATUS_PAY_SUCC")
    assert push.dedup_key.startswith("shop:1234567:1662480000:channels_ec_guarantee_update:")


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
    assert (push.product_id, push.status) == ("12345678", 3)
    assert push.info is not None and push.info.reason == "abc"
    assert push.dedup_key.startswith(f"shop:12345678:1662480000:{name}:")


def test_shop_spu_audit_keeps_its_audit_info_string() -> None:
    audit_info = '{"busi_audit_info":{"item_list":[{"busi_show_field_api":"product.cat_v2"}]}}'
    push = shop_push("product_spu_audit", {"ProductSpuAudit": {"product_id": 1, "status": 2, "audit_info": audit_info}})
    assert isinstance(push, ShopProductEvent)
    assert push.info is not None and json.loads(push.info.audit_info or "")["busi_audit_info"]


@pytest.mark.parametrize("key", ["OpenProductSpuStatusUpdate", "OpenProductSpuAudit"])
def test_open_product_spu_status_update_on_the_mini_program(key: str) -> None:
    payload = shop_payload(
        "open_product_spu_status_update",
        {key: {"out_product_id": "spu_123", "product_id": 38249023, "status": 13, "reject_reason": "x"}},
    )
    push = json_push(payload, MP)
    assert isinstance(push, ShopProductEvent)
    assert (push.product_id, push.status, push.is_shop) == ("38249023", 13, True)
    assert push.event_type == "wechat.mp.open_product_spu_status_update"


def test_shop_stock_event() -> None:
    body = {"product_id": 10000029995861, "sku_id": 1, "remaining_stock_amount": 2, "remaining_code_amount": 0}
    push = shop_push("channels_ec_stock_no_enough", {"channels_ec_stock_no_enough": body})
    assert isinstance(push, ShopProductEvent)
    assert push.info is not None
    assert (push.product_id, push.info.sku_id, push.info.remaining_stock_amount) == ("10000029995861", "1", 2)
    assert push.object_id == "10000029995861:1"


@pytest.mark.parametrize(
    ("name", "body", "audit_id", "brand_id"),
    [
        (
            "product_category_audit",
            {"ProductCategoryAudit": {"audit_id": "123456", "status": "1", "reason": "r"}},
            "123456",
            None,
        ),
        (
            "channels_ec_brand",
            {"BrandEvent": {"brand_id": "10002934", "audit_id": "12345678", "status": 3, "reason": ""}},
            "12345678",
            "10002934",
        ),
    ],
)
def test_shop_category_and_brand_audits(name: str, body: dict[str, Any], audit_id: str, brand_id: str | None) -> None:
    push = shop_push(name, body)
    assert isinstance(push, ShopAuditEvent)
    assert push.info is not None
    assert (push.info.audit_id, push.info.brand_id) == (audit_id, brand_id)
    assert push.info.status in (1, 3)


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
    info: dict[str, Any] = {"coupon_id": "19126", "receive_time": "1662480000", "use_time": ""}
    if key != "coupon_info":
        info["user_coupon_id"] = 29730
    push = shop_push(name, {key: info})
    assert isinstance(push, ShopCouponEvent)
    assert push.coupon_id == "19126"
    assert push.info is not None and (push.info.receive_time, push.info.use_time) == (1662480000, None)
    # A user coupon is the specific object: one coupon is received by many users in the same second.
    assert push.object_id == expected_id


def test_shop_voucher_send_succ() -> None:
    voucher = {"code": "123456", "code_type": 1, "status": 1, "send_time": 1662480000, "voucher_buy_amount": 990}
    push = shop_push("channels_ec_voucher_send_succ", {"voucher_list": [voucher]})
    assert isinstance(push, ShopVoucherEvent)
    assert [(v.code, v.voucher_buy_amount) for v in push.voucher_list] == [("123456", 990)]


@pytest.mark.parametrize(
    ("name", "body", "field", "value"),
    [
        ("channels_ec_acct_notify", {"account_info": {"event": 1}}, "event", 1),
        ("channels_ec_withdraw_notify", {"withdraw_info": {"event": 2, "withdraw_id": 7788}}, "withdraw_id", "7788"),
        ("qrcode_status", {"qrcode_info": {"ticket": "T", "status": 1, "scan_user_type": 2}}, "ticket", "T"),
    ],
)
def test_shop_funds_events(name: str, body: dict[str, Any], field: str, value: object) -> None:
    push = shop_push(name, body)
    assert isinstance(push, ShopFundsEvent) and push.is_shop
    assert push.info is not None and getattr(push.info, field) == value


def test_shop_vip_score_update() -> None:
    push = shop_push("channels_ec_vip_score_update", {"user_info": {"score": 100, "delta_score": -10, "flow_type": 3}})
    assert isinstance(push, ShopVipEvent)
    assert push.info is not None
    assert (push.info.score, push.info.delta_score, push.info.flow_type, push.openid) == (100, -10, 3, "OPENID")
    assert push.dedup_key.startswith("shop:OPENID:1662480000:channels_ec_vip_score_update:")


@pytest.mark.parametrize("name", ["channels_ec_vip_join", "channels_ec_vip_close", "channels_ec_vip_grade_info_update"])
def test_shop_vip_membership_events(name: str) -> None:
    push = shop_push(name, {"user_info": {"join_time": 1662480000, "grade": 2, "experience_value": 300}})
    assert isinstance(push, ShopVipEvent)
    assert push.info is not None and (push.info.grade, push.info.experience_value) == (2, 300)


def test_shop_vip_score_exchange() -> None:
    body = {
        "exchange_info": {
            "pay_score": 100,
            "score_item_type": 1,
            "coupon_info": {"related_coupon_id": 3705115058471208929},
        }
    }
    push = shop_push("channels_ec_vip_score_exchange", body)
    assert isinstance(push, ShopVipEvent)
    assert push.exchange_info is not None and push.exchange_info.coupon_info is not None
    assert (push.exchange_info.pay_score, push.exchange_info.score_item_type) == (100, 1)
    assert push.exchange_info.coupon_info.related_coupon_id == "3705115058471208929"


def test_shop_vip_callbacks_to_the_mini_program() -> None:
    added = shop_push(
        "channels_ec_vip_user_auto_add",
        {"info": {"shop_appid": "wxshop", "outer_userid": "m-1", "identity": "V1", "add_time": 1666673734}},
    )
    assert isinstance(added, ShopVipCallbackEvent) and added.info is not None
    assert (added.info.shop_appid, added.info.outer_userid, added.info.add_time) == ("wxshop", "m-1", 1666673734)
    asked = shop_push("channels_ec_vip_user_info_get", {"info": {"shop_appid": "wxshop"}})
    assert isinstance(asked, ShopVipCallbackEvent) and asked.info is not None and asked.info.shop_appid == "wxshop"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        (
            "channels_ec_order_use_vip_discount",
            {
                "order_info": {
                    "shop_appid": "wxshop",
                    "order_session_id": "s-1",
                    "scene": 2,
                    "unique_id": 987654321987654321,
                    "price_info": {"vip_discounted_price": 300, "product_price_before_vip_discount": 3000},
                }
            },
        ),
        ("channels_ec_order_unuse_vip_discount", {"order_session_id": "s-1", "unique_id": "987654321987654321"}),
    ],
    ids=["use", "unuse-flat"],
)
def test_shop_vip_discount_callbacks(name: str, body: dict[str, Any]) -> None:
    push = shop_push(name, body)
    assert isinstance(push, ShopVipDiscountEvent)
    assert push.unique_id == "987654321987654321"
    assert push.info is not None and push.info.order_session_id == "s-1"
    if name.endswith("_use_vip_discount"):
        assert push.info.price_info is not None and push.info.price_info.vip_discounted_price == 300


def test_shop_sharer_change() -> None:
    push = shop_push("channels_ec_sharer_change", {"openid": "oSharer", "sharer_type": "1", "bind_status": 2})
    assert isinstance(push, ShopSharerChangeEvent)
    assert (push.sharer_openid, push.sharer_type, push.bind_status) == ("oSharer", 1, 2)


def test_shop_store_events() -> None:
    closed = shop_push("channels_ec_close_store", {"appid": "wxshop", "close_timestamp": 1662480000})
    assert isinstance(closed, ShopStoreEvent) and closed.close_timestamp == 1662480000
    renamed = shop_push("set_shop_nickname", {"appid": "wxshop", "old_nickname": "a", "new_nickname": "b"})
    assert isinstance(renamed, ShopStoreEvent) and (renamed.old_nickname, renamed.new_nickname) == ("a", "b")


def test_shop_head_supplier_item_update() -> None:
    body = {
        "item_info": {
            "event_type": 2,
            "appid": "APPID",
            "product_id": "12345",
            "version": "1677488955",
            "update_fields": ["commission_ratio", "service_ratio", "status", "active_time"],
        }
    }
    push = shop_push("head_supplier_item_update", body)
    assert isinstance(push, ShopHeadSupplierItemEvent)
    assert (push.product_id, push.version) == ("12345", "1677488955")
    assert push.info is not None and push.info.update_fields == [
        "commission_ratio",
        "service_ratio",
        "status",
        "active_time",
    ]


def test_shop_head_supplier_commission_order_update() -> None:
    body = {
        "order_info": {
            "order_id": ORDER_ID,
            "sku_id": 1,
            "commission_order_status": 20,
            "order_status": 20,
            "version": 7,
        }
    }
    push = shop_push("head_supplier_commission_order_update", body)
    assert isinstance(push, ShopCommissionOrderEvent)
    assert push.info is not None
    assert (push.order_id, push.info.sku_id, push.info.version) == (str(ORDER_ID), "1", "7")


@pytest.mark.parametrize("name", ["dropship_order_new", "dropship_order_update", "dropship_order_cancel"])
def test_shop_dropship_events(name: str) -> None:
    push = shop_push(name, {"ds_order_id": "4400123343235833535", "update_time": 1662480000})
    assert isinstance(push, ShopDropshipEvent)
    assert (push.ds_order_id, push.update_time) == ("4400123343235833535", 1662480000)
    assert push.dedup_key.startswith(f"shop:4400123343235833535:1662480000:{name}:")


def test_shop_ewaybill_push_path() -> None:
    body = {
        "waybill_info": {
            "ewaybill_order_id": 123123123123123,
            "waybill_id": "xxxx",
            "update_time": 1231231,
            "status": 1,
            "desc": "您的快件已签收",
        }
    }
    push = shop_push("ewaybill_push_path", body)
    assert isinstance(push, ShopEwaybillPathEvent)
    assert push.info is not None
    assert (push.ewaybill_order_id, push.info.waybill_id, push.info.status, push.info.desc) == (
        "123123123123123",
        "xxxx",
        1,
        "您的快件已签收",
    )


@pytest.mark.parametrize("key", ["EventData", "Data"])
def test_cooperation_shop_order_on_the_mini_program(key: str) -> None:
    push = json_push(shop_payload("cooperation_shop_order", {key: {"shop_appid": "wxshop", "order_id": "1"}}), MP)
    assert isinstance(push, ShopCooperationOrderEvent)
    assert push.info is not None and (push.info.shop_appid, push.info.order_id) == ("wxshop", "1")


def test_unknown_shop_event_still_gets_a_shop_dedup_key() -> None:
    push = shop_push("channels_ec_brand_new_thing", {"some_object": {"order_id": ORDER_ID}})
    assert isinstance(push, UnknownPush)
    assert push.name == "channels_ec_brand_new_thing"
    assert push.dedup_key.startswith(f"shop:{ORDER_ID}:1662480000:channels_ec_brand_new_thing:")


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
    assert push.dedup_key.startswith(f"shop:{ORDER_ID}:1662480000:channels_ec_order_cancel:")
    assert push.event_type == "wechat.mp.channels_ec_order_cancel"


# --- unknown and malformed --------------------------------------------------------------------------


def test_unknown_message_type() -> None:
    push = xml_push("<MsgType><![CDATA[hologram]]></MsgType><MsgId>7</MsgId>")
    assert isinstance(push, UnknownPush)
    assert (push.name, push.msg_id, push.raw["MsgType"]) == ("hologram", "7", "hologram")
    assert push.dedup_key == "msg:fromUser:1348831860:7"


def test_unknown_event_is_kept_whole() -> None:
    push = xml_push(event(" Brand_New_Event ", "<Something><![CDATA[x]]></Something>"))
    assert isinstance(push, UnknownPush)
    assert (push.name, push.event) == ("brand_new_event", "Brand_New_Event")
    assert push.dedup_key.startswith("evt:fromUser:1348831860:brand_new_event:")
    assert push.raw["Something"] == "x"
    assert push.event_type == "wechat.oa.brand_new_event"


def test_event_without_an_event_name_is_unknown() -> None:
    push = xml_push("<MsgType><![CDATA[event]]></MsgType>")
    assert isinstance(push, UnknownPush)
    assert push.name == "event"


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


@pytest.mark.parametrize("value", ["", " \n\t ", 42, None, ["u"]])
def test_empty_or_non_string_from_user_is_malformed(value: object) -> None:
    with pytest.raises(MalformedPush, match="FromUserName"):
        parse_push({**ENVELOPE, "FromUserName": value}, OA)


def test_missing_to_user_name_is_tolerated() -> None:
    payload = {k: v for k, v in ENVELOPE.items() if k != "ToUserName"}
    assert parse_push(payload, OA).to_user_name == ""


@pytest.mark.parametrize(
    "body",
    [
        event("LOCATION", "<Latitude>north</Latitude>"),
        "<MsgType>location</MsgType><Scale>far</Scale><MsgId>1</MsgId>",
        event("SCAN", "<EventKey><A>1</A></EventKey>"),
    ],
)
def test_badly_typed_field_is_malformed_not_a_crash(body: str) -> None:
    with pytest.raises(MalformedPush, match="push: "):
        xml_push(body)


def test_empty_optional_numbers_are_absent_not_malformed() -> None:
    push = xml_push(event("LOCATION", "<Latitude></Latitude><Longitude> </Longitude>"))
    assert isinstance(push, LocationEvent)
    assert (push.latitude, push.longitude, push.precision) == (None, None, None)


def test_models_are_frozen() -> None:
    push = xml_push(event("subscribe"))
    with pytest.raises(ValueError, match="frozen"):
        push.create_time = 2  # type: ignore[misc]
