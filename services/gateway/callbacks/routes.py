"""``/wechat/callbacks/{appid}``: the only door WeChat's servers knock on.

For each POST: app (404) → size cap (413) → URL signature and timestamp window (401) → parse,
``msg_signature`` and decrypt (400/401) → typed model → in ONE transaction: the replay store, the
inbound log (unique de-dup key) and the outbox row → ``success`` or a passive reply. Nothing is
written for a 4xx; a push that cannot be stored gets 503 so WeChat retries it.
"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.gateway.bodycap import read_capped
from services.gateway.callbacks.decode import PushQuery, decode_push
from services.gateway.callbacks.replay import check_replay, check_window
from services.gateway.callbacks.reply import passive_reply
from services.gateway.callbacks.shop_sync import needs_answer, shop_sync_answer
from services.gateway.callbacks.store import InboundLog, event_name
from services.gateway.settings import GatewaySettings
from shared.app import Runtime, runtime_of
from shared.errors import NotFound, ServiceUnavailable, SiyuError
from shared.observability import get_logger
from shared.wechat.apps import AppKind, WeChatApp
from shared.wechat.crypto import MalformedPush, verify_signature
from shared.wechat.push import parse_push

log = get_logger(__name__)
router = APIRouter(prefix="/wechat/callbacks", tags=["wechat"])

PUSHES = Counter("siyu_gateway_pushes_total", "WeChat pushes by outcome", ["kind", "outcome"])
UNPARSED = Counter("siyu_gateway_unparsed_pushes_total", "Signed pushes that could not be parsed", ["kind"])


def _settings(rt: Runtime) -> GatewaySettings:
    assert isinstance(rt.settings, GatewaySettings)
    return rt.settings


def _app(rt: Runtime, appid: str) -> WeChatApp:
    app = rt.settings.wechat_apps.get(appid)
    if app is None:
        raise NotFound(f"no WeChat app {appid!r} is configured")
    return app


@router.get("/{appid}", response_class=PlainTextResponse)
async def handshake(appid: str, request: Request) -> Response:
    """URL verification when the callback URL is saved in the WeChat console: echo ``echostr``."""
    app = _app(runtime_of(request), appid)
    query = PushQuery.from_params(dict(request.query_params))
    verify_signature(query.signature, app.token, query.timestamp, query.nonce)
    return PlainTextResponse(request.query_params.get("echostr", ""))


@router.post("/{appid}")
async def receive(appid: str, request: Request) -> Response:
    rt = runtime_of(request)
    settings = _settings(rt)
    app = _app(rt, appid)
    kind = app.kind.event_prefix
    window = settings.shop_push_window_seconds if app.kind is AppKind.SHOP else settings.push_window_seconds
    try:
        query = PushQuery.from_params(dict(request.query_params))
        body = await read_capped(request, settings.max_body_bytes)
        check_window(query.timestamp, window)
        decoded = decode_push(app, query, body, request.headers.get("content-type", ""), settings.max_body_bytes)
    except SiyuError as exc:
        PUSHES.labels(kind, f"rejected_{exc.status}").inc()
        raise
    body_sha256 = hashlib.sha256(body).hexdigest()

    try:
        push = parse_push(decoded.payload, app.kind)
    except MalformedPush as exc:
        # Signed by WeChat but not a shape we understand: keep it for inspection and say success,
        # or WeChat retries it for hours.
        push_id = await _store(
            rt,
            query,
            body_sha256,
            appid=appid,
            app_kind=kind,
            name="unparsed",
            dedup_key=f"{appid}:unparsed:{body_sha256}",
            openid=None,
            create_time=0,
            msg_id=None,
            payload=decoded.payload,
            status="unparsed",
            error=exc.detail,
            raw_body=body,
        )
        UNPARSED.labels(kind).inc()
        PUSHES.labels(kind, "unparsed" if push_id else "duplicate").inc()
        log.warning("push.unparsed", appid=appid, error=exc.detail)
        return PlainTextResponse("success")

    push_id = await _store(
        rt,
        query,
        body_sha256,
        appid=appid,
        app_kind=kind,
        name=event_name(push.name),
        dedup_key=f"{appid}:{push.dedup_key}",
        openid=push.from_user_name or None,
        create_time=push.create_time,
        msg_id=push.msg_id,
        payload=decoded.payload,
    )
    PUSHES.labels(kind, "stored" if push_id else "duplicate").inc()
    log.info("push.stored" if push_id else "push.duplicate", appid=appid, name=push.name, push_id=push_id)
    if needs_answer(push):
        # Answered even for a duplicate: WeChat retried because it did not get the answer.
        answer = await shop_sync_answer(rt, app, push, decoded)
        return Response(answer, media_type="application/json; charset=utf-8")
    if push_id is not None:
        reply = await passive_reply(rt, app, push, push_id, decoded)
        if reply is not None:
            return Response(reply, media_type="application/xml; charset=utf-8")
    return PlainTextResponse("success")


async def _store(rt: Runtime, query: PushQuery, body_sha256: str, **fields: object) -> int | None:
    """Replay check, inbound log and outbox in one transaction; the push id, or None for a duplicate."""
    try:
        async with rt.sessions() as session, session.begin():
            await check_replay(session, str(fields["appid"]), query.timestamp, query.nonce, body_sha256)
            return await InboundLog(session, rt.outbox).record(**fields)  # type: ignore[arg-type]
    except (DBAPIError, StatementError, PoolTimeout, OSError) as exc:
        # Not stored, so not acknowledged: WeChat will retry.
        log.error("push.store_failed", error=repr(exc))
        raise ServiceUnavailable(
            "the push could not be stored; WeChat will retry", headers={"Retry-After": "1"}
        ) from exc
