"""Pushing callbacks to the gateway the way WeChat does: signed, encrypted, retried byte for byte."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from shared.http import create_client
from shared.observability import get_logger
from shared.wechat import codec, crypto
from shared.wechat.apps import WeChatApp
from tools.wechat_sandbox.state import SandboxState

PushMode = Literal["safe", "compat", "plain"]

log = get_logger("wechat_sandbox.push")

# WeChat Shop's re-push schedule: the waits before the 2nd..10th push when the previous one was not
# acknowledged within 5 s — "0s/0s/10s/1min/5min/30min/60min/60min/60min", at most 10 pushes,
# about 3.6 hours (doc/store/shop/notify/order_callback/channels_ec_order_new; research/shop.md §1.6).
SHOP_RETRY_DELAYS: tuple[float, ...] = (0, 0, 10, 60, 300, 1800, 3600, 3600, 3600)


@dataclass(frozen=True)
class PreparedPush:
    """One push, fully rendered. Sending it again sends exactly the same bytes (a WeChat retry)."""

    app: WeChatApp
    payload: dict[str, Any]
    mode: PushMode
    url: httpx.URL
    body: bytes
    content_type: str


@dataclass
class PushOutcome:
    status: int | None
    body: str
    attempts: int
    statuses: list[int | None]
    error: str | None = None
    reply_error: str | None = None
    encrypted_reply: bool = False
    # One entry per push when sent on a schedule (send_on_schedule).
    schedule: list[dict[str, Any]] = field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "body": self.body, "attempts": self.attempts}
        if self.error:
            out["error"] = self.error
        if self.reply_error:
            out["reply_error"] = self.reply_error
        return out


def default_mode(app: WeChatApp) -> PushMode:
    return "safe" if app.encoding_aes_key else "plain"


def _is_json(app: WeChatApp) -> bool:
    return app.push_format == "json"


def _render(app: WeChatApp, mapping: dict[str, Any]) -> bytes:
    if _is_json(app):
        return json.dumps(mapping, ensure_ascii=False, separators=(",", ":")).encode()
    return codec.render_xml(mapping).encode()


class CallbackPusher:
    def __init__(
        self,
        state: SandboxState,
        gateway_url: str,
        *,
        timeout: float = 5.0,
        max_attempts: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._state = state
        # How send_on_schedule waits between pushes; tests may swap it to record the waits.
        self.sleep = sleep
        self._gateway_url = gateway_url.rstrip("/")
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Made on first use: ASGI test transports never run the lifespan that could build it.
        if self._client is None:
            self._client = create_client(
                timeout=self._timeout,
                connect_timeout=min(2.0, self._timeout),
                retries=0,  # WeChat's own retry rule applies, in send()
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def prepare(self, app: WeChatApp, payload: dict[str, Any], mode: PushMode | None = None) -> PreparedPush:
        mode = mode or default_mode(app)
        if mode != "plain" and not app.encoding_aes_key:
            raise ValueError(f"app {app.appid} has no encoding_aes_key: only plain pushes are possible")
        timestamp = str(int(self._state.now()))
        nonce = self._state.ids.nonce()
        params: list[tuple[str, str]] = [
            ("signature", crypto.sign(app.token, timestamp, nonce)),
            ("timestamp", timestamp),
            ("nonce", nonce),
            ("openid", str(payload.get("FromUserName", ""))),
        ]
        plaintext = _render(app, payload)
        if mode == "plain":
            body = plaintext
        else:
            safe_body, msg_signature = crypto.MessageCrypto.for_app(app).encrypt_push(
                plaintext, timestamp, nonce, to_user=str(payload.get("ToUserName", "")), json_body=_is_json(app)
            )
            if mode == "safe":
                body = safe_body
            else:
                # Compatible mode: the plaintext fields and the Encrypt element side by side.
                parsed = codec.parse_json(safe_body) if _is_json(app) else codec.parse_xml(safe_body)
                body = _render(app, {**payload, "Encrypt": parsed["Encrypt"]})
            params += [("encrypt_type", "aes"), ("msg_signature", msg_signature)]
        url = httpx.URL(f"{self._gateway_url}/wechat/callbacks/{app.appid}", params=params)
        content_type = "application/json" if _is_json(app) else "text/xml"
        return PreparedPush(app, payload, mode, url, body, content_type)

    async def send(self, push: PreparedPush, *, retry: bool = False) -> PushOutcome:
        """POST the push; with ``retry``, re-send the same bytes on a timeout or 5xx, as WeChat does."""
        attempts = self._max_attempts if retry else 1
        statuses: list[int | None] = []
        outcome = PushOutcome(status=None, body="", attempts=0, statuses=statuses)
        for _ in range(attempts):
            outcome.attempts += 1
            outcome.status, outcome.body, outcome.error, outcome.reply_error = None, "", None, None
            try:
                response = await self._http().post(
                    push.url, content=push.body, headers={"Content-Type": push.content_type}
                )
            except httpx.TransportError as exc:  # timeouts and connection failures
                statuses.append(None)
                outcome.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                continue
            statuses.append(response.status_code)
            outcome.status = response.status_code
            outcome.body, outcome.reply_error = self._read_reply(push, response)
            outcome.encrypted_reply = _encrypted_reply(response.content) is not None
            if response.status_code < 500:
                break
        self._record(push, outcome)
        return outcome

    async def send_on_schedule(
        self,
        push: PreparedPush,
        *,
        delays: tuple[float, ...] = SHOP_RETRY_DELAYS,
        time_scale: float = 1.0,
    ) -> PushOutcome:
        """WeChat Shop delivery: re-send the same bytes after each wait in ``delays`` (scaled by
        ``time_scale``) until the gateway answers 200 with ``success`` or an empty body in time."""
        statuses: list[int | None] = []
        outcome = PushOutcome(status=None, body="", attempts=0, statuses=statuses)
        offset = 0.0
        for n, wait in enumerate((0.0, *delays), start=1):
            if wait:
                await self.sleep(wait * time_scale)
            offset += wait
            outcome.attempts = n
            entry: dict[str, Any] = {"attempt": n, "offset_s": offset, "status": None, "body": ""}
            entry["acknowledged"] = False
            try:
                response = await self._http().post(
                    push.url, content=push.body, headers={"Content-Type": push.content_type}
                )
            except httpx.TransportError as exc:  # timeouts (the 5 s deadline) and connection failures
                statuses.append(None)
                entry["error"] = outcome.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                outcome.status, outcome.body = None, ""
                outcome.schedule.append(entry)
                continue
            statuses.append(response.status_code)
            outcome.status, outcome.body, outcome.error = response.status_code, response.text, None
            entry["status"], entry["body"] = response.status_code, response.text
            entry["acknowledged"] = response.status_code == 200 and response.text.strip() in ("", "success")
            outcome.schedule.append(entry)
            if entry["acknowledged"]:
                break
        self._record(push, outcome)
        return outcome

    def _read_reply(self, push: PreparedPush, response: httpx.Response) -> tuple[str, str | None]:
        raw = response.content
        text = response.text
        if response.status_code != 200:
            return text, None
        encrypted = _encrypted_reply(raw)
        if encrypted is None:
            if push.mode == "safe" and text.strip() not in ("", "success"):
                return text, "plaintext reply to a safe-mode push (WeChat would reject it)"
            return text, None
        enc, signature, timestamp, nonce = encrypted
        expected = crypto.sign(push.app.token, timestamp, nonce, enc)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return text, "reply MsgSignature does not match"
        try:
            decrypted = crypto.MessageCrypto.for_app(push.app).decrypt(enc)
        except Exception as exc:
            return text, f"reply does not decrypt: {exc}"
        return decrypted.plaintext.decode("utf-8", errors="replace"), None

    def _record(self, push: PreparedPush, outcome: PushOutcome) -> None:
        p = push.payload
        entry = {
            "at": int(self._state.now()),
            "appid": push.app.appid,
            "mode": push.mode,
            "MsgType": p.get("MsgType"),
            "Event": p.get("Event"),
            "EventKey": p.get("EventKey"),
            "FromUserName": p.get("FromUserName"),
            "CreateTime": p.get("CreateTime"),
            "MsgId": _str_or_none(p.get("MsgId", p.get("MsgID"))),
            "status": outcome.status,
            "statuses": list(outcome.statuses),
            "attempts": outcome.attempts,
            # The whole payload, so a test can re-deliver exactly what WeChat would re-deliver.
            "payload": p,
        }
        if outcome.error:
            entry["error"] = outcome.error
        if outcome.reply_error:
            entry["reply_error"] = outcome.reply_error
        self._state.record_push(entry)
        log.info(
            "push_sent",
            appid=push.app.appid,
            msg_type=p.get("MsgType"),
            wechat_event=p.get("Event"),
            status=outcome.status,
            attempts=outcome.attempts,
        )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _encrypted_reply(raw: bytes) -> tuple[str, str, str, str] | None:
    """(Encrypt, MsgSignature, TimeStamp, Nonce) of an encrypted passive reply, XML or JSON."""
    stripped = raw.lstrip()
    try:
        if stripped.startswith(b"<") and b"<Encrypt>" in raw:
            d: dict[str, Any] = codec.parse_xml(raw)
        elif stripped.startswith(b"{"):
            d = codec.parse_json(raw)
            # EasyWeChat's JSON replies use lower-case keys.
            d = {
                "Encrypt": d.get("Encrypt", d.get("encrypt")),
                "MsgSignature": d.get("MsgSignature", d.get("msgsignature")),
                "TimeStamp": d.get("TimeStamp", d.get("timestamp")),
                "Nonce": d.get("Nonce", d.get("nonce")),
            }
        else:
            return None
    except Exception:
        return None
    if not d.get("Encrypt"):
        return None
    return (
        str(d["Encrypt"]),
        str(d.get("MsgSignature") or ""),
        str(d.get("TimeStamp") or ""),
        str(d.get("Nonce") or ""),
    )
