"""Typed WeChat pushes, parsed once at the edge (research/wechat.md §2, research/shop.md §1.6).

``parse_push`` takes the dict from ``codec.parse_xml`` or ``codec.parse_json``. That dict is the push
exactly as WeChat sent it (it is stored and published as such); the models are what the SDKs hand
their users:

- Every string a model reads is stripped of surrounding whitespace, as wechatpy does (xmltodict
  strips every text node): WeChat's own samples carry ``<MsgType><![CDATA[ event ]]></MsgType>`` and
  ids wrapped in newlines. ``MsgType`` and ``Event`` compare case-insensitively (``SCAN``/``scan``);
  ``name`` is the lower-cased one.
- XML gives every value as a string while JSON pushes carry numbers, so models coerce both to the
  same types. Ids are strings, exact: a 64-bit ``order_id`` never passes through a float.
- Unknown message or event types become ``UnknownPush``: WeChat adds events without notice and a
  push we cannot name must still be stored and published, never rejected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, ClassVar

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from shared.wechat.apps import AppKind
from shared.wechat.crypto import MalformedPush


def _wx(*keys: str, default: Any = None) -> Any:
    """A field read from WeChat's own key(s)."""
    return Field(default=default, validation_alias=AliasChoices(*keys))


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _blank_to_none(value: Any) -> Any:
    # An empty XML element (<Scale></Scale>) or "" in JSON means "not given", not a bad number.
    return None if isinstance(value, str) and not value.strip() else value


def _as_list(value: Any) -> Any:
    # XML and WeChat's JSON both give one repeated element as an object and several as an array.
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    return value if isinstance(value, list) else [value]


def _items(value: Any) -> Any:
    # XML wraps list members in <item> (<PicList><item>…</item></PicList>).
    if isinstance(value, Mapping) and "item" in value:
        value = value["item"]
    return _as_list(value)


OptInt = Annotated[int | None, BeforeValidator(_blank_to_none)]
OptFloat = Annotated[float | None, BeforeValidator(_blank_to_none)]
StrList = Annotated[list[str], BeforeValidator(_as_list)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", coerce_numbers_to_str=True, str_strip_whitespace=True)


class _ShopObject(_Model):
    # Shop objects grow fields often; keep the ones we do not model instead of dropping them.
    model_config = ConfigDict(extra="allow")


# --- de-duplication ------------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace; a Decimal keeps the digits WeChat sent."""
    if isinstance(value, Mapping):
        members = sorted(((str(k), v) for k, v in value.items()), key=lambda member: member[0])
        return "{" + ",".join(json.dumps(k) + ":" + _canonical(v) for k, v in members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)  # ASCII-escaped, so lone surrogates from JSON escapes hash too


def payload_digest(payload: Mapping[str, Any]) -> str:
    """sha256 of the decoded payload in canonical form.

    The payload is the push as WeChat sent it (values unstripped, numbers as written), so two
    payloads share a digest only if they carry the same content; what the canonical form forgets
    (XML formatting between elements, JSON key order, CDATA versus escaped text) is never the only
    difference between two distinct WeChat pushes.
    """
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


# Shop pushes name their object; the most specific id first (an after-sale also names its order).
# Only for humans reading keys and logs: the digest, not this id, is what keeps keys unique.
_SHOP_PREFIXES = (
    "channels_ec_",
    "product_",
    "head_supplier_",
    "open_product_",
    "dropship_",
    "ewaybill_",
)
_SHOP_ID_KEYS = (
    "complaint_id",
    "after_sale_order_id",
    "guarantee_order_id",
    "ds_order_id",
    "ewaybill_order_id",
    "user_coupon_id",
    "coupon_id",
    "order_id",
    "product_id",
    "audit_id",
    "brand_id",
    "withdraw_id",
    "unique_id",
    "openid",
)


def _shop_object_id(payload: Mapping[str, Any]) -> str | None:
    objects = [payload, *(v for v in payload.values() if isinstance(v, Mapping))]
    for key in _SHOP_ID_KEYS:
        for obj in objects:
            value = _text(obj.get(key))
            if value:
                sku = _text(obj.get("sku_id"))
                return f"{value}:{sku}" if sku else value
    return None


# --- the envelope ------------------------------------------------------------------------------------


class Push(_Model):
    kind: AppKind
    to_user_name: str
    from_user_name: str
    create_time: int
    msg_type: str
    # Messages say MsgId; TEMPLATESENDJOBFINISH, MASSSENDJOBFINISH and shop pushes say MsgID.
    msg_id: str | None = _wx("MsgId", "MsgID")
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return self.msg_type.lower()

    @property
    def is_event(self) -> bool:
        return self.msg_type.lower() == "event"

    @property
    def event_type(self) -> str:
        return f"wechat.{self.kind.event_prefix}.{self.name}"

    @property
    def is_shop(self) -> bool:
        return self.kind is AppKind.SHOP or isinstance(self, ShopEvent) or self.name.startswith(_SHOP_PREFIXES)

    @property
    def subject(self) -> str:
        """Who or what the push is about: the shop object's id for shop pushes, else the user."""
        if self.is_shop:
            return _shop_object_id(self.raw) or self.from_user_name
        return self.from_user_name

    @cached_property
    def dedup_key(self) -> str:
        """The same for WeChat's re-deliveries of one push, different for any two distinct pushes.

        A re-delivery is byte-identical in its decrypted payload, so the payload itself decides.
        Messages keep WeChat's advice, ``MsgId`` (with the user and time: WxJava #333 saw one MsgId
        on voice messages of 15 users). No event has an id that names exactly one push: the
        documented ``FromUserName + CreateTime`` (plus Event/EventKey, as WxJava adds) collapses two
        after-sale changes, two order statuses or two item versions in one second; shop events name
        objects and a job-finish event's MsgID names the job, not the push. So an event's key is
        readable parts (who or what, when, which event) plus the digest of its payload, and two
        pushes differing in any field never share it.
        Two clicks of one menu item by one user within the same second are byte-identical pushes
        (CreateTime has second resolution, nothing else differs) and cannot be told from a
        re-delivery; they count once, which is also what WeChat's own dedup advice does.
        Keys stay under ~150 characters for WeChat's ids and names; the gateway hashes longer ones.
        """
        if self.msg_id and not self.is_event:
            return f"msg:{self.from_user_name}:{self.create_time}:{self.msg_id}"
        prefix = "shop" if self.is_shop else "evt"
        return f"{prefix}:{self.subject}:{self.create_time}:{self.name}:{payload_digest(self.raw)}"


class UnknownPush(Push):
    event: str | None = _wx("Event")

    @property
    def name(self) -> str:
        if self.event and self.is_event:
            return self.event.lower()
        return self.msg_type.lower()


# --- messages --------------------------------------------------------------------------------------


class TextMessage(Push):
    content: str = _wx("Content", default="")
    biz_msg_menu_id: str | None = _wx("bizmsgmenuid")


class ImageMessage(Push):
    pic_url: str | None = _wx("PicUrl")
    media_id: str | None = _wx("MediaId")


class VoiceMessage(Push):
    media_id: str | None = _wx("MediaId")
    format: str | None = _wx("Format")
    recognition: str | None = _wx("Recognition")


class VideoMessage(Push):
    media_id: str | None = _wx("MediaId")
    thumb_media_id: str | None = _wx("ThumbMediaId")


class ShortVideoMessage(VideoMessage):
    pass


class LocationMessage(Push):
    location_x: OptFloat = _wx("Location_X")
    location_y: OptFloat = _wx("Location_Y")
    scale: OptInt = _wx("Scale")
    label: str | None = _wx("Label")


class LinkMessage(Push):
    title: str | None = _wx("Title")
    description: str | None = _wx("Description")
    url: str | None = _wx("Url")


class MiniProgramPageMessage(Push):
    app_id: str | None = _wx("AppId")
    title: str | None = _wx("Title")
    page_path: str | None = _wx("PagePath")
    thumb_url: str | None = _wx("ThumbUrl")
    thumb_media_id: str | None = _wx("ThumbMediaId")


# --- official account / mini-program events -------------------------------------------------------


class EventPush(Push):
    event: str = Field(validation_alias="Event")
    event_key: str | None = _wx("EventKey")

    @property
    def name(self) -> str:
        return self.event.lower()


class SubscribeEvent(EventPush):
    ticket: str | None = _wx("Ticket")

    @property
    def scene(self) -> str | None:
        """The parametric QR code's scene; a plain follow (or a follow after payment) has none."""
        key = self.event_key or ""
        if not key.startswith("qrscene_"):
            return None
        return key.removeprefix("qrscene_") or None


class UnsubscribeEvent(EventPush):
    pass


class ScanEvent(EventPush):
    """An existing follower scanned a parametric QR code: EventKey is the bare scene."""

    ticket: str | None = _wx("Ticket")

    @property
    def scene(self) -> str | None:
        return self.event_key or None


class LocationEvent(EventPush):
    latitude: OptFloat = _wx("Latitude")
    longitude: OptFloat = _wx("Longitude")
    precision: OptFloat = _wx("Precision")


class ClickEvent(EventPush):
    @property
    def key(self) -> str:
        return self.event_key or ""


class ViewEvent(EventPush):
    menu_id: str | None = _wx("MenuId")

    @property
    def url(self) -> str:
        return self.event_key or ""


class ViewMiniProgramEvent(EventPush):
    menu_id: str | None = _wx("MenuId")

    @property
    def page_path(self) -> str:
        return self.event_key or ""


class ScanCodeInfo(_Model):
    scan_type: str | None = _wx("ScanType")
    scan_result: str | None = _wx("ScanResult")


class ScanCodeEvent(EventPush):
    """scancode_push and scancode_waitmsg: a menu button that opened the QR scanner."""

    scan_code_info: ScanCodeInfo | None = _wx("ScanCodeInfo")

    @property
    def key(self) -> str:
        return self.event_key or ""

    @property
    def scan_result(self) -> str | None:
        return self.scan_code_info.scan_result if self.scan_code_info else None


class PicItem(_Model):
    pic_md5_sum: str | None = _wx("PicMd5Sum")


class SendPicsInfo(_Model):
    count: OptInt = _wx("Count")
    pic_list: Annotated[list[PicItem], BeforeValidator(_items)] = _wx("PicList", default=[])


class PicEvent(EventPush):
    """pic_sysphoto, pic_photo_or_album and pic_weixin: a menu button that sent the user's pictures."""

    send_pics_info: SendPicsInfo | None = _wx("SendPicsInfo")

    @property
    def key(self) -> str:
        return self.event_key or ""

    @property
    def pic_md5_sums(self) -> list[str]:
        pics = self.send_pics_info.pic_list if self.send_pics_info else []
        return [p.pic_md5_sum for p in pics if p.pic_md5_sum]


class SendLocationInfo(_Model):
    location_x: OptFloat = _wx("Location_X")
    location_y: OptFloat = _wx("Location_Y")
    scale: OptInt = _wx("Scale")
    label: str | None = _wx("Label")
    poiname: str | None = _wx("Poiname")


class LocationSelectEvent(EventPush):
    send_location_info: SendLocationInfo | None = _wx("SendLocationInfo")

    @property
    def key(self) -> str:
        return self.event_key or ""


class TemplateSendJobFinishEvent(EventPush):
    status: str | None = _wx("Status")  # "success", "failed:user block", "failed: system failed"

    @property
    def delivered(self) -> bool:
        return (self.status or "").lower() == "success"


class MassSendJobFinishEvent(EventPush):
    status: str | None = _wx("Status")
    total_count: OptInt = _wx("TotalCount")
    filter_count: OptInt = _wx("FilterCount")
    sent_count: OptInt = _wx("SentCount")
    error_count: OptInt = _wx("ErrorCount")


class PublishArticle(_Model):
    idx: OptInt = None
    article_url: str | None = None


class PublishArticleDetail(_Model):
    count: OptInt = None
    item: Annotated[list[PublishArticle], BeforeValidator(_as_list)] = []


class PublishEventInfo(_Model):
    publish_id: str | None = None
    publish_status: OptInt = None  # 0 success, 1 publishing, 2 original-content failure, ...
    article_id: str | None = None
    article_detail: PublishArticleDetail | None = None
    fail_idx: Annotated[list[int], BeforeValidator(_as_list)] = []


class PublishJobFinishEvent(EventPush):
    """FREEPUBLISHJOBFINISH: the async result of a free publish (wechat.md lists it as PUBLISHJOBFINISH)."""

    publish_event_info: PublishEventInfo | None = _wx("PublishEventInfo")


class SubscribeMsgItem(_Model):
    template_id: str | None = _wx("TemplateId")
    subscribe_status: str | None = _wx("SubscribeStatusString")  # accept | reject
    popup_scene: str | None = _wx("PopupScene")  # 0 mini-program, 1 H5, 2 article
    msg_id: str | None = _wx("MsgID", "MsgId")
    error_code: str | None = _wx("ErrorCode")
    error_status: str | None = _wx("ErrorStatus")

    @property
    def accepted(self) -> bool:
        # Mini-programs also report "acceptWithAudio"/"acceptWithAlert" for reminder variants.
        return (self.subscribe_status or "").lower().startswith("accept")

    @property
    def delivered(self) -> bool:
        """subscribe_msg_sent_event: the notice reached the user."""
        return self.error_code == "0"


_SUBSCRIBE_MSG_CONTAINERS = {
    "subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
    "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
    "subscribe_msg_sent_event": "SubscribeMsgSentEvent",
}


class SubscribeMsgEvent(EventPush):
    """subscribe_msg_popup_event, subscribe_msg_change_event and subscribe_msg_sent_event."""

    items: list[SubscribeMsgItem] = []

    @model_validator(mode="before")
    @classmethod
    def _collect_items(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        # XML wraps <List> in a per-event element; mini-program JSON puts "List" at the top level or
        # makes the per-event key itself the array. One template arrives as an object, several as an
        # array, in either format.
        name = _text(data.get("Event")).lower()
        container = data.get(_SUBSCRIBE_MSG_CONTAINERS.get(name, ""), data)
        found = container.get("List") if isinstance(container, Mapping) else container
        return {**data, "items": _as_list(found)}

    @property
    def template_ids(self) -> list[str]:
        return [i.template_id for i in self.items if i.template_id]

    @property
    def accepted(self) -> list[str]:
        """Template ids the user accepted (popup) or kept (change)."""
        return [i.template_id for i in self.items if i.template_id and i.accepted]

    @property
    def rejected(self) -> list[str]:
        return [i.template_id for i in self.items if i.template_id and i.subscribe_status and not i.accepted]


class SubscribeMsgPopupEvent(SubscribeMsgEvent):
    pass


class SubscribeMsgChangeEvent(SubscribeMsgEvent):
    pass


class SubscribeMsgSentEvent(SubscribeMsgEvent):
    pass


class UserEnterTempSessionEvent(EventPush):
    session_from: str | None = _wx("SessionFrom")


class KfSessionEvent(EventPush):
    """kf_create_session, kf_close_session and kf_switch_session."""

    kf_account: str | None = _wx("KfAccount")
    from_kf_account: str | None = _wx("FromKfAccount")
    to_kf_account: str | None = _wx("ToKfAccount")


class UserInfoModifiedEvent(EventPush):
    openid: str | None = _wx("openid", "OpenID")
    appid: str | None = _wx("appid", "AppID")


class UserAuthorizationRevokeEvent(EventPush):
    openid: str | None = _wx("OpenID", "openid")
    appid: str | None = _wx("AppID", "appid")
    revoke_info: str | None = _wx("RevokeInfo")  # the revoked scopes, e.g. "201"


class MediaCheckResult(_Model):
    suggest: str | None = None  # pass | review | risky
    label: OptInt = None


class WxaMediaCheckEvent(EventPush):
    """The async result of a mini-program media security check (v1: isrisky; v2: result)."""

    appid: str | None = _wx("appid")
    trace_id: str | None = _wx("trace_id")
    version: OptInt = _wx("version")
    is_risky: OptInt = _wx("isrisky")
    status_code: OptInt = _wx("status_code")
    extra_info_json: str | None = _wx("extra_info_json")
    result: MediaCheckResult | None = _wx("result")
    detail: Annotated[list[dict[str, Any]], BeforeValidator(_as_list)] = _wx("detail", default=[])


class WeappAuditEvent(EventPush):
    """weapp_audit_success, weapp_audit_fail and weapp_audit_delay."""

    succ_time: OptInt = _wx("SuccTime")
    fail_time: OptInt = _wx("FailTime")
    delay_time: OptInt = _wx("DelayTime")
    reason: str | None = _wx("Reason")
    screen_shot: str | None = _wx("ScreenShot")


class MerchantOrderEvent(EventPush):
    """merchant_order: the legacy (v1) WeChat store's order push."""

    order_id: str | None = _wx("OrderId")
    order_status: OptInt = _wx("OrderStatus")
    product_id: str | None = _wx("ProductId")
    sku_info: str | None = _wx("SkuInfo")


class CardEvent(EventPush):
    """The card-and-coupon (卡券) events; each carries a subset of these fields."""

    card_id: str | None = _wx("CardId")
    user_card_code: str | None = _wx("UserCardCode")
    old_user_card_code: str | None = _wx("OldUserCardCode")
    outer_str: str | None = _wx("OuterStr")
    friend_user_name: str | None = _wx("FriendUserName")
    union_id: str | None = _wx("UnionId")
    refuse_reason: str | None = _wx("RefuseReason")
    consume_source: str | None = _wx("ConsumeSource")
    staff_open_id: str | None = _wx("StaffOpenId")


# --- WeChat Shop events -------------------------------------------------------------------------------

_ENVELOPE_KEYS = frozenset({"ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "MsgId", "MsgID"})


class ShopEvent(EventPush):
    # The keys this event's object can sit under; the first one holding an object wins.
    object_keys: ClassVar[tuple[str, ...]] = ()
    # Whether the object's fields may instead sit at the top level (the docs and samples disagree).
    flat: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _pick_object(cls, data: Any) -> Any:
        if not (cls.object_keys or cls.flat) or not isinstance(data, Mapping):
            return data
        # Anything but an object is ignored: one ISV got the after-sale object as a newline-joined string.
        found = next((data[k] for k in cls.object_keys if isinstance(data.get(k), Mapping)), None)
        if found is None and cls.flat:
            found = {k: v for k, v in data.items() if k not in _ENVELOPE_KEYS}
        return {**data, "info": found}

    @property
    def object_id(self) -> str:
        return _shop_object_id(self.raw) or self.from_user_name


class ShopOrderInfo(_ShopObject):
    order_id: str | None = None  # a 19-digit integer in JSON: kept as an exact string
    status: OptInt = None  # product_order_status_update; research/shop.md §1.1
    pay_time: OptInt = None
    cancel_type: OptInt = None  # 1 user, 2 timeout, 3 all items refunded, 4 oversold
    finish_delivery: OptInt = None  # 0 partly shipped, 1 all shipped
    confirm_type: OptInt = None  # 1 user, 2 automatic
    settle_time: OptInt = None
    type: OptInt = None  # ext_info_update: 1 affiliate commission


class ShopOrderEvent(ShopEvent):
    """channels_ec_order_* and the legacy product_order_status_update: they carry ids only."""

    object_keys = ("order_info", "ProductOrderStatusUpdate")
    info: ShopOrderInfo | None = None

    @property
    def order_id(self) -> str | None:
        return self.info.order_id if self.info else None

    @property
    def status(self) -> int | None:
        return self.info.status if self.info else None


class ShopAfterSaleInfo(_ShopObject):
    after_sale_order_id: str | None = None
    order_id: str | None = None
    status: str | None = None  # USER_WAIT_RETURN, MERCHANT_REFUND_SUCCESS, ... (shop.md §1.5)
    wxa_vip_discounted_price: OptInt = None  # fen, to roll back a member discount
    complaint_id: str | None = None
    complaint_status: OptInt = None


class ShopAfterSaleEvent(ShopEvent):
    """channels_ec_aftersale_update, channels_ec_present_aftersale_update, channels_ec_complaint_update."""

    # The present-aftersale doc's own example uses the plain after-sale key, so accept both.
    object_keys = (
        "finder_shop_aftersale_status_update",
        "finder_shop_present_aftersale_status_update",
        "finder_shop_complaint",
    )
    info: ShopAfterSaleInfo | None = None

    @property
    def after_sale_order_id(self) -> str | None:
        return self.info.after_sale_order_id if self.info else None

    @property
    def order_id(self) -> str | None:
        return self.info.order_id if self.info else None

    @property
    def status(self) -> str | None:
        return self.info.status if self.info else None


class ShopGuaranteeInfo(_ShopObject):
    guarantee_order_id: str | None = None
    order_id: str | None = None
    status: str | None = None  # e.g. STATUS_PAY_SUCC


class ShopGuaranteeEvent(ShopEvent):
    """channels_ec_guarantee_update: shop.md lists the fields at the top level, SKIT's sample nests them."""

    object_keys = ("finder_shop_guarantee_status_update",)
    flat = True
    info: ShopGuaranteeInfo | None = None

    @property
    def guarantee_order_id(self) -> str | None:
        return self.info.guarantee_order_id if self.info else None

    @property
    def order_id(self) -> str | None:
        return self.info.order_id if self.info else None

    @property
    def status(self) -> str | None:
        return self.info.status if self.info else None


class ShopProductInfo(_ShopObject):
    product_id: str | None = None
    out_product_id: str | None = None
    sku_id: str | None = None
    status: OptInt = None  # audit: 2 rejected, 3 passed; listing: 5 on sale, 11/13 off (shop.md §1.4)
    reason: str | None = None
    reject_reason: str | None = None  # open_product_* says reject_reason
    audit_info: str | None = None  # a JSON string with per-field audit reasons
    remaining_stock_amount: OptInt = None
    remaining_code_amount: OptInt = None


class ShopProductEvent(ShopEvent):
    """product_spu_*, channels_ec_stock_no_enough and the mini-program's open_product_spu_*."""

    # WxJava reads open_product_spu_status_update from OpenProductSpuStatusUpdate, SKIT's sample
    # from OpenProductSpuAudit: accept both.
    object_keys = (
        "ProductSpuAudit",
        "ProductSpuListing",
        "ProductSpuUpdate",
        "OpenProductSpuStatusUpdate",
        "OpenProductSpuAudit",
        "channels_ec_stock_no_enough",
    )
    info: ShopProductInfo | None = None

    @property
    def product_id(self) -> str | None:
        return self.info.product_id if self.info else None

    @property
    def status(self) -> int | None:
        return self.info.status if self.info else None


class ShopAuditInfo(_ShopObject):
    audit_id: str | None = None
    brand_id: str | None = None
    status: OptInt = None
    reason: str | None = None


class ShopAuditEvent(ShopEvent):
    """product_category_audit and channels_ec_brand: the result of a category or brand application."""

    object_keys = ("ProductCategoryAudit", "BrandEvent")
    info: ShopAuditInfo | None = None


class ShopCouponInfo(_ShopObject):
    coupon_id: str | None = None
    user_coupon_id: str | None = None
    receive_time: OptInt = None
    create_time: OptInt = None
    delete_time: OptInt = None
    expire_time: OptInt = None
    change_time: OptInt = None
    invalid_time: OptInt = None
    use_time: OptInt = None
    unuse_time: OptInt = None


class ShopCouponEvent(ShopEvent):
    # channels_ec_user_coupon_use/unuse put the user coupon under "user_info".
    object_keys = ("receive_info", "coupon_info", "user_coupon_info", "user_info")
    info: ShopCouponInfo | None = None

    @property
    def coupon_id(self) -> str | None:
        return self.info.coupon_id if self.info else None

    @property
    def user_coupon_id(self) -> str | None:
        return self.info.user_coupon_id if self.info else None


class ShopVoucherInfo(_ShopObject):
    code: str | None = None
    code_type: OptInt = None
    status: OptInt = None
    voucher_type: OptInt = None
    send_time: OptInt = None
    update_time: OptInt = None
    start_time: OptInt = None
    end_time: OptInt = None
    consume_time: OptInt = None
    refund_time: OptInt = None
    consume_store_name: str | None = None
    voucher_buy_amount: OptInt = None  # fen
    voucher_actual_amount: OptInt = None  # fen


class ShopVoucherEvent(ShopEvent):
    """channels_ec_voucher_send_succ: local-life vouchers issued for an order."""

    voucher_list: Annotated[list[ShopVoucherInfo], BeforeValidator(_as_list)] = _wx("voucher_list", default=[])


class ShopFundsInfo(_ShopObject):
    event: OptInt = None
    withdraw_id: str | None = None
    ticket: str | None = None
    status: OptInt = None
    scan_user_type: OptInt = None


class ShopFundsEvent(ShopEvent):
    """channels_ec_acct_notify, channels_ec_withdraw_notify and qrcode_status."""

    object_keys = ("account_info", "withdraw_info", "qrcode_info")
    info: ShopFundsInfo | None = None


class ShopVipUserInfo(_ShopObject):
    score: OptInt = None
    delta_score: OptInt = None
    flow_type: OptInt = None  # 1..9, research/shop.md §3.1
    grade: OptInt = None
    experience_value: OptInt = None
    join_time: OptInt = None
    close_time: OptInt = None
    phone_number: str | None = None


class ShopVipRelatedCoupon(_ShopObject):
    related_coupon_id: str | None = None


class ShopVipRelatedProduct(_ShopObject):
    related_product_id: str | None = None


class ShopVipExchangeInfo(_ShopObject):
    pay_score: OptInt = None
    score_item_type: OptInt = None  # 1 coupon, 2 product
    coupon_info: ShopVipRelatedCoupon | None = None
    product_info: ShopVipRelatedProduct | None = None


class ShopVipEvent(ShopEvent):
    """channels_ec_vip_join/close/grade_info_update/score_update/score_exchange (shop.md §3.1)."""

    object_keys = ("user_info",)
    info: ShopVipUserInfo | None = None
    exchange_info: ShopVipExchangeInfo | None = _wx("exchange_info")

    @property
    def openid(self) -> str:
        return self.from_user_name


class ShopVipCallbackInfo(_ShopObject):
    shop_appid: str | None = None
    outer_userid: str | None = None
    identity: str | None = None
    add_time: OptInt = None


class ShopVipCallbackEvent(ShopEvent):
    """channels_ec_vip_user_info_get and channels_ec_vip_user_auto_add, answered synchronously (shop.md §3.2)."""

    object_keys = ("info",)
    info: ShopVipCallbackInfo | None = None


class ShopVipPriceInfo(_ShopObject):
    product_price_before_vip_discount: OptInt = None
    vip_discounted_price: OptInt = None
    product_price_after_vip_discount: OptInt = None


class ShopVipDiscountInfo(_ShopObject):
    shop_appid: str | None = None
    order_session_id: str | None = None
    scene: OptInt = None  # 1 self-purchase, 2 group gift, 3 one-to-one gift
    unique_id: str | None = None
    price_info: ShopVipPriceInfo | None = None


class ShopVipDiscountEvent(ShopEvent):
    """channels_ec_order_use_vip_discount, _unuse_vip_discount and channels_ec_gen_order_info_init."""

    object_keys = ("order_info",)
    flat = True  # unuse_vip_discount is documented with its fields at the top level
    info: ShopVipDiscountInfo | None = None

    @property
    def unique_id(self) -> str | None:
        return self.info.unique_id if self.info else None


class ShopSharerChangeEvent(ShopEvent):
    sharer_openid: str | None = _wx("openid")
    sharer_type: OptInt = _wx("sharer_type")  # 0 ordinary, 1 shop (enterprise)
    bind_status: OptInt = _wx("bind_status")  # 1 bound, 2 unbound


class ShopStoreEvent(ShopEvent):
    """channels_ec_close_store and set_shop_nickname."""

    appid: str | None = _wx("appid")
    close_timestamp: OptInt = _wx("close_timestamp")
    old_nickname: str | None = _wx("old_nickname")
    new_nickname: str | None = _wx("new_nickname")


class ShopSupplierItemInfo(_ShopObject):
    event_type: OptInt = None
    appid: str | None = None
    product_id: str | None = None
    version: str | None = None
    update_fields: StrList = []


class ShopHeadSupplierItemEvent(ShopEvent):
    """head_supplier_item_update: one version of a promoted item's terms."""

    object_keys = ("item_info",)
    info: ShopSupplierItemInfo | None = None

    @property
    def product_id(self) -> str | None:
        return self.info.product_id if self.info else None

    @property
    def version(self) -> str | None:
        return self.info.version if self.info else None


class ShopCommissionOrderInfo(_ShopObject):
    order_id: str | None = None
    sku_id: str | None = None
    commission_order_status: OptInt = None
    order_status: OptInt = None
    version: str | None = None  # orders the updates of one commission order


class ShopCommissionOrderEvent(ShopEvent):
    """head_supplier_commission_order_update (shop.md §6.2)."""

    object_keys = ("order_info",)
    info: ShopCommissionOrderInfo | None = None

    @property
    def order_id(self) -> str | None:
        return self.info.order_id if self.info else None


class ShopDropshipEvent(ShopEvent):
    """dropship_order_new, dropship_order_update and dropship_order_cancel (代发)."""

    ds_order_id: str | None = _wx("ds_order_id")
    update_time: OptInt = _wx("update_time")


class ShopWaybillInfo(_ShopObject):
    ewaybill_order_id: str | None = None  # an integer in JSON, kept exact
    waybill_id: str | None = None
    update_time: OptInt = None
    status: OptInt = None
    desc: str | None = None


class ShopEwaybillPathEvent(ShopEvent):
    """ewaybill_push_path: one tracking step of an electronic waybill."""

    object_keys = ("waybill_info",)
    info: ShopWaybillInfo | None = None

    @property
    def ewaybill_order_id(self) -> str | None:
        return self.info.ewaybill_order_id if self.info else None


class ShopCooperationOrderInfo(_ShopObject):
    order_id: str | None = None  # NOT the shop order id (shop.md §1.6)
    shop_appid: str | None = None


class ShopCooperationOrderEvent(ShopEvent):
    """cooperation_shop_order / related_shop_order_submission, pushed to the linked mini-program."""

    object_keys = ("EventData", "Data")
    info: ShopCooperationOrderInfo | None = None


# --- dispatch ----------------------------------------------------------------------------------------

_MESSAGES: dict[str, type[Push]] = {
    "text": TextMessage,
    "image": ImageMessage,
    "voice": VoiceMessage,
    "video": VideoMessage,
    "shortvideo": ShortVideoMessage,
    "location": LocationMessage,
    "link": LinkMessage,
    "miniprogrampage": MiniProgramPageMessage,
}


def _each(model: type[Push], *names: str) -> dict[str, type[Push]]:
    return dict.fromkeys(names, model)


_EVENTS: dict[str, type[Push]] = {
    "subscribe": SubscribeEvent,
    "unsubscribe": UnsubscribeEvent,
    "scan": ScanEvent,
    "location": LocationEvent,
    "click": ClickEvent,
    "view": ViewEvent,
    "view_miniprogram": ViewMiniProgramEvent,
    **_each(ScanCodeEvent, "scancode_push", "scancode_waitmsg"),
    **_each(PicEvent, "pic_sysphoto", "pic_photo_or_album", "pic_weixin"),
    "location_select": LocationSelectEvent,
    "templatesendjobfinish": TemplateSendJobFinishEvent,
    "masssendjobfinish": MassSendJobFinishEvent,
    **_each(PublishJobFinishEvent, "freepublishjobfinish", "publishjobfinish"),
    "subscribe_msg_popup_event": SubscribeMsgPopupEvent,
    "subscribe_msg_change_event": SubscribeMsgChangeEvent,
    "subscribe_msg_sent_event": SubscribeMsgSentEvent,
    "user_enter_tempsession": UserEnterTempSessionEvent,
    **_each(KfSessionEvent, "kf_create_session", "kf_close_session", "kf_switch_session"),
    "user_info_modified": UserInfoModifiedEvent,
    "user_authorization_revoke": UserAuthorizationRevokeEvent,
    "wxa_media_check": WxaMediaCheckEvent,
    **_each(WeappAuditEvent, "weapp_audit_success", "weapp_audit_fail", "weapp_audit_delay"),
    "merchant_order": MerchantOrderEvent,
    **_each(
        CardEvent,
        "card_pass_check",
        "card_not_pass_check",
        "user_get_card",
        "user_gifting_card",
        "user_del_card",
        "user_consume_card",
        "user_pay_from_pay_cell",
        "user_view_card",
        "user_enter_session_from_card",
        "update_member_card",
        "card_sku_remind",
        "submit_membercard_user_info",
    ),
    # WeChat Shop
    "product_order_status_update": ShopOrderEvent,
    **_each(
        ShopOrderEvent,
        *(
            f"channels_ec_order_{s}"
            for s in ("new", "pay", "cancel", "wait_shipping", "deliver", "confirm", "settle", "ext_info_update")
        ),
    ),
    **_each(
        ShopAfterSaleEvent,
        "channels_ec_aftersale_update",
        "channels_ec_present_aftersale_update",
        "channels_ec_complaint_update",
    ),
    "channels_ec_guarantee_update": ShopGuaranteeEvent,
    **_each(
        ShopProductEvent,
        "product_spu_audit",
        "product_spu_listing",
        "product_spu_update",
        "open_product_spu_audit",
        "open_product_spu_status_update",
        "channels_ec_stock_no_enough",
    ),
    **_each(ShopAuditEvent, "product_category_audit", "channels_ec_brand"),
    **_each(
        ShopCouponEvent,
        *(
            f"channels_ec_{s}"
            for s in (
                "coupon_receive",
                "coupon_create",
                "coupon_delete",
                "coupon_expire",
                "coupon_info_change",
                "coupon_invalid",
                "user_coupon_expire",
                "user_coupon_unuse",
                "user_coupon_use",
            )
        ),
    ),
    "channels_ec_voucher_send_succ": ShopVoucherEvent,
    **_each(ShopFundsEvent, "channels_ec_acct_notify", "channels_ec_withdraw_notify", "qrcode_status"),
    **_each(
        ShopVipEvent,
        *(f"channels_ec_vip_{s}" for s in ("join", "close", "grade_info_update", "score_update", "score_exchange")),
    ),
    **_each(ShopVipCallbackEvent, "channels_ec_vip_user_info_get", "channels_ec_vip_user_auto_add"),
    **_each(
        ShopVipDiscountEvent,
        "channels_ec_order_use_vip_discount",
        "channels_ec_order_unuse_vip_discount",
        "channels_ec_gen_order_info_init",
    ),
    "channels_ec_sharer_change": ShopSharerChangeEvent,
    **_each(ShopStoreEvent, "channels_ec_close_store", "set_shop_nickname"),
    "head_supplier_item_update": ShopHeadSupplierItemEvent,
    "head_supplier_commission_order_update": ShopCommissionOrderEvent,
    **_each(ShopDropshipEvent, "dropship_order_new", "dropship_order_update", "dropship_order_cancel"),
    "ewaybill_push_path": ShopEwaybillPathEvent,
    **_each(ShopCooperationOrderEvent, "cooperation_shop_order", "related_shop_order_submission"),
}


def _required_str(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise MalformedPush(f"the push has no {key}")
    return text


def _create_time(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        try:
            return int(value)
        except ValueError:  # longer than Python's int-parsing digit limit
            pass
    raise MalformedPush(f"CreateTime {_text(value)[:32]!r} is not an integer")


def parse_push(payload: Mapping[str, Any], kind: AppKind) -> Push:
    """The typed model for a decoded push; raises MalformedPush only for a broken envelope or field."""
    from_user = _required_str(payload, "FromUserName")
    msg_type = _required_str(payload, "MsgType")
    create_time = _create_time(payload.get("CreateTime"))
    if msg_type.lower() == "event":
        model = _EVENTS.get(_text(payload.get("Event")).lower(), UnknownPush)
    else:
        model = _MESSAGES.get(msg_type.lower(), UnknownPush)
    data = {
        **payload,
        "kind": kind,
        "to_user_name": _text(payload.get("ToUserName")),
        "from_user_name": from_user,
        "create_time": create_time,
        "msg_type": msg_type,
        "raw": dict(payload),
    }
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        raise MalformedPush(f"{msg_type} push: {where}: {err['msg']}") from None
