"""The push path's rules: from a signed request to a stored push and its event.

Order matters: the app is looked up first (404), the size is capped before anything is parsed
(413), the URL signature and the timestamp window are checked before the body is touched (401),
and only then is the body parsed and, in safe or compatible mode, ``msg_signature`` checked over
``Encrypt`` and decrypted (400/401). Nothing is written before all of that passed; then ONE
statement stores the replay-store claim, the inbound-log row and the outbox row (a forged replay
of a used signature writes nothing and is a 401; a push already stored is a duplicate), and a
push that cannot be stored is a 503, so WeChat retries it.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from services.gateway.pushes.repository import PushIds, PushWriter, prune_nonces, prune_pushes
from services.gateway.pushes.schemas import DecodedPush, PushQuery, PushRecord
from services.gateway.settings import GatewaySettings
from shared.bus.outbox import Outbox
from shared.db import Database
from shared.errors import ServiceUnavailable
from shared.events import WeChatPushReceived
from shared.observability import get_logger
from shared.periodic import run_every
from shared.wechat.apps import AppKind, WeChatApp
from shared.wechat.codec import is_json_document, parse_json, parse_xml
from shared.wechat.crypto import InvalidSignature, MalformedPush, MessageCrypto, verify_signature
from shared.wechat.push import Push, parse_push

if TYPE_CHECKING:
    from services.gateway.deps import GatewayDeps

log = get_logger(__name__)

_NAME_UNSAFE = re.compile(r"[^a-z0-9_]+")
MAX_KEY = 200  # fits the column with room; longer keys (a VIEW event's long URL) are hashed


def storage_key(dedup_key: str) -> str:
    """The de-dup key as stored: itself when short, else a digest (still unique, still exact)."""
    if len(dedup_key) <= MAX_KEY:
        return dedup_key
    return "sha256:" + hashlib.sha256(dedup_key.encode()).hexdigest()


def event_name(raw: str) -> str:
    """A routing-key-safe name: lower case, ``[a-z0-9_]`` only (unknown types are kept, not rejected)."""
    return (_NAME_UNSAFE.sub("_", raw.lower()).strip("_") or "unknown")[:80]


def check_window(timestamp: str, window_seconds: int, now: float | None = None) -> None:
    """Reject a push signed too long ago or too far ahead (clock skew counts both ways)."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise InvalidSignature("timestamp is not a unix time")
    skew = abs((now or time.time()) - int(timestamp))
    if skew > window_seconds:
        raise InvalidSignature(f"timestamp outside the {window_seconds} s window (replayed or clock skew)")


def _is_json(app: WeChatApp, content_type: str, body: bytes) -> bool:
    if app.kind is AppKind.SHOP or app.push_format == "json":
        return True
    if "json" in content_type:
        return True
    return is_json_document(body)


def decode_push(
    app: WeChatApp, crypto: MessageCrypto | None, query: PushQuery, body: bytes, content_type: str, max_bytes: int
) -> DecodedPush:
    """Verify the URL signature, parse the body and, when encrypted, check ``msg_signature`` and decrypt."""
    verify_signature(query.signature, app.token, query.timestamp, query.nonce)
    json_body = _is_json(app, content_type, body)
    outer = parse_json(body, max_bytes=max_bytes) if json_body else parse_xml(body, max_bytes=max_bytes)
    if not query.encrypted:
        if app.kind is AppKind.SHOP:
            raise MalformedPush("WeChat Shop pushes only in safe mode: encrypt_type=aes is required")
        return DecodedPush(outer, encrypted=False, json_body=json_body, key_index=0)
    encrypt = outer.get("Encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise MalformedPush("encrypt_type=aes but the body has no Encrypt field")
    if not query.msg_signature:
        raise InvalidSignature("encrypted push without msg_signature")
    if crypto is None:
        raise MalformedPush("this app has no EncodingAESKey: it takes plaintext pushes only")
    crypto.check_msg_signature(query.msg_signature, query.timestamp, query.nonce, encrypt)
    decrypted = crypto.decrypt(encrypt)
    inner_json = json_body and is_json_document(decrypted.plaintext)
    payload = (
        parse_json(decrypted.plaintext, max_bytes=max_bytes)
        if inner_json
        else parse_xml(decrypted.plaintext, max_bytes=max_bytes)
    )
    return DecodedPush(payload, encrypted=True, json_body=json_body, key_index=decrypted.key_index)


@dataclass(frozen=True)
class Accepted:
    """A push durably stored, or recognised as stored before (``fresh`` False)."""

    push: Push | None  # None: signed by WeChat but not a shape we understand (stored as unparsed)
    push_id: int
    fresh: bool
    error: str | None = None


class PushService:
    def __init__(self, writer: PushWriter, ids: PushIds, outbox: Outbox) -> None:
        self.writer = writer
        self.ids = ids
        self.outbox = outbox

    async def accept(self, app: WeChatApp, query: PushQuery, body: bytes, decoded: DecodedPush) -> Accepted:
        body_sha256 = hashlib.sha256(body).hexdigest()
        kind = app.kind.event_prefix
        push_id = await self._take_id()
        push: Push | None
        error: str | None
        raw_body: bytes | None
        try:
            push = parse_push(decoded.payload, app.kind)
        except MalformedPush as exc:
            # Signed by WeChat but not a shape we understand: keep it for inspection and say
            # success, or WeChat retries it for hours. Nothing is published.
            push, error, event = None, exc.detail, None
            stored_key, event_type, status, raw_body = (
                f"{app.appid}:unparsed:{body_sha256}",
                f"wechat.{kind}.unparsed",
                "unparsed",
                body,
            )
        else:
            error = None
            dedup_key = f"{app.appid}:{push.dedup_key}"
            event_type = f"wechat.{kind}.{event_name(push.name)}"
            event = self.outbox.prepare(
                WeChatPushReceived(
                    appid=app.appid,
                    app_kind=kind,
                    name=event_name(push.name),
                    openid=push.from_user_name or None,
                    create_time=push.create_time,
                    msg_id=push.msg_id,
                    dedup_key=dedup_key,
                    push_id=push_id,
                    payload=decoded.payload,
                ),
                event_type=event_type,
            )
            stored_key, status, raw_body = storage_key(dedup_key), "accepted", None
        record = PushRecord(
            appid=app.appid,
            nonce=query.nonce[:64],
            timestamp=query.timestamp,
            body_sha256=body_sha256,
            push_id=push_id,
            dedup_key=stored_key,
            event_type=event_type,
            status=status,
            payload=decoded.payload,
            raw_body=raw_body,
            error=error,
            event=event,
        )
        try:
            stored = await self.writer.store(record)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise _not_stored(exc) from exc
        if not stored.genuine:
            raise InvalidSignature("this signature was already used for a different body (forged or replayed push)")
        return Accepted(push, push_id, stored.fresh, error)

    async def _take_id(self) -> int:
        try:
            return await self.ids.take()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise _not_stored(exc) from exc


def _not_stored(exc: BaseException) -> ServiceUnavailable:
    # Not stored, so not acknowledged: WeChat will retry.
    log.error("push.store_failed", error=repr(exc))
    return ServiceUnavailable("the push could not be stored; WeChat will retry", headers={"Retry-After": "1"})


async def prune_push_log(db: Database, settings: GatewaySettings, now: datetime | None = None) -> dict[str, int]:
    """Keep the replay store and the inbound log bounded.

    Horizons: a nonce only matters inside its timestamp window (a push signed outside it is refused
    before the store), so nonces are kept twice the longest window (the shop's 4 h: 8 h). The
    inbound log holds the de-dup keys, which must outlive every WeChat retry (the shop retries for
    ~3.6 h): ``GATEWAY_PUSH_RETENTION_HOURS`` (72 h) leaves days for inspection on top.
    """
    now = now or datetime.now(UTC)
    window = 2 * max(settings.push_window_seconds, settings.shop_push_window_seconds)
    nonces = await prune_nonces(db, now - timedelta(seconds=window))
    pushes = await prune_pushes(db, now - timedelta(hours=settings.push_retention_hours))
    return {"nonces": nonces, "pushes": pushes}


JANITOR_INTERVAL_SECONDS = 600


async def push_log_janitor(deps: GatewayDeps) -> None:
    await run_every(JANITOR_INTERVAL_SECONDS, lambda: prune_push_log(deps.db, deps.settings), "janitor.push_log_pruned")
