"""The WeChat API client: access token, bounded retries, typed errors.

Retry rules (the WeChat SDKs get these wrong in both directions — unbounded recursion on 40001,
or no retry at all):

* Token rejected (40001/40014/42001): drop that token (compare-and-delete), fetch again, repeat the
  call **once**. A second rejection is raised. Never loop.
* ``-1`` (system busy): WeChat did nothing, so the call is repeated with backoff up to
  ``max_attempts`` — for every method, including a POST that sends a message.
* Network error, HTTP 5xx, a non-JSON answer: we cannot know whether WeChat acted. Repeated only
  for idempotent calls (GET, or ``idempotent=True``); repeating a message-send POST could deliver
  it twice. The exceptions are failures that prove nothing was sent: a connect error / pool
  timeout, or failing to get the access token — those are repeated for every method.
* Any other errcode is raised at once as its typed :class:`~shared.wechat.errors.WeChatAPIError`.

Secrets: the access token and jscode2session's ``secret`` travel in the query string (WeChat's
design), so they are scrubbed from error messages and from httpx's own request log line.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import ConfigurationError
from shared.http import create_client
from shared.observability import get_logger
from shared.wechat.apps import WeChatApp, WeChatApps
from shared.wechat.errors import (
    TOKEN_ERRCODES,
    ShopSystemError,
    SystemBusy,
    WeChatAPIError,
    WeChatUnavailable,
    error_for,
    parse_errcode,
)
from shared.wechat.token import StableTokenProvider

log = get_logger(__name__)

_M = TypeVar("_M", bound=BaseModel)

DEFAULT_API_BASE = "https://api.weixin.qq.com"

SAFE_METHODS = frozenset({"GET", "HEAD"})
"""Methods whose calls are repeated after an ambiguous failure (the request may have been acted on)."""

# These prove the request never left this process, so even a message send can be repeated.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_SECRET_QUERY = re.compile(r"\b((?:access_token|secret|js_code|code)=)[^&\s\"']+", re.IGNORECASE)


class _RedactSecretsFilter(logging.Filter):
    """httpx logs every request URL at INFO; WeChat puts access_token and secret in the URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_QUERY.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _install_log_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactSecretsFilter) for f in logger.filters):
        logger.addFilter(_RedactSecretsFilter())


_install_log_redaction()


# --- response models ------------------------------------------------------------------------------


class _Answer(BaseModel):
    # WeChat adds fields without notice; keep them rather than fail.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class UserInfo(_Answer):
    """``/cgi-bin/user/info``. For ``subscribe == 0`` WeChat returns only subscribe/openid (and unionid)."""

    subscribe: int
    openid: str
    unionid: str | None = None
    language: str | None = None
    subscribe_time: int | None = None
    subscribe_scene: str | None = None
    qr_scene: int | None = None
    qr_scene_str: str | None = None
    remark: str | None = None
    groupid: int | None = None
    tagid_list: list[int] = Field(default_factory=list)

    @property
    def subscribed(self) -> bool:
        return self.subscribe == 1


class Code2Session(_Answer):
    """``/sns/jscode2session``. ``unionid`` only when the mini-program is bound to an Open Platform account."""

    openid: str
    session_key: str = Field(repr=False)
    unionid: str | None = None


class PhoneWatermark(_Answer):
    timestamp: int
    appid: str


class PhoneInfo(_Answer):
    """``phone_info`` of ``/wxa/business/getuserphonenumber``."""

    phone_number: str = Field(alias="phoneNumber")
    pure_phone_number: str = Field(alias="purePhoneNumber")
    # Documented as a string, returned as a number in practice.
    country_code: str = Field(alias="countryCode")
    watermark: PhoneWatermark | None = None

    @field_validator("country_code", mode="before")
    @classmethod
    def _country_code_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | Decimal) else v


def _id_text(v: Any) -> Any:
    """A 64-bit WeChat id sent as a JSON number or a string: kept as exact text."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ShopOrder(_Answer):
    """``order`` of ``/channels/ec/order/get`` (research/shop.md §1.3). ``order_detail`` and
    ``aftersale_detail`` stay as WeChat sent them: the shop adds and retires fields often."""

    order_id: str
    status: int
    create_time: int = 0
    update_time: int = 0
    # The order's owner: the payer, or a gift's recipient (absent until the gift is accepted).
    openid: str | None = None
    unionid: str | None = None
    is_present: bool = False
    present_order_id_str: str | None = None
    present_giver_openid: str | None = None
    present_giver_unionid: str | None = None
    order_detail: dict[str, Any] = Field(default_factory=dict)
    aftersale_detail: dict[str, Any] = Field(default_factory=dict)

    ids_as_text = field_validator("order_id", "present_order_id_str", mode="before")(_id_text)


class ShopOrderPage(_Answer):
    """``/channels/ec/order/list/get``: one page of order ids."""

    order_id_list: list[str] = Field(default_factory=list)
    next_key: str = ""
    has_more: bool = False

    @field_validator("order_id_list", mode="before")
    @classmethod
    def _ids_as_text(cls, v: Any) -> Any:
        return [_id_text(i) for i in v] if isinstance(v, list) else v


class ShopAfterSaleProduct(_Answer):
    product_id: str | None = None
    sku_id: str | None = None
    count: int = 0

    ids_as_text = field_validator("product_id", "sku_id", mode="before")(_id_text)


class ShopAfterSale(_Answer):
    """``after_sale_order`` of ``/channels/ec/aftersale/getaftersaleorder`` (research/shop.md §1.5)."""

    after_sale_order_id: str
    order_id: str
    status: str
    type: str = "REFUND"
    openid: str | None = None
    unionid: str | None = None
    product_info: ShopAfterSaleProduct = Field(default_factory=ShopAfterSaleProduct)
    refund_info: dict[str, Any] = Field(default_factory=dict)
    create_time: int = 0
    update_time: int = 0

    ids_as_text = field_validator("after_sale_order_id", "order_id", mode="before")(_id_text)

    @property
    def amount_fen(self) -> int:
        amount = self.refund_info.get("amount")
        return int(amount) if isinstance(amount, int | str) and str(amount).isdigit() else 0


class ShopSku(_Answer):
    sku_id: str
    sale_price: int = 0
    stock_num: int = 0

    ids_as_text = field_validator("sku_id", mode="before")(_id_text)


class ShopProduct(_Answer):
    """``product`` of ``/channels/ec/product/get`` (the online data)."""

    product_id: str
    title: str = ""
    status: int | None = None
    skus: list[ShopSku] = Field(default_factory=list)

    ids_as_text = field_validator("product_id", mode="before")(_id_text)


# --- the client -----------------------------------------------------------------------------------


class _Retry(Exception):
    """Internal: this attempt failed in a way that may be repeated."""

    def __init__(self, error: Exception, cause: BaseException | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.cause = cause


class _TokenRejected(Exception):
    """Internal: WeChat rejected ``token``."""

    def __init__(self, token: str, error: WeChatAPIError) -> None:
        super().__init__(str(error))
        self.token = token
        self.error = error


class WeChatClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        apps: WeChatApps,
        *,
        max_attempts: int = 3,
        backoff: float = 0.2,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._apps = apps
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._sleep = sleep
        self._tokens: dict[str, StableTokenProvider] = {}
        self._owns_http = False

    @classmethod
    def create(cls, api_base: str, apps: WeChatApps, *, timeout: float = 10.0, **kw: Any) -> Self:
        """A client with its own HTTP client (``api_base`` is usually :data:`DEFAULT_API_BASE`).

        The transport gets ``retries=0`` so attempts do not multiply (transport x client) and the
        WeChat-specific rule above is the only one: WeChat signals "busy" with errcode -1 in an
        HTTP 200, which a generic HTTP retry never sees.
        """
        client = cls(create_client(api_base, timeout=timeout, retries=0), apps, **kw)
        client._owns_http = True
        return client

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def app(self, appid: str) -> WeChatApp:
        found = self._apps.get(appid)
        if found is None:
            raise ConfigurationError(f"appid {appid} is not in the WeChat apps file")
        return found

    def token_provider(self, appid: str) -> StableTokenProvider:
        provider = self._tokens.get(appid)
        if provider is None:
            provider = self._tokens[appid] = StableTokenProvider(self._http, self.app(appid))
        return provider

    async def call(
        self,
        appid: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        with_token: bool = True,
        idempotent: bool | None = None,
    ) -> dict[str, Any]:
        """Call a JSON WeChat API and return its answer; raise a typed error for a non-zero errcode.

        ``idempotent`` defaults to ``method in SAFE_METHODS``; pass ``True`` for a POST that only
        reads (e.g. ``user/info/batchget``) so it is repeated after network errors too.
        """
        app = self.app(appid)
        method = method.upper()
        repeatable = method in SAFE_METHODS if idempotent is None else idempotent
        token_retried = False
        attempt = 1
        while True:
            try:
                return await self._attempt(app, method, path, params, json, with_token, repeatable)
            except _TokenRejected as rejected:
                if token_retried:
                    raise rejected.error from None
                token_retried = True
                log.warning("wechat.token.rejected", appid=appid, path=path, errcode=rejected.error.errcode)
                await self.token_provider(appid).invalidate(rejected.token)
            except _Retry as retry:
                if attempt >= self._max_attempts:
                    raise retry.error from retry.cause
                delay = self._backoff * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                log.warning(
                    "wechat.call.retry",
                    appid=appid,
                    path=path,
                    attempt=attempt,
                    delay=round(delay, 3),
                    error=type(retry.error).__name__,
                )
                await self._sleep(delay)
                attempt += 1

    async def _attempt(
        self,
        app: WeChatApp,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        with_token: bool,
        repeatable: bool,
    ) -> dict[str, Any]:
        query = dict(params or {})
        token: str | None = None
        if with_token:
            try:
                token = await self.token_provider(app.appid).get()
            except (SystemBusy, WeChatUnavailable) as exc:
                raise _Retry(exc, exc.__cause__) from None  # the API call itself was not sent yet
            query["access_token"] = token
        secrets = [s for s in (app.secret, token) if s]

        content: bytes | None = None
        headers: dict[str, str] = {}
        if json is not None:
            # WeChat shows \uXXXX escapes literally in some messages: send raw UTF-8.
            content = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        try:
            response = await self._http.request(method, path, params=query, content=content, headers=headers)
        except httpx.TransportError as exc:
            error = WeChatUnavailable(f"WeChat {path}: {type(exc).__name__}")
            if repeatable or isinstance(exc, _NOT_SENT):
                raise _Retry(error, exc) from None
            raise error from exc

        if response.status_code >= 500:
            error = WeChatUnavailable(f"WeChat {path}: HTTP {response.status_code}")
            if repeatable:
                raise _Retry(error)
            raise error
        try:
            # Integers stay int (exact at 19 digits); floats become Decimal instead of losing digits.
            body = jsonlib.loads(response.content, parse_float=Decimal)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            error = WeChatUnavailable(f"WeChat {path}: not a JSON object (HTTP {response.status_code})")
            if repeatable:
                raise _Retry(error)
            raise error

        errcode = parse_errcode(body.get("errcode"))
        if errcode == 0:
            return body
        if errcode is None:
            raise WeChatUnavailable(f"WeChat {path}: malformed errcode")
        api_error = error_for(errcode, _redact(str(body.get("errmsg") or ""), secrets), path)
        if errcode in TOKEN_ERRCODES and token is not None:
            raise _TokenRejected(token, api_error)
        # Only -1 promises WeChat did nothing. A shop "system error" makes no such promise, so it
        # is repeated only for idempotent calls; quota errors do not clear within a backoff.
        if isinstance(api_error, SystemBusy) or (isinstance(api_error, ShopSystemError) and repeatable):
            raise _Retry(api_error)
        raise api_error

    # --- typed calls ------------------------------------------------------------------------------

    async def user_info(self, appid: str, openid: str, *, lang: str = "zh_CN") -> UserInfo:
        """An official-account follower's profile (GET: repeated after network errors)."""
        path = "/cgi-bin/user/info"
        body = await self.call(appid, "GET", path, params={"openid": openid, "lang": lang})
        return _parse(UserInfo, body, path)

    async def jscode2session(self, appid: str, code: str) -> Code2Session:
        """Exchange a mini-program ``wx.login`` code. No access token: the app secret goes in the query.

        The code is single-use: repeating after a network error can only turn that error into
        40163/40029, never log in twice.
        """
        path = "/sns/jscode2session"
        app = self.app(appid)
        params = {
            "appid": app.appid,
            "secret": app.secret,
            "js_code": code,
            "grant_type": "authorization_code",
        }
        body = await self.call(appid, "GET", path, params=params, with_token=False)
        return _parse(Code2Session, body, path)

    async def get_phone_number(self, appid: str, code: str) -> PhoneInfo:
        """The phone number behind a ``getPhoneNumber`` button code (POST, single-use code: not repeated)."""
        path = "/wxa/business/getuserphonenumber"
        body = await self.call(appid, "POST", path, json={"code": code})
        return _parse(PhoneInfo, body.get("phone_info"), path)

    async def send_custom_message(self, appid: str, payload: dict[str, Any]) -> None:
        """A customer-service message. NOT idempotent: repeated only on -1 / unsent requests."""
        await self.call(appid, "POST", "/cgi-bin/message/custom/send", json=payload)

    # --- WeChat Shop (channels/ec): reads, repeated after network errors ---------------------------

    async def shop_order_get(self, appid: str, order_id: str) -> ShopOrder:
        """An order as it is now. ``encode_sensitive_info`` masks the address: Siyu never needs it."""
        path = "/channels/ec/order/get"
        body = await self.call(
            appid, "POST", path, json={"order_id": order_id, "encode_sensitive_info": True}, idempotent=True
        )
        return _parse(ShopOrder, body.get("order"), path)

    async def shop_order_list(
        self, appid: str, *, update_from: int, update_to: int, page_size: int = 100, next_key: str | None = None
    ) -> ShopOrderPage:
        """Order ids updated in ``[update_from, update_to]`` (epoch seconds; the shop allows 7 days at most)."""
        path = "/channels/ec/order/list/get"
        request: dict[str, Any] = {
            "update_time_range": {"start_time": update_from, "end_time": update_to},
            "page_size": page_size,
        }
        if next_key:
            request["next_key"] = next_key
        body = await self.call(appid, "POST", path, json=request, idempotent=True)
        return _parse(ShopOrderPage, body, path)

    async def shop_aftersale_get(self, appid: str, after_sale_order_id: str) -> ShopAfterSale:
        path = "/channels/ec/aftersale/getaftersaleorder"
        body = await self.call(appid, "POST", path, json={"after_sale_order_id": after_sale_order_id}, idempotent=True)
        return _parse(ShopAfterSale, body.get("after_sale_order"), path)

    async def shop_product_get(self, appid: str, product_id: str) -> ShopProduct:
        path = "/channels/ec/product/get"
        body = await self.call(appid, "POST", path, json={"product_id": product_id, "data_type": 1}, idempotent=True)
        return _parse(ShopProduct, body.get("product"), path)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return _SECRET_QUERY.sub(r"\1***", text)


def _parse(model: type[_M], data: Any, path: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "<root>" for e in exc.errors())
        raise WeChatUnavailable(f"WeChat {path}: unexpected answer ({fields})") from None
