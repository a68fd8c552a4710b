"""``/wechat/callbacks/{appid}``: the only door WeChat's servers knock on.

For each POST: app (404) → size cap (413) → URL signature and timestamp window (401) → parse,
``msg_signature`` and decrypt (400/401) → typed model → ONE statement: the replay store, the
inbound log (unique de-dup key) and the outbox row → ``success``, a shop callback's answer or a
passive reply. Nothing is written for a 4xx; a push that cannot be stored gets 503 so WeChat
retries it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import Counter

from services.gateway.deps import Deps, GatewayDeps, read_capped
from services.gateway.pushes.schemas import PushQuery
from services.gateway.pushes.service import PushService, check_window, decode_push
from services.gateway.replies.service import ReplyService, render_reply
from services.gateway.shop.service import ShopCallbacks, needs_answer
from shared.errors import SiyuError
from shared.observability import get_logger
from shared.wechat.apps import AppKind
from shared.wechat.crypto import verify_signature

log = get_logger(__name__)
router = APIRouter(prefix="/wechat/callbacks", tags=["wechat"])

PUSHES = Counter("siyu_gateway_pushes_total", "WeChat pushes by outcome", ["kind", "outcome"])
UNPARSED = Counter("siyu_gateway_unparsed_pushes_total", "Signed pushes that could not be parsed", ["kind"])

SUCCESS = b"success"


@router.get("/{appid}", response_class=PlainTextResponse)
async def handshake(appid: str, request: Request, deps: Deps) -> Response:
    """URL verification when the callback URL is saved in the WeChat console: echo ``echostr``."""
    app = deps.app(appid)
    query = PushQuery.from_params(request.query_params)
    verify_signature(query.signature, app.token, query.timestamp, query.nonce)
    return PlainTextResponse(request.query_params.get("echostr", ""))


@router.post(
    "/{appid}",
    summary="A push from WeChat",
    responses={200: {"description": "`success`, a passive reply (XML) or a shop callback's answer (JSON)"}},
)
async def receive(request: Request) -> Response:
    """The push path's hot route: it takes only the request (no dependencies to resolve per push)."""
    appid: str = request.path_params["appid"]
    deps: GatewayDeps = request.app.state.deps
    settings = deps.settings
    app = deps.app(appid)
    kind = app.kind.event_prefix
    crypto = deps.crypto.get(appid)
    window = settings.shop_push_window_seconds if app.kind is AppKind.SHOP else settings.push_window_seconds
    try:
        query = PushQuery.from_params(request.query_params)
        body = await read_capped(request, settings.max_body_bytes)
        check_window(query.timestamp, window)
        content_type = request.headers.get("content-type", "")
        decoded = decode_push(app, crypto, query, body, content_type, settings.max_body_bytes)
        accepted = await PushService(deps.push_writer, deps.push_ids, deps.db.outbox).accept(app, query, body, decoded)
    except SiyuError as exc:
        PUSHES.labels(kind, f"rejected_{exc.status}").inc()
        raise
    push = accepted.push
    if push is None:
        UNPARSED.labels(kind).inc()
        PUSHES.labels(kind, "unparsed" if accepted.fresh else "duplicate").inc()
        log.warning("push.unparsed", appid=appid, error=accepted.error)
        return Response(SUCCESS, media_type="text/plain; charset=utf-8")
    PUSHES.labels(kind, "stored" if accepted.fresh else "duplicate").inc()
    if needs_answer(push):
        # Answered even for a duplicate: WeChat retried because it did not get the answer.
        answer = await ShopCallbacks(deps.upstreams, budget=settings.reply_budget_seconds).answer(
            app, push, decoded.payload, crypto, encrypted=decoded.encrypted, key_index=decoded.key_index
        )
        return Response(answer, media_type="application/json; charset=utf-8")
    # Only service accounts take passive text replies; mini-program customer service answers by API.
    if accepted.fresh and app.kind is AppKind.OFFICIAL_ACCOUNT and not decoded.json_body:
        replies = ReplyService(deps.reply_rules, deps.upstreams, deps.db, budget=settings.reply_budget_seconds)
        content = await replies.reply_for(appid, push, accepted.push_id)
        if content:
            xml = render_reply(push, content, crypto, encrypted=decoded.encrypted, key_index=decoded.key_index)
            return Response(xml, media_type="application/xml; charset=utf-8")
    return Response(SUCCESS, media_type="text/plain; charset=utf-8")
