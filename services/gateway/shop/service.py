"""WeChat Shop callbacks that must be answered in the HTTP response (shop.md §3.2).

They reach the mini-program's push URL when the shop is linked to the brand's mini-program
membership. Each is routed to the service that owns the answer, under the reply budget; when the
owner is slow or down the gateway answers a documented safe default instead of letting WeChat
wait (README, "Shop callbacks that need an answer"):

- ``channels_ec_vip_user_info_get`` → identity; default not a member (``is_vip: false``): never link
  a shop buyer to the wrong member; the buyer can still register.
- ``channels_ec_vip_user_auto_add`` → identity; default ok: identity consumes the stored push anyway.
- ``channels_ec_order_use_vip_discount`` → commerce; default deny (``result: 2``): a benefit that
  cannot be checked is not granted, and the order proceeds at the normal price.
- ``channels_ec_order_unuse_vip_discount`` → commerce; default ok: releasing is idempotent.
- ``channels_ec_gen_order_info_init`` → commerce; default ok with no default benefits.

Every owner answers these idempotently (a read, or keyed by the order's ``unique_id``), so a call
whose pooled connection died is sent again.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from prometheus_client import Counter

from services.gateway.upstreams import Service, Upstreams
from shared.errors import SiyuError
from shared.observability import get_logger
from shared.wechat.apps import WeChatApp
from shared.wechat.crypto import MessageCrypto
from shared.wechat.push import Push

log = get_logger(__name__)

SYNC_ANSWERS = Counter("siyu_gateway_shop_sync_answers_total", "Synchronous shop callback answers", ["event", "source"])

OK: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}

ROUTES: dict[str, tuple[Service, str, dict[str, Any]]] = {
    "channels_ec_vip_user_info_get": ("identity", "/internal/shop/vip-user-info", {**OK, "info": {"is_vip": False}}),
    "channels_ec_vip_user_auto_add": ("identity", "/internal/shop/vip-user-auto-add", OK),
    "channels_ec_order_use_vip_discount": ("commerce", "/internal/shop/vip-discount/use", {**OK, "result": 2}),
    "channels_ec_order_unuse_vip_discount": ("commerce", "/internal/shop/vip-discount/release", OK),
    "channels_ec_gen_order_info_init": ("commerce", "/internal/shop/order-info-init", OK),
}


def needs_answer(push: Push) -> bool:
    return push.name in ROUTES


class ShopCallbacks:
    def __init__(self, upstreams: Upstreams, *, budget: float) -> None:
        self.upstreams = upstreams
        self.budget = budget

    async def answer(
        self, app: WeChatApp, push: Push, payload: dict[str, Any], crypto: MessageCrypto | None, *, encrypted: bool,
        key_index: int,
    ) -> str:
        """The JSON answer for WeChat (encrypted when the push was), from the owner or the safe default."""
        service, path, default = ROUTES[push.name]
        answer, source = default, "default"
        try:
            async with asyncio.timeout(self.budget):
                response = await self.upstreams.request(
                    service,
                    "POST",
                    path,
                    json_body={"appid": app.appid, "openid": push.from_user_name, "payload": payload},
                    retry_safe=True,
                )
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("errcode"), int):
                answer, source = body, service
            else:
                log.error("shop_sync.bad_answer", callback=push.name, service=service)
        except (TimeoutError, SiyuError, ValueError) as exc:  # slow, down or garbled: the safe default now
            log.warning("shop_sync.default", callback=push.name, service=service, error=repr(exc))
        SYNC_ANSWERS.labels(push.name, source).inc()
        text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        if not encrypted or crypto is None:
            return text
        now, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
        return crypto.encrypt_reply_json(text, now, nonce, key_index=key_index)
