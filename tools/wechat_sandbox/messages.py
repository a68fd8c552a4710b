"""WeChat's messaging rules: template libraries, typed field values, one-time and long-term
authorisations, ``client_msg_id`` anti-reentry, and per-app API limits.

Nothing here does I/O; the routes are in ``messages_api.py`` (WeChat's paths) and
``messages_control.py`` (``/sandbox/...``). Sources: research/wechat.md §5, research/shop.md §4.

Template fields use WeChat's typed keys (``thing1``, ``character_string2``, ``amount3``...): the type
prefix decides what a value may hold, per the "订阅消息参数值内容限制说明" table of
``subscribeMessage.send`` (the same typed keys serve service-account template messages since the
2023 category templates):

| type | value |
|---|---|
| thing | ≤ 20 characters, no control characters (newlines) |
| number | ≤ 32 characters: digits, optionally with one decimal point |
| letter | ≤ 32 letters |
| symbol | ≤ 5 symbols (neither letters, digits, CJK nor spaces) |
| character_string | ≤ 32 digits, letters or symbols (printable ASCII, no space) |
| time | 24-hour ``HH:MM[:SS]``, optionally after a date; a range joins two with ``~`` |
| date | a date (``2019年10月1日``, ``2019年10月``, ``10月1日``, ``2018-01-01``, ``2018/01/01``,
  ``2018.01.01``, ``2018-01``, ``01-01``), optionally followed by a time; ranges with ``~`` |
| amount | one optional currency symbol, ≤ 10 digits (a decimal point allowed), optionally ``元`` |
| phone_number | ≤ 17 digits and symbols |
| car_number | ≤ 8: letters and digits, the first and last may be CJK |
| name | ≤ 10 characters when it has CJK, else ≤ 20 letters, spaces or symbols (no digits) |
| phrase | ≤ 5 CJK characters |

An empty or missing value, or one that breaks its rule, is 47003 naming the field.
"""

from __future__ import annotations

import math
import random
import re
import string
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from shared.wechat.apps import AppKind, WeChatApp, WeChatApps
from tools.wechat_sandbox.errors import WeChatApiError
from tools.wechat_sandbox.state import wechat_day

# -- kinds ------------------------------------------------------------------------------------------

TEMPLATE = "template"  # a service account's template message (模板消息)
SUBSCRIBE_ONCE = "subscribe_once"  # one-time subscription: one send per acceptance
SUBSCRIBE_LONG = "subscribe_long"  # long-term subscription: sends until the user turns it off
# /wxaapi/newtmpl/gettemplate "type": 2 一次性订阅, 3 长期订阅.
NEWTMPL_TYPE = {SUBSCRIBE_ONCE: 2, SUBSCRIBE_LONG: 3}

# "对于同一个 openid + client_msg_id, 只发送一条消息, 10分钟有效" (template/send, silenceper PR #651).
CLIENT_MSG_ID_TTL = 600
# wx.requestSubscribeMessage takes at most three template ids.
MP_POPUP_MAX_TEMPLATES = 3

# -- typed values -----------------------------------------------------------------------------------

_KEY = re.compile(
    r"^(character_string|phone_number|car_number|thing|number|letter|symbol|time|date|amount|name|phrase)[0-9]+$"
)

_MONTH = r"(?:0?[1-9]|1[0-2])"
_DAY = r"(?:0?[1-9]|[12][0-9]|3[01])"
_YEAR = r"[0-9]{4}"
_DATE = (
    rf"(?:{_YEAR}年{_MONTH}月{_DAY}日|{_YEAR}年{_MONTH}月|{_MONTH}月{_DAY}日"
    rf"|{_YEAR}([-/.]){_MONTH}\1{_DAY}|{_YEAR}[-/.]{_MONTH}|{_MONTH}[-/.]{_DAY})"
)
_CLOCK = r"(?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?"
_TIME_POINT = rf"(?:{_DATE} ?)?{_CLOCK}"
_DATE_POINT = rf"{_DATE}(?: ?{_CLOCK})?"
# A point is matched on its own so the back-reference inside _DATE stays local to one date.
_TIME_RE = re.compile(rf"^{_TIME_POINT}$")
_DATE_RE = re.compile(rf"^{_DATE_POINT}$")
_AMOUNT_RE = re.compile(r"^[¥￥$€£]?([0-9]+)(?:\.([0-9]+))?元?$")
_NUMBER_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")

# The longest value each type accepts, in characters. time/date: a range of two
# "2019年10月01日 15:01:01" points; amount: symbol + 10 digits + point + 元.
MAX_LEN: dict[str, int] = {
    "thing": 20,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "character_string": 32,
    "time": 41,
    "date": 41,
    "amount": 13,
    "phone_number": 17,
    "car_number": 8,
    "name": 10,
    "phrase": 5,
}
# name: "10个以内纯汉字或20个以内纯字母或符号; 中文和字母混合按中文名算".
NAME_LATIN_MAX = 20
AMOUNT_MAX_DIGITS = 10


def key_type(key: str) -> str:
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"{key!r} is not a typed WeChat template key")
    return match.group(1)


def _cjk(c: str) -> bool:
    return "\u3400" <= c <= "\u4dbf" or "\u4e00" <= c <= "\u9fff"


def _symbol(c: str) -> bool:
    return not (c.isalnum() or c.isspace() or _cjk(c) or unicodedata.category(c).startswith("C"))


def _control(value: str) -> bool:
    return any(unicodedata.category(c).startswith("C") for c in value)


def _points(value: str, point: re.Pattern[str]) -> bool:
    parts = value.split("~")
    return len(parts) <= 2 and all(point.match(p.strip()) for p in parts)


def _amount(value: str) -> bool:
    match = _AMOUNT_RE.match(value)
    return match is not None and len(match.group(1)) + len(match.group(2) or "") <= AMOUNT_MAX_DIGITS


def _car_number(value: str) -> bool:
    inner = value[1:-1] if len(value) > 2 else ""
    ends = value[0] + value[-1]
    return all(c in string.ascii_letters + string.digits for c in inner) and all(
        c in string.ascii_letters + string.digits or _cjk(c) for c in ends
    )


def _name(value: str) -> bool:
    if any(c.isdigit() or (c.isspace() and c != " ") for c in value):
        return False
    if any(_cjk(c) for c in value):
        return len(value) <= MAX_LEN["name"]
    return len(value) <= NAME_LATIN_MAX and all(c in string.ascii_letters or c == " " or _symbol(c) for c in value)


def valid_value(kind: str, value: str) -> bool:
    """Whether ``value`` is a valid non-empty value for a field of type ``kind``."""
    if kind == "name":
        return _name(value)
    if len(value) > MAX_LEN[kind]:
        return False
    if kind == "thing":
        return not _control(value)
    if kind == "number":
        return _NUMBER_RE.match(value) is not None
    if kind == "letter":
        return all(c in string.ascii_letters for c in value)
    if kind == "symbol":
        return all(_symbol(c) for c in value)
    if kind == "character_string":
        return all("!" <= c <= "~" for c in value)
    if kind == "phone_number":
        return all(c in string.digits or c in string.punctuation for c in value)
    if kind == "car_number":
        return _car_number(value)
    if kind == "phrase":
        return all(_cjk(c) for c in value)
    if kind == "amount":
        return _amount(value)
    if kind == "time":
        return _points(value, _TIME_RE)
    if kind == "date":
        return _points(value, _DATE_RE)
    raise ValueError(kind)  # pragma: no cover - _KEY admits no other type


def _field_error(key: str, problem: str) -> WeChatApiError:
    # WeChat names the field in the errmsg (research/wechat.md §5.2: "data.thing3.value is emtpy",
    # WeChat's own spelling).
    return WeChatApiError(47003, f"argument invalid! data.{key}.value {problem}")


# -- the template library ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    example: str

    @property
    def max_len(self) -> int:
        return MAX_LEN[key_type(self.key)]


@dataclass(frozen=True)
class Template:
    template_id: str
    appid: str
    name: str
    title: str
    kind: str
    fields: tuple[Field, ...]

    def describe(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "title": self.title,
            "kind": self.kind,
            "fields": [{"key": f.key, "max_len": f.max_len} for f in self.fields],
            "name": self.name,
            "appid": self.appid,
        }

    @property
    def content(self) -> str:
        return "".join(f"{f.label}:{{{{{f.key}.DATA}}}}\n" for f in self.fields)

    @property
    def example(self) -> str:
        return "".join(f"{f.label}:{f.example}\n" for f in self.fields)

    def check_data(self, data: Any) -> dict[str, dict[str, str]]:
        """The template's fields out of a send's ``data`` (``{"key": {"value": ...}}``), or 47003.

        Keys the template does not have are ignored; numbers are accepted and read as text.
        """
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise WeChatApiError(47001)
        out: dict[str, dict[str, str]] = {}
        for f in self.fields:
            item = data.get(f.key)
            value = item.get("value") if isinstance(item, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise _field_error(f.key, "is emtpy")
            if not isinstance(value, str) or not valid_value(key_type(f.key), value):
                raise _field_error(f.key, "invalid")
            out[f.key] = {"value": value}
        return out


_T = "2024年5月1日 10:30"
_ORDER = "3705115058471208928"
# Siyu's messages: (name, title, fields as (key, label, example)).
CATALOG: tuple[tuple[str, str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "order_paid",
        "订单支付成功通知",
        (("character_string1", "订单编号", _ORDER), ("amount2", "支付金额", "¥128.00"),
         ("thing3", "商品名称", "山茶花精华面霜"), ("time4", "支付时间", _T)),
    ),
    (
        "order_shipped",
        "订单发货通知",
        (("character_string1", "订单编号", _ORDER), ("thing2", "商品名称", "山茶花精华面霜"),
         ("phrase3", "快递公司", "顺丰速运"), ("character_string4", "快递单号", "SF1234567890123"),
         ("time5", "发货时间", _T)),
    ),
    (
        "refund",
        "退款成功通知",
        (("character_string1", "订单编号", _ORDER), ("amount2", "退款金额", "¥39.90"),
         ("thing3", "退款原因", "商品与描述不符"), ("time4", "退款时间", _T)),
    ),
    (
        "points_earned",
        "积分到账提醒",
        (("number1", "获得积分", "128"), ("number2", "可用积分", "1024"),
         ("thing3", "积分来源", "订单消费"), ("time4", "到账时间", _T)),
    ),
    (
        "points_expiring",
        "积分即将过期提醒",
        (("number1", "过期积分", "300"), ("date2", "过期日期", "2024年12月31日"),
         ("thing3", "温馨提示", "积分可在积分商城兑换好礼")),
    ),
    (
        "tier_changed",
        "会员等级变更通知",
        (("phrase1", "原等级", "银卡会员"), ("phrase2", "新等级", "金卡会员"),
         ("time3", "变更时间", _T), ("thing4", "温馨提示", "金卡会员消费享1.5倍积分")),
    ),
    (
        "gift_received",
        "收到礼物通知",
        (("name1", "赠送人", "李雷"), ("thing2", "礼物名称", "山茶花精华面霜"),
         ("time3", "领取截止时间", _T), ("thing4", "祝福语", "生日快乐")),
    ),
    (
        "gift_accepted",
        "礼物领取成功通知",
        (("name1", "领取人", "韩梅梅"), ("thing2", "礼物名称", "山茶花精华面霜"), ("time3", "领取时间", _T)),
    ),
    (
        "gift_expired",
        "礼物过期退款通知",
        (("thing1", "礼物名称", "山茶花精华面霜"), ("amount2", "退款金额", "¥128.00"), ("time3", "过期时间", _T)),
    ),
    (
        "reward_redeemed",
        "积分兑换成功通知",
        (("thing1", "兑换商品", "满100减20优惠券"), ("number2", "消耗积分", "500"),
         ("number3", "剩余积分", "524"), ("time4", "兑换时间", _T)),
    ),
    (
        "order_unpaid",
        "订单待支付提醒",
        (("character_string1", "订单编号", _ORDER), ("amount2", "待付金额", "¥128.00"),
         ("thing3", "商品名称", "山茶花精华面霜"), ("time4", "支付截止时间", _T)),
    ),
    (
        "activity",
        "活动开始提醒",
        (("thing1", "活动名称", "会员日全场双倍积分"), ("time2", "活动时间", "2024年5月20日 10:00~2024年5月20日 22:00"),
         ("thing3", "活动说明", "点击查看活动详情")),
    ),
)
# Template messages are for service notices only, never marketing (official Template_Message_Interface
# rules; research/shop.md §4.2): the service account's template library has no "activity" template.
NOT_TEMPLATE_MESSAGES = frozenset({"activity"})
# Member-service notices a service account may keep sending once subscribed (long-term).
LONG_TERM_NOTICES = frozenset({"points_earned", "points_expiring", "tier_changed"})

_TEMPLATE_ID_ALPHABET = string.ascii_letters + string.digits + "_-"


def _template_id(seed: int, appid: str, family: str, name: str) -> str:
    # One stream per template, so an id does not move when the catalogue grows.
    rng = random.Random(f"{seed}:template:{appid}:{family}:{name}")
    return "".join(rng.choice(_TEMPLATE_ID_ALPHABET) for _ in range(43))


def _build(seed: int, app: WeChatApp, family: str, name: str, title: str, kind: str, fields: Any) -> Template:
    return Template(
        template_id=_template_id(seed, app.appid, family, name),
        appid=app.appid,
        name=name,
        title=title,
        kind=kind,
        fields=tuple(Field(*f) for f in fields),
    )


class TemplateLibrary:
    """Each app's templates: a service account's template messages and subscription notices, a
    mini-program's subscribe messages. Ids are seeded (43 characters, like real ones)."""

    def __init__(self, apps: WeChatApps, seed: int) -> None:
        self._by_app: dict[str, list[Template]] = {}
        self._by_id: dict[tuple[str, str], Template] = {}
        for app in apps.apps:
            templates: list[Template] = []
            for name, title, fields in CATALOG:
                if app.kind is AppKind.OFFICIAL_ACCOUNT:
                    if name not in NOT_TEMPLATE_MESSAGES:
                        templates.append(_build(seed, app, "template", name, title, TEMPLATE, fields))
                    kind = SUBSCRIBE_LONG if name in LONG_TERM_NOTICES else SUBSCRIBE_ONCE
                    templates.append(_build(seed, app, "subscribe", name, title, kind, fields))
                elif app.kind is AppKind.MINI_PROGRAM:
                    templates.append(_build(seed, app, "subscribe", name, title, SUBSCRIBE_ONCE, fields))
            # Template messages first, then subscription templates, each in catalogue order.
            templates.sort(key=lambda t: t.kind != TEMPLATE)
            self._by_app[app.appid] = templates
            self._by_id.update({(app.appid, t.template_id): t for t in templates})

    def of_app(self, appid: str) -> list[Template]:
        return list(self._by_app.get(appid, []))

    def get(self, appid: str, template_id: Any) -> Template | None:
        return self._by_id.get((appid, template_id)) if isinstance(template_id, str) else None

    def for_send(self, appid: str, template_id: Any, *kinds: str) -> Template:
        """The app's template of one of ``kinds``, or 40037 (ids of the other kind included:
        template-message and subscription ids are not interchangeable)."""
        template = self.get(appid, template_id)
        if template is None or template.kind not in kinds:
            raise WeChatApiError(40037)
        return template


# -- authorisations ---------------------------------------------------------------------------------


@dataclass
class Authorisation:
    """A user's consent to one subscription template."""

    remaining: int = 0  # one-time: sends left (each acceptance adds one)
    long_term: bool = False  # long-term: accepted and not turned off since

    def describe(self, template: Template) -> dict[str, Any]:
        return {
            "template_id": template.template_id,
            "name": template.name,
            "kind": template.kind,
            "remaining": self.remaining,
            "long_term": self.long_term,
        }


class Authorisations:
    def __init__(self) -> None:
        self._book: dict[tuple[str, str, str], Authorisation] = {}

    def of(self, user_id: str, template: Template) -> Authorisation:
        return self._book.setdefault((template.appid, user_id, template.template_id), Authorisation())

    def popup(self, user_id: str, template: Template, accepted: bool) -> None:
        """One answer in wx.requestSubscribeMessage (or the service account's subscribe popup)."""
        auth = self.of(user_id, template)
        if template.kind == SUBSCRIBE_LONG:
            auth.long_term = accepted
        elif accepted:
            auth.remaining += 1

    def turn_off(self, user_id: str, template: Template) -> None:
        """The user rejects the template in the notification settings: nothing more may be sent."""
        auth = self.of(user_id, template)
        auth.remaining = 0
        auth.long_term = False

    def consume(self, user_id: str, template: Template) -> None:
        """Spend what one send needs, or raise 43101."""
        auth = self.of(user_id, template)
        if template.kind == SUBSCRIBE_LONG:
            if not auth.long_term:
                raise WeChatApiError(43101)
        elif auth.remaining > 0:
            auth.remaining -= 1
        else:
            raise WeChatApiError(43101)

    def describe(self, appid: str, user_id: str, library: TemplateLibrary) -> list[dict[str, Any]]:
        out = []
        for template in library.of_app(appid):
            auth = self._book.get((appid, user_id, template.template_id))
            if auth is not None:
                out.append(auth.describe(template))
        return out


# -- API limits -------------------------------------------------------------------------------------


@dataclass
class _Usage:
    """One app's use of one limited path."""

    calls: int = 0
    rejected: int = 0
    peak_per_second: int = 0
    # Accepted calls in the last second (a rolling window), for 45011.
    recent: deque[float] = field(default_factory=deque)
    # Accepted calls in the current clock second, for peak_per_second.
    second: int | None = None
    in_second: int = 0
    # Accepted calls on the current Beijing day, for 45009.
    day: int | None = None
    today: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "rejected": self.rejected,
            "peak_per_second": self.peak_per_second,
            "used_today": self.today,
        }


@dataclass
class Limit:
    path: str
    per_second: int | None
    per_day: int | None
    usage: dict[str, _Usage] = field(default_factory=dict)

    def admit(self, appid: str, now: float) -> int | None:
        """Count one call; answer the errcode that refuses it (45009, 45011) or None."""
        u = self.usage.setdefault(appid, _Usage())
        u.calls += 1
        day = wechat_day(now)
        if u.day != day:
            u.day, u.today = day, 0
        while u.recent and u.recent[0] <= now - 1:
            u.recent.popleft()
        if self.per_day is not None and u.today >= self.per_day:
            u.rejected += 1
            return 45009
        if self.per_second is not None and len(u.recent) >= self.per_second:
            u.rejected += 1
            return 45011
        u.today += 1
        u.recent.append(now)
        second = math.floor(now)
        if u.second != second:
            u.second, u.in_second = second, 0
        u.in_second += 1
        u.peak_per_second = max(u.peak_per_second, u.in_second)
        return None

    def describe(self) -> dict[str, Any]:
        usages = self.usage.values()
        return {
            "calls": sum(u.calls for u in usages),
            "rejected": sum(u.rejected for u in usages),
            # The limits are each app's, so the peak is the highest of any one app.
            "peak_per_second": max((u.peak_per_second for u in usages), default=0),
            "per_second": self.per_second,
            "per_day": self.per_day,
            "apps": {appid: u.describe() for appid, u in self.usage.items()},
        }


class Limits:
    """WeChat's frequency (45011) and daily (45009) limits on chosen API paths, per app."""

    def __init__(self) -> None:
        self._limits: dict[str, Limit] = {}

    def set(self, path: str, per_second: int | None, per_day: int | None) -> Limit:
        limit = self._limits[path] = Limit(path, per_second, per_day)
        return limit

    def get(self, path: str) -> Limit | None:
        return self._limits.get(path)

    def clear(self) -> None:
        self._limits.clear()

    def describe(self) -> dict[str, Any]:
        return {path: limit.describe() for path, limit in self._limits.items()}


# -- everything together ----------------------------------------------------------------------------


@dataclass
class _Sent:
    at: float
    msgid: int


class MessageCenter:
    """The sandbox's messaging state beside ``SandboxState``: templates, consents, sends, limits."""

    def __init__(self, apps: WeChatApps, seed: int) -> None:
        self.library = TemplateLibrary(apps, seed)
        self.authorisations = Authorisations()
        self.limits = Limits()
        self._msgids = random.Random(f"{seed}:message-ids")
        # (appid, openid, client_msg_id) -> the send it was first used for.
        self._client_msg_ids: dict[tuple[str, str, str], _Sent] = {}
        # (appid, user_id): users who blocked a service account's template messages.
        self.template_blocks: set[tuple[str, str]] = set()

    def msgid(self) -> int:
        # Message ids are 64-bit: exact in JSON, but past a double's 2^53 (research/wechat.md §2).
        return self._msgids.randint(10**18, 2**63 - 1)

    def reentry(self, appid: str, openid: str, client_msg_id: str, now: float) -> int | None:
        """The msgid of an earlier send with this openid + client_msg_id within 10 minutes."""
        sent = self._client_msg_ids.get((appid, openid, client_msg_id))
        if sent is None or now - sent.at >= CLIENT_MSG_ID_TTL:
            return None
        return sent.msgid

    def remember(self, appid: str, openid: str, client_msg_id: str, now: float, msgid: int) -> None:
        for key in [k for k, s in self._client_msg_ids.items() if now - s.at >= CLIENT_MSG_ID_TTL]:
            del self._client_msg_ids[key]
        self._client_msg_ids[(appid, openid, client_msg_id)] = _Sent(now, msgid)


# -- inbox ------------------------------------------------------------------------------------------


def open_target(entry: dict[str, Any]) -> dict[str, Any] | None:
    """What tapping an inbox entry opens: the mini-program page (preferred, as WeChat does when a
    message carries both) with its query string untouched, or the URL; None without a jump."""
    jump = entry.get("jump") or {}
    mp = jump.get("miniprogram")
    if mp:
        pagepath = mp.get("pagepath") or ""
        path, _, query = pagepath.partition("?")
        return {
            "opened": "miniprogram",
            "miniprogram": {"appid": mp.get("appid"), "pagepath": pagepath},
            "pagepath": pagepath,
            "path": path,
            "query": dict(parse_qsl(query, keep_blank_values=True)),
        }
    url = jump.get("url")
    if url:
        return {
            "opened": "url",
            "url": url,
            "query": dict(parse_qsl(url.partition("?")[2].partition("#")[0], keep_blank_values=True)),
        }
    return None
