"""``/wechat/callbacks/{appid}``: the only door WeChat's servers knock on."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.gateway.callbacks.decode import PushQuery, decode_push
from services.gateway.callbacks.store import InboundLog, event_name
from services.gateway.settings import gateway_settings
from shared.app import runtime_of
from shared.errors import NotFound, PayloadTooLarge, ServiceUnavailable
from shared.observability import get_logger
from shared.wechat.apps import WeChatApp
from shared.wechat.crypto import MalformedPush, verify_signature
from shared.wechat.push import parse_push

log = get_logger(__name__)
router = APIRouter(prefix="/wechat/callbacks", tags=["wechat"])

PUSHES = Counter("siyu_gateway_pushes_total", "WeChat pushes by outcome", ["kind", "outcome"])

SUCCESS = PlainTextResponse("success")


def _app(request: Request, appid: str) -> WeChatApp:
    app = runtime_of(request).settings.wechat_apps.get(appid)
    if app is None:
        raise NotFound(f"no WeChat app {appid!r} is configured")
    return app


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.get("/{appid}", response_class=PlainTextResponse)
async def handshake(appid: str, request: Request) -> Response:
    """URL verification when the callback URL is saved in the WeChat console: echo ``echostr``."""
    app = _app(request, appid)
    query = PushQuery.from_params(dict(request.query_params))
    verify_signature(query.signature, app.token, query.timestamp, query.nonce)
    return PlainTextResponse(request.query_params.get("echostr", ""))


@router.post("/{appid}")
async def receive(appid: str, request: Request) -> Response:
    rt = runtime_of(request)
    app = _app(request, appid)
    kind = app.kind.event_prefix
    limit = gateway_settings(rt.settings).max_body_bytes
    try:
        query = PushQuery.from_params(dict(request.query_params))
        body = await _read_capped(request, limit)
        decoded = decode_push(app, query, body, request.headers.get("content-type", ""), limit)
    except Exception:
        PUSHES.labels(kind, "rejected").inc()
        raise

    try:
        push = parse_push(decoded.payload, app.kind)
    except MalformedPush as exc:
        # Signed by WeChat but not a shape we understand: keep it for inspection and say success,
        # or WeChat retries it for hours.
        digest = hashlib.sha256(body).hexdigest()
        stored = await _store(
            request,
            appid=appid,
            app_kind=kind,
            name="unparsed",
            dedup_key=f"{appid}:unparsed:{digest}",
            openid=None,
            create_time=0,
            msg_id=None,
            payload=decoded.payload,
            status="unparsed",
            error=exc.detail,
            raw_body=body,
        )
        PUSHES.labels(kind, "unparsed" if stored else "duplicate").inc()
        log.warning("push.unparsed", appid=appid, error=exc.detail)
        return SUCCESS

    stored = await _store(
        request,
        appid=appid,
        app_kind=kind,
        name=event_name(push.name),
        dedup_key=f"{appid}:{push.dedup_key}",
        openid=push.from_user_name or None,
        create_time=push.create_time,
        msg_id=push.msg_id,
        payload=decoded.payload,
    )
    PUSHES.labels(kind, "stored" if stored else "duplicate").inc()
    log.info("push.stored" if stored else "push.duplicate", appid=appid, name=push.name)
    return SUCCESS


async def _store(request: Request, **fields: object) -> bool:
    rt = runtime_of(request)
    try:
        async with rt.sessions() as session, session.begin():
            return await InboundLog(session, rt.outbox).record(**fields)  # type: ignore[arg-type]
    except (DBAPIError, PoolTimeout, OSError) as exc:
        # Not stored, so not acknowledged: WeChat will retry.
        raise ServiceUnavailable("the push could not be stored; WeChat will retry") from exc
