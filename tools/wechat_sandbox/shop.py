"""WeChat Shop on the control side: push shop events on the Shop's retry schedule, and play the
mini-program member callbacks that must be answered synchronously.

- ``POST /sandbox/shop/push``: an event pushed to the shop app's callback URL, safe mode, JSON
  (research/shop.md §1.6: a shop allows only the encrypted mode and JSON). Unacknowledged pushes are
  repeated on the Shop schedule 0s/0s/10s/1min/5min/30min/60min/60min/60min, at most 10 pushes.
- ``POST /sandbox/shop/callback``: the 小程序会员 callbacks (research/shop.md §3.2) go to the
  **mini-program's** push URL — ToUserName the mini-program's UserName, FromUserName the user's
  mini-program openid (official channels_ec_vip_user_info_get doc) — and the answer is read from the
  HTTP response.

These are raw pushes: they change no state. The shop's catalog, orders, gifts and after-sales live in
``shop_state.py``, are played through ``shop_control.py`` and read back through ``shop_api.py``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import Field

from shared.wechat import codec
from shared.wechat.apps import AppKind, WeChatApp
from tools.wechat_sandbox.api import StateDep
from tools.wechat_sandbox.control import PusherDep, _app, _Body, _user
from tools.wechat_sandbox.push import SHOP_RETRY_DELAYS
from tools.wechat_sandbox.state import SandboxState

router = APIRouter(prefix="/sandbox/shop", tags=["Sandbox control"])


class ShopPush(_Body):
    event: str = Field(min_length=1, examples=["channels_ec_order_pay"])
    user_id: str | None = Field(default=None, description="the buyer; FromUserName is their shop openid")
    payload: dict[str, Any] | None = Field(default=None, description="merged over the default body of the event")
    appid: str | None = Field(default=None, description="a shop app; the first shop in the apps file by default")
    retry_schedule: bool = Field(default=False, description="repeat unacknowledged pushes on the Shop schedule")
    time_scale: float = Field(default=1.0, ge=0, le=1, description="multiplies every wait: 0.001 makes 1 min 60 ms")


class ShopCallback(_Body):
    event: str = Field(min_length=1, examples=["channels_ec_vip_user_info_get"])
    user_id: str
    payload: dict[str, Any] | None = None
    appid: str | None = Field(default=None, description="the mini-program; the first one by default")
    shop_appid: str | None = Field(default=None, description="the shop in info.shop_appid; the first one by default")


def _first(state: SandboxState, kind: AppKind, appid: str | None) -> WeChatApp:
    if appid is not None:
        return _app(state, appid, kind)
    apps = state.apps.of_kind(kind)
    if not apps:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"the apps file has no {kind.value}")
    return apps[0]


def _merge(base: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """``extra`` over ``base``; objects present in both are merged one level deep."""
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def shop_envelope(state: SandboxState, shop: WeChatApp, from_user: str, event: str) -> dict[str, Any]:
    """The fields every shop push starts with (research/shop.md §1.6)."""
    return {
        "ToUserName": shop.original_id or shop.appid,
        "FromUserName": from_user,
        "CreateTime": int(state.now()),
        "MsgType": "event",
        "Event": event,
    }


def default_shop_body(state: SandboxState, event: str) -> dict[str, Any]:
    """The event-specific part of a shop push (research/shop.md §1.6 table); ``{}`` for other events."""
    now = int(state.now())
    if event.startswith("channels_ec_order_"):
        extra = {
            "channels_ec_order_pay": {"pay_time": now},
            "channels_ec_order_cancel": {"cancel_type": 1},
            "channels_ec_order_deliver": {"finish_delivery": 1},
            "channels_ec_order_confirm": {"confirm_type": 1},
            "channels_ec_order_settle": {"settle_time": now},
            "channels_ec_order_ext_info_update": {"type": 1},
        }.get(event, {})
        return {"order_info": {"order_id": state.ids.shop_order_id(), **extra}}
    if event == "channels_ec_aftersale_update":
        return {
            "finder_shop_aftersale_status_update": {
                "after_sale_order_id": state.ids.shop_aftersale_id(),
                "order_id": state.ids.shop_order_id(),
                "status": "MERCHANT_PROCESSING",
            }
        }
    return {}


@router.post("/push")
async def shop_push(state: StateDep, pusher: PusherDep, body: ShopPush) -> list[dict[str, Any]]:
    """Push a shop event (JSON, safe mode, signed; ToUserName = the shop's original_id, FromUserName =
    the user's shop openid, or the shop's fixed system openid without ``user_id``). Order events get a
    seeded ``order_info.order_id``; ``payload`` overrides any field. With ``retry_schedule`` an
    unacknowledged push (not 200 with ``success`` or an empty body within 5 s) is re-sent byte for
    byte after 0s/0s/10s/1min/5min/30min/60min/60min/60min × ``time_scale``. Answers the attempts:
    ``[{"attempt", "offset_s", "status", "body", "acknowledged", "error"?}]``."""
    shop = _first(state, AppKind.SHOP, body.appid)
    if body.user_id:
        from_user = _user(state, body.user_id).openids[shop.appid]
    else:
        from_user = state.ids.shop_system_openid(shop.appid)
    envelope = shop_envelope(state, shop, from_user, body.event)
    payload = _merge(envelope | default_shop_body(state, body.event), body.payload)
    try:
        prepared = pusher.prepare(shop, payload)
    except (ValueError, TypeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    delays = SHOP_RETRY_DELAYS if body.retry_schedule else ()
    outcome = await pusher.send_on_schedule(prepared, delays=delays, time_scale=body.time_scale)
    return outcome.schedule


def default_callback_body(event: str, shop_appid: str) -> dict[str, Any]:
    if event.startswith("channels_ec_order_") or event == "channels_ec_gen_order_info_init":
        return {"order_info": {"shop_appid": shop_appid}}
    return {"info": {"shop_appid": shop_appid}}


@router.post("/callback")
async def shop_callback(state: StateDep, pusher: PusherDep, body: ShopCallback) -> dict[str, Any]:
    """Play a synchronous shop→mini-program callback (``channels_ec_vip_user_info_get``,
    ``channels_ec_vip_user_auto_add``, ``channels_ec_order_use_vip_discount``, ...) and answer what the
    gateway replied: ``{"status", "answer": <the reply, decrypted and parsed>, "encrypted", "body",
    "reply_error"?, "error"?}``. Sent once, in the mini-program's push mode and format."""
    mp = _first(state, AppKind.MINI_PROGRAM, body.appid)
    shop = _first(state, AppKind.SHOP, body.shop_appid)
    user = _user(state, body.user_id)
    envelope = {
        "ToUserName": mp.original_id or mp.appid,
        "FromUserName": user.openids[mp.appid],
        "CreateTime": int(state.now()),
        "MsgType": "event",
        "Event": body.event,
    }
    payload = _merge(envelope | default_callback_body(body.event, shop.appid), body.payload)
    try:
        prepared = pusher.prepare(mp, payload)
    except (ValueError, TypeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    outcome = await pusher.send(prepared)
    out: dict[str, Any] = {
        "status": outcome.status,
        "answer": _parse_answer(outcome.body),
        "encrypted": outcome.encrypted_reply,
        "body": outcome.body,
    }
    if outcome.error:
        out["error"] = outcome.error
    if outcome.reply_error:
        out["reply_error"] = outcome.reply_error
    return out


def _parse_answer(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return json.loads(stripped)
        except ValueError:
            return None
    if stripped.startswith("<"):
        try:
            return codec.parse_xml(stripped.encode())
        except Exception:
            return None
    return None
