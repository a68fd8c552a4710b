"""Typed WeChat pushes, parsed once at the edge (research/wechat.md §2, research/shop.md §1.6).

``parse_push`` takes the dict from ``codec.parse_xml`` or ``codec.parse_json``. XML gives every value
as a string while JSON pushes carry numbers, so models coerce both to the same types; ids stay
strings. Unknown message or event types become ``UnknownPush``: WeChat adds events without notice
and a push we cannot name must still be stored, never rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.wechat.apps import AppKind
from shared.wechat.crypto import MalformedPush


def _wx(*keys: str, default: Any = None) -> Any:
    """A field read from WeChat's own key(s)."""
    return Field(default=default, validation_alias=AliasChoices(*keys))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", coerce_numbers_to_str=True)


class _ShopObject(_Model):
    # Shop objects grow fields often; keep the ones we do not model instead of dropping them.
    model_config = ConfigDict(extra="allow")


# Shop events use their own ids; a user-scoped key would be wrong because FromUserName is sometimes
# a fixed id and one user can have several orders touched in the same second.
_SHOP_PREFIXES = ("channels_ec_", "product_", "head_supplier_")
# Most specific first: an after-sale object also names its order, a user coupon its coupon.
_SHOP_ID_KEYS = (
    "complaint_id",
    "after_sale_order_id",
    "user_coupon_id",
    "coupon_id",
    "order_id",
    "product_id",
    "audit_id",
    "brand_id",
    "openid",
)


def _shop_object_id(payload: Mapping[str, Any]) -> str | None:
    objects = [payload, *(v for v in payload.values() if isinstance(v, Mapping))]
    for key in _SHOP_ID_KEYS:
        for obj in objects:
            if obj.get(key) not in (None, ""):
                # Stock and commission events are per SKU of one product/order.
                sku = obj.get("sku_id")
                return f"{obj[key]}:{sku}" if sku not in (None, "") else str(obj[key])
    return None


class Push(_Model):
    kind: AppKind
    to_user_name: str
    from_user_name: str
    create_time: int
    msg_type: str
    # Messages say MsgId; TEMPLATESENDJOBFINISH and shop pushes say MsgID.
    msg_id: str | None = _wx("MsgId", "MsgID")
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return self.msg_type.lower()

    @property
    def event_type(self) -> str:
        return f"wechat.{self.kind.event_prefix}.{self.name}"

    @property
    def is_shop(self) -> bool:
        return self.kind is AppKind.SHOP or self.name.startswith(_SHOP_PREFIXES)

    @property
    def dedup_key(self) -> str:
        """Identical for WeChat's retries of one push, different for distinct pushes.

        Events have no MsgId, and LOCATION fires every 5 s while several unsubscribes can share a
        CreateTime, so event keys include the event and its EventKey (as WxJava's router does).
        """
        if self.msg_id:
            return f"msg:{self.from_user_name}:{self.create_time}:{self.msg_id}"
        if self.is_shop:
            object_id = _shop_object_id(self.raw) or self.from_user_name
            return f"shop:{self.name}:{object_id}:{self.create_time}"
        return f"evt:{self.from_user_name}:{self.create_time}:{self.name}:{_text(self.raw.get('EventKey'))}"


class UnknownPush(Push):
    event: str | None = _wx("Event")

    @property
    def name(self) -> str:
        if self.event and self.msg_type.lower() == "event":
            return self.event.lower()
        return self.msg_type.lower()


# --- messages --------------------------------------------------------------------------------------


class TextMessage(Push):
    content: str = _wx("Content", default="")


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
    location_x: float | None = _wx("Location_X")
    location_y: float | None = _wx("Location_Y")
    scale: int | None = _wx("Scale")
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
    latitude: float | None = _wx("Latitude")
    longitude: float | None = _wx("Longitude")
    precision: float | None = _wx("Precision")


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


class TemplateSendJobFinishEvent(EventPush):
    status: str | None = _wx("Status")  # "success", "failed:user block", "failed: system failed"


class MassSendJobFinishEvent(EventPush):
    status: str | None = _wx("Status")
    total_count: int | None = _wx("TotalCount")
    filter_count: int | None = _wx("FilterCount")
    sent_count: int | None = _wx("SentCount")
    error_count: int | None = _wx("ErrorCount")


class SubscribeMsgItem(_Model):
    template_id: str | None = _wx("TemplateId")
    subscribe_status: str | None = _wx("SubscribeStatusString")  # accept | reject
    popup_scene: str | None = _wx("PopupScene")
    msg_id: str | None = _wx("MsgID", "MsgId")
    error_code: str | None = _wx("ErrorCode")
    error_status: str | None = _wx("ErrorStatus")


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
        # XML wraps <List> in a per-event element; mini-program JSON puts "List" at the top. Either
        # way one template arrives as an object and several as an array.
        container = data.get(_SUBSCRIBE_MSG_CONTAINERS.get(_text(data.get("Event")).lower(), ""), data)
        found = container.get("List") if isinstance(container, Mapping) else None
        items = found if isinstance(found, list) else [] if found is None else [found]
        return {**data, "items": items}


class UserEnterTempSessionEvent(EventPush):
    session_from: str | None = _wx("SessionFrom")


# --- WeChat Shop events -------------------------------------------------------------------------------


class ShopEvent(EventPush):
    # The keys this event's object can sit under; the first one holding an object wins.
    object_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _pick_object(cls, data: Any) -> Any:
        if not cls.object_keys or not isinstance(data, Mapping):
            return data
        # Anything but an object is ignored: one ISV got the after-sale object as a newline-joined string.
        found = next((data[k] for k in cls.object_keys if isinstance(data.get(k), Mapping)), None)
        return {**data, "info": found}

    @property
    def object_id(self) -> str:
        return _shop_object_id(self.raw) or self.from_user_name


class ShopOrderInfo(_ShopObject):
    order_id: str | None = None  # a 19-digit integer in JSON: kept as an exact string
    status: int | None = None
    pay_time: int | None = None
    cancel_type: int | None = None
    finish_delivery: int | None = None
    confirm_type: int | None = None
    settle_time: int | None = None
    type: int | None = None


class ShopOrderEvent(ShopEvent):
    object_keys = ("order_info", "ProductOrderStatusUpdate")
    info: ShopOrderInfo | None = None

    @property
    def order_id(self) -> str | None:
        return self.info.order_id if self.info else None


class ShopAfterSaleInfo(_ShopObject):
    after_sale_order_id: str | None = None
    order_id: str | None = None
    status: str | None = None
    complaint_id: str | None = None
    complaint_status: int | None = None


class ShopAfterSaleEvent(ShopEvent):
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


class ShopProductInfo(_ShopObject):
    product_id: str | None = None
    out_product_id: str | None = None
    sku_id: str | None = None
    status: int | None = None
    reason: str | None = None


class ShopProductEvent(ShopEvent):
    object_keys = (
        "ProductSpuAudit",
        "ProductSpuListing",
        "ProductSpuUpdate",
        "OpenProductSpuStatusUpdate",
        "channels_ec_stock_no_enough",
    )
    info: ShopProductInfo | None = None

    @property
    def product_id(self) -> str | None:
        return self.info.product_id if self.info else None


class ShopCouponInfo(_ShopObject):
    coupon_id: str | None = None
    user_coupon_id: str | None = None


class ShopCouponEvent(ShopEvent):
    # channels_ec_user_coupon_use/unuse put the user coupon under "user_info".
    object_keys = ("receive_info", "coupon_info", "user_coupon_info", "user_info")
    info: ShopCouponInfo | None = None

    @property
    def coupon_id(self) -> str | None:
        return self.info.coupon_id if self.info else None


class ShopVipUserInfo(_ShopObject):
    score: int | None = None
    delta_score: int | None = None
    flow_type: int | None = None  # 1..9, research/shop.md §3.1
    grade: int | None = None
    experience_value: int | None = None
    join_time: int | None = None
    close_time: int | None = None


class ShopVipEvent(ShopEvent):
    object_keys = ("user_info",)
    info: ShopVipUserInfo | None = None
    exchange_info: dict[str, Any] | None = _wx("exchange_info")


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

_EVENTS: dict[str, type[Push]] = {
    "subscribe": SubscribeEvent,
    "unsubscribe": UnsubscribeEvent,
    "scan": ScanEvent,
    "location": LocationEvent,
    "click": ClickEvent,
    "view": ViewEvent,
    "view_miniprogram": ViewMiniProgramEvent,
    "scancode_push": ScanCodeEvent,
    "scancode_waitmsg": ScanCodeEvent,
    "templatesendjobfinish": TemplateSendJobFinishEvent,
    "masssendjobfinish": MassSendJobFinishEvent,
    "subscribe_msg_popup_event": SubscribeMsgEvent,
    "subscribe_msg_change_event": SubscribeMsgEvent,
    "subscribe_msg_sent_event": SubscribeMsgEvent,
    "user_enter_tempsession": UserEnterTempSessionEvent,
    "product_order_status_update": ShopOrderEvent,
    **{
        f"channels_ec_order_{s}": ShopOrderEvent
        for s in ("new", "pay", "cancel", "wait_shipping", "deliver", "confirm", "settle", "ext_info_update")
    },
    "channels_ec_aftersale_update": ShopAfterSaleEvent,
    "channels_ec_present_aftersale_update": ShopAfterSaleEvent,
    "channels_ec_complaint_update": ShopAfterSaleEvent,
    "product_spu_audit": ShopProductEvent,
    "product_spu_listing": ShopProductEvent,
    "product_spu_update": ShopProductEvent,
    "open_product_spu_status_update": ShopProductEvent,
    "channels_ec_stock_no_enough": ShopProductEvent,
    **{
        f"channels_ec_{s}": ShopCouponEvent
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
    },
    **{
        f"channels_ec_vip_{s}": ShopVipEvent
        for s in ("join", "close", "grade_info_update", "score_update", "score_exchange")
    },
}


def _required_str(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedPush(f"the push has no {key}")
    return value


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
