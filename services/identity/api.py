"""Identity's internal HTTP API.

Every route needs the internal service credential (``X-Siyu-Internal-Token``). Identity trusts its
caller for *which* member is asked about: scoping a member to their own data is the gateway's job
(it only ever passes the member id from the caller's session token). See README.md.
"""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.identity.crypto import session_key_binding
from services.identity.handlers import IdentityDeps
from services.identity.repository import MemberRepository
from services.identity.schedule import TAG_SYNC_LOCK
from services.identity.service import IdentityService, PhoneNumber, utcnow
from services.identity.tagging import Tagging
from services.identity.wechat_sync import MenuPlan, WeChatSync
from shared.app import InternalOnly, SessionDep, runtime_of
from shared.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    SiyuError,
    Unauthorized,
    Unprocessable,
    UpstreamError,
)
from shared.wechat.apps import AppKind
from shared.wechat.errors import (
    CodeBlocked,
    CodeUsed,
    InvalidAccessToken,
    InvalidCode,
    MinuteQuotaExceeded,
    SystemBusy,
    WeChatAPIError,
    WeChatUnavailable,
)

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])

APPID = r"^wx[0-9A-Za-z]{14,30}$"
# wx.login and getPhoneNumber codes: opaque tokens of letters, digits, - and _.
WX_CODE = r"^[A-Za-z0-9_\-]{1,256}$"
OPENID = r"^[A-Za-z0-9_\-]{1,64}$"
OBJECT_ID = r"^[A-Za-z0-9_.:\-]{1,64}$"
MAX_EVENTS_PER_CALL = 50
EVENT_MAX_AGE = timedelta(days=30)
EVENT_MAX_SKEW = timedelta(minutes=5)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ----------------------------------------------------------------------------------------


class InvalidWeChatCode(Unauthorized):
    type_slug = "invalid-code"
    title = "Invalid, expired or used WeChat code"


class LoginBlocked(Forbidden):
    type_slug = "login-blocked"
    title = "WeChat blocked this login"


class WeChatBusy(ServiceUnavailable):
    type_slug = "wechat-busy"
    title = "WeChat is busy; retry later"


class UnknownApp(Unprocessable):
    type_slug = "unknown-app"
    title = "Not one of the brand's apps of that kind"


def wechat_failure(exc: WeChatAPIError | WeChatUnavailable) -> SiyuError:
    """What a WeChat failure during a code exchange means for identity's caller."""
    if isinstance(exc, InvalidCode | CodeUsed):
        return InvalidWeChatCode("the code is invalid, expired or already used; get a new one", errcode=exc.errcode)
    if isinstance(exc, CodeBlocked):
        return LoginBlocked("WeChat intercepted this login (high-risk user)", errcode=exc.errcode)
    if isinstance(exc, MinuteQuotaExceeded):
        return WeChatBusy("WeChat's per-minute quota is reached", headers={"Retry-After": "60"}, errcode=exc.errcode)
    if isinstance(exc, SystemBusy | InvalidAccessToken | WeChatUnavailable):
        extra = {"errcode": exc.errcode} if isinstance(exc, WeChatAPIError) else {}
        return WeChatBusy("WeChat did not answer; retry shortly", headers={"Retry-After": "2"}, **extra)
    return exc


def mini_program(request: Request, appid: str) -> None:
    app = runtime_of(request).settings.wechat_apps.get(appid)
    if app is None or app.kind is not AppKind.MINI_PROGRAM:
        raise UnknownApp(f"{appid} is not a mini-program of this brand")


def deps_of(request: Request) -> IdentityDeps:
    deps: IdentityDeps = runtime_of(request).deps
    return deps


async def publish_all(request: Request, session: SessionDep, service: IdentityService) -> int:
    """Hand the service's events to the outbox, in this request's transaction; how many."""
    outbox = runtime_of(request).outbox
    events = service.drain_events()
    for event in events:
        await outbox.add(session, event)
    return len(events)


def service_for(session: SessionDep) -> IdentityService:
    return IdentityService(MemberRepository(session))


# --- login ------------------------------------------------------------------------------------------


class LoginRequest(_Body):
    appid: str = Field(pattern=APPID)
    code: str = Field(pattern=WX_CODE)


class LoginResponse(BaseModel):
    member_id: str
    openid: str
    unionid_known: bool
    created: bool


@router.post("/logins", response_model=LoginResponse)
async def login(body: LoginRequest, request: Request, session: SessionDep) -> LoginResponse:
    """Exchange a mini-program ``wx.login`` code: resolve or create the member.

    The ``session_key`` is stored encrypted and never returned. 401 ``invalid-code`` for a bad,
    expired or reused code (40029/40163), 403 for a login WeChat blocked (40226), 503 with
    ``Retry-After`` when WeChat is busy (-1, 45011).
    """
    mini_program(request, body.appid)
    deps = deps_of(request)
    # WeChat first: no database connection is held while it answers.
    try:
        answer = await deps.wechat.jscode2session(body.appid, body.code)
    except (WeChatAPIError, WeChatUnavailable) as exc:
        raise wechat_failure(exc) from None
    now = utcnow()
    service = service_for(session)
    resolution = await service.resolve_or_create(
        appid=body.appid,
        app_kind=AppKind.MINI_PROGRAM.value,
        openid=answer.openid,
        unionid=answer.unionid,
        source="mp_login",
        at=now,
    )
    identity = resolution.identity
    identity.session_key_enc = deps.vault.seal(
        answer.session_key, bound_to=session_key_binding(body.appid, answer.openid)
    )
    identity.session_key_at = now
    await service.touch_activity(resolution.member, now)
    await publish_all(request, session, service)
    return LoginResponse(
        member_id=str(resolution.member.id),
        openid=answer.openid,
        unionid_known=resolution.member.unionid is not None,
        created=resolution.created,
    )


# --- members ----------------------------------------------------------------------------------------


@router.get("/members/{member_id}")
async def get_member(member_id: uuid.UUID, session: SessionDep) -> dict[str, object]:
    """A member's view; an id that was merged away answers with its survivor (``resolved_from`` set)."""
    service = service_for(session)
    await service.repo.snapshot()
    return await service.member_view(member_id)


class PhoneRequest(_Body):
    appid: str = Field(pattern=APPID)
    code: str = Field(pattern=WX_CODE)


class PhoneResponse(BaseModel):
    phone_masked: str
    country_code: str
    bound: bool


@router.post("/members/{member_id}/phone", response_model=PhoneResponse)
async def bind_phone(member_id: uuid.UUID, body: PhoneRequest, request: Request, session: SessionDep) -> PhoneResponse:
    """Bind the phone number behind a ``getPhoneNumber`` code. 409 ``phone-taken`` when another member
    holds it (never a silent merge); 401 ``invalid-code`` for a bad code."""
    mini_program(request, body.appid)
    try:
        info = await deps_of(request).wechat.get_phone_number(body.appid, body.code)
    except (WeChatAPIError, WeChatUnavailable) as exc:
        raise wechat_failure(exc) from None
    if info.watermark is not None and info.watermark.appid != body.appid:
        raise UpstreamError("WeChat returned a phone number issued to another app")
    try:
        number = PhoneNumber.parse(info.country_code, info.pure_phone_number)
    except ValueError as exc:
        raise UpstreamError(f"WeChat returned an unusable phone number: {exc}") from None
    service = service_for(session)
    await service.bind_phone(member_id, appid=body.appid, number=number)
    await publish_all(request, session, service)
    return PhoneResponse(phone_masked=number.masked, country_code=number.country_code, bound=True)


class BehaviourEventIn(_Body):
    type: Literal["product_view", "add_to_cart", "share", "article_read"]
    object_id: str = Field(pattern=OBJECT_ID)
    occurred_at: AwareDatetime
    appid: str | None = Field(default=None, pattern=APPID)
    props: dict[str, str | int | bool] = Field(default_factory=dict, max_length=10)

    @field_validator("props")
    @classmethod
    def _bounded_props(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for key, value in v.items():
            if not (1 <= len(key) <= 32) or not key.replace("_", "").isalnum():
                raise ValueError("a props key is 1-32 letters, digits or _")
            if isinstance(value, str) and len(value) > 256:
                raise ValueError("a props value has at most 256 characters")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                raise ValueError("a props number must fit in 53 bits")
        return v


class BehaviourBatch(_Body):
    events: list[BehaviourEventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_CALL)


@router.post("/members/{member_id}/events", status_code=status.HTTP_202_ACCEPTED)
async def record_events(
    member_id: uuid.UUID, body: BehaviourBatch, request: Request, session: SessionDep
) -> dict[str, Any]:
    """Behaviour events from the mini-program (≤50 a call). A batch with any invalid event is
    refused whole (422) and nothing is written; a retried batch is recognised event by event."""
    now = utcnow()
    for i, e in enumerate(body.events):
        if e.occurred_at > now + EVENT_MAX_SKEW or e.occurred_at < now - EVENT_MAX_AGE:
            raise Unprocessable(
                "occurred_at must lie within the last 30 days (and not in the future)",
                errors=[{"loc": ["body", "events", i, "occurred_at"], "msg": "out of range"}],
            )
    if body.events and any(e.appid for e in body.events):
        for e in body.events:
            if e.appid:
                mini_program(request, e.appid)
    service = service_for(session)
    rows = [
        {
            "type": e.type,
            "object_id": e.object_id,
            "occurred_at": e.occurred_at.astimezone(UTC),
            "appid": e.appid,
            "props": e.props,
        }
        for e in body.events
    ]
    member, fresh = await service.record_behaviour(member_id, rows)
    await publish_all(request, session, service)
    return {"member_id": str(member.id), "accepted": fresh, "duplicates": len(rows) - fresh}


class TagChange(_Body):
    add: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=20)
    remove: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=20)
    operator: str = Field(min_length=1, max_length=64)


@router.post("/members/{member_id}/tags")
async def change_tags(member_id: uuid.UUID, body: TagChange, request: Request, session: SessionDep) -> dict[str, Any]:
    """Operator tags on one member (rule tags are computed and refused here)."""
    service = service_for(session)
    member = await service.set_tags(member_id, add=body.add, remove=body.remove, operator=body.operator)
    await publish_all(request, session, service)
    tags = await service.repo.member_tags(member.id)
    return {"member_id": str(member.id), "tags": [t.name for _, t in tags]}


@router.get("/members/{member_id}/merges")
async def member_merges(member_id: uuid.UUID, session: SessionDep) -> list[dict[str, Any]]:
    """The merge log entries this member took part in, as survivor or as merged."""
    repo = MemberRepository(session)
    if await repo.member(member_id) is None:
        raise NotFound("no such member")
    return [merge_view(m) for m in await repo.merges_of(member_id)]


class MembersPage(BaseModel):
    members: list[dict[str, Any]]
    next_after: str | None


@router.get("/members", response_model=MembersPage)
async def list_members(
    session: SessionDep,
    tag: Annotated[str | None, Query(max_length=32)] = None,
    segment: Annotated[str | None, Query(max_length=64)] = None,
    after: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MembersPage:
    """Members with a tag, or in a segment, page by page (``after`` = the previous page's ``next_after``)."""
    repo = MemberRepository(session)
    ids = await Tagging(repo).members_page(tag=tag, segment=segment, after=after, limit=limit)
    identities = await repo.identities_of_many(ids)
    following = await repo.following_of_many(ids)
    tags = await repo.tag_names_of_many(ids)
    members = []
    for member_id in ids:
        members.append(
            {
                "member_id": str(member_id),
                "tags": tags.get(member_id, []),
                "identities": [
                    {"appid": i.appid, "app_kind": i.app_kind, "openid": i.openid}
                    for i in identities
                    if i.member_id == member_id
                ],
                "following": sorted(f.appid for f in following if f.member_id == member_id),
            }
        )
    return MembersPage(members=members, next_after=str(ids[-1]) if len(ids) == limit else None)


# --- resolve ----------------------------------------------------------------------------------------


class ResolveRequest(_Body):
    appid: str = Field(max_length=32)
    openid: str = Field(max_length=64)


@router.post("/resolve")
async def resolve(body: ResolveRequest, session: SessionDep) -> dict[str, object]:
    """The member behind an (appid, openid), without creating one."""
    repo = MemberRepository(session)
    await repo.snapshot()
    identity = await repo.identity(body.appid, body.openid)
    if identity is None:
        raise NotFound("no member is known for this appid and openid")
    return await IdentityService(repo).member_view(identity.member_id)


class IdentityRequest(_Body):
    appid: str = Field(pattern=APPID)
    openid: str = Field(pattern=OPENID)
    unionid: str | None = Field(default=None, pattern=OPENID)
    source: Literal["shop_order", "gift_recipient", "gift_giver", "mp_login", "oa_subscribe", "oauth"]


@router.post("/identities")
async def resolve_or_create(body: IdentityRequest, request: Request, session: SessionDep) -> dict[str, Any]:
    """Resolve-or-create for identities other services meet (a shop order's buyer, a gift's
    giver and recipient): attaches the unionid when given, merging if another member holds it.
    Idempotent."""
    app = runtime_of(request).settings.wechat_apps.get(body.appid)
    if app is None:
        raise UnknownApp(f"{body.appid} is not one of this brand's apps")
    service = service_for(session)
    resolution = await service.resolve_or_create(
        appid=body.appid, app_kind=app.kind.value, openid=body.openid, unionid=body.unionid, source=body.source
    )
    await publish_all(request, session, service)
    return {
        "member_id": str(resolution.member.id),
        "created": resolution.created,
        "unionid_known": resolution.member.unionid is not None,
        "merged": [str(m.merged_id) for m in resolution.merges],
    }


# --- merges -----------------------------------------------------------------------------------------


def merge_view(m: Any) -> dict[str, Any]:
    return {
        "merge_id": str(m.id),
        "survivor_id": str(m.survivor_id),
        "merged_id": str(m.merged_id),
        "reason": m.reason,
        "detail": m.detail,
        "unionid_known": m.unionid is not None,
        "source_event_id": str(m.source_event_id) if m.source_event_id else None,
        "moved": {
            "identities": len(m.moved.get("identities", [])),
            "follows": len(m.moved.get("follows", [])),
            "tags_gained": len(m.moved.get("tags_gained", [])),
            "phones": len(m.moved.get("phones", [])),
        },
        "created_at": m.created_at,
        "undone_at": m.undone_at,
        "undo_reason": m.undo_reason,
    }


class MergeRequest(_Body):
    member_ids: list[uuid.UUID] = Field(min_length=2, max_length=2)
    reason: Literal["operator", "phone"] = "operator"
    detail: str = Field(min_length=1, max_length=500)


@router.post("/merges", status_code=status.HTTP_201_CREATED)
async def merge_members(body: MergeRequest, request: Request, session: SessionDep) -> dict[str, Any]:
    """Operator merge of two members (e.g. a phone conflict confirmed to be one person)."""
    service = service_for(session)
    record = await service.merge_members(body.member_ids[0], body.member_ids[1], reason=body.reason, detail=body.detail)
    await publish_all(request, session, service)
    return merge_view(record)


class UndoRequest(_Body):
    reason: str = Field(min_length=1, max_length=500)


@router.post("/merges/{merge_id}/undo")
async def undo_merge(merge_id: uuid.UUID, body: UndoRequest, request: Request, session: SessionDep) -> dict[str, Any]:
    """Undo a wrong merge: the merged member gets back what moved; the pair is never auto-merged again."""
    service = service_for(session)
    record = await service.undo_merge(merge_id, reason=body.reason)
    await publish_all(request, session, service)
    return merge_view(record)


# --- tags and segments ------------------------------------------------------------------------------


def tag_view(t: Any) -> dict[str, Any]:
    return {
        "name": t.name,
        "kind": t.kind,
        "description": t.description,
        "wechat_sync": t.wechat_sync,
        "priority": t.priority,
    }


@router.get("/tags")
async def list_tags(session: SessionDep) -> list[dict[str, Any]]:
    repo = MemberRepository(session)
    await Tagging(repo).ensure_rule_tags()
    return [tag_view(t) for t in await repo.all_tags()]


class NewTag(_Body):
    name: str = Field(min_length=1, max_length=32)
    description: str = Field(default="", max_length=200)
    wechat_sync: bool = False
    priority: int = Field(default=100, ge=0, le=1000)


@router.post("/tags", status_code=status.HTTP_201_CREATED)
async def create_tag(body: NewTag, session: SessionDep) -> dict[str, Any]:
    tag = await Tagging(MemberRepository(session)).create_tag(
        body.name, description=body.description, wechat_sync=body.wechat_sync, priority=body.priority
    )
    return tag_view(tag)


class NewSegment(_Body):
    name: str = Field(pattern=r"^[\w\-]{1,64}$")
    description: str = Field(default="", max_length=200)
    all_tags: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=10)
    any_tags: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=10)
    none_tags: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=10)


def segment_view(s: Any) -> dict[str, Any]:
    return {
        "name": s.name,
        "description": s.description,
        "all_tags": s.all_tags,
        "any_tags": s.any_tags,
        "none_tags": s.none_tags,
    }


@router.post("/segments", status_code=status.HTTP_201_CREATED)
async def create_segment(body: NewSegment, session: SessionDep) -> dict[str, Any]:
    segment = await Tagging(MemberRepository(session)).create_segment(
        body.name,
        description=body.description,
        all_tags=body.all_tags,
        any_tags=body.any_tags,
        none_tags=body.none_tags,
    )
    return segment_view(segment)


@router.get("/segments")
async def list_segments(session: SessionDep) -> list[dict[str, Any]]:
    return [segment_view(s) for s in await MemberRepository(session).segments()]


class RulesRefresh(_Body):
    after: uuid.UUID | None = None
    limit: int = Field(default=500, ge=1, le=5000)


@router.post("/rules/refresh")
async def refresh_rules(body: RulesRefresh, request: Request, session: SessionDep) -> dict[str, Any]:
    """Re-evaluate rule tags for a page of members (time-based rules: new_member, lapsed).

    Meant for a scheduler: call with ``after`` = the previous ``next_after`` until it is null.
    """
    service = service_for(session)
    ids = await service.repo.members_for_rule_refresh(after=body.after, limit=body.limit)
    for member_id in ids:
        await service.refresh_rules(member_id)
    changed = await publish_all(request, session, service)
    return {"refreshed": len(ids), "changed": changed, "next_after": str(ids[-1]) if len(ids) == body.limit else None}


# --- WeChat user tags and conditional menus ------------------------------------------------------------


class TagSyncRequest(_Body):
    appid: str = Field(pattern=APPID)


def official_account(request: Request, appid: str) -> None:
    app = runtime_of(request).settings.wechat_apps.get(appid)
    if app is None or app.kind is not AppKind.OFFICIAL_ACCOUNT:
        raise UnknownApp(f"{appid} is not a service account of this brand")


@router.post("/wechat/tag-sync")
async def sync_wechat_tags(body: TagSyncRequest, request: Request, session: SessionDep) -> dict[str, Any]:
    """Mirror synced tags onto the service account's WeChat user tags (within WeChat's limits)."""
    official_account(request, body.appid)
    # The same lock as the scheduled sync: two syncs at once would race on WeChat's tag ids.
    repo = MemberRepository(session)
    if not await repo.try_lock(TAG_SYNC_LOCK):
        raise Conflict("a WeChat tag sync is already running; try again when it has finished")
    return await WeChatSync(repo, deps_of(request).wechat).sync_tags(body.appid)


class MenuRequest(_Body):
    appid: str = Field(pattern=APPID)
    plan: MenuPlan | None = None


@router.post("/wechat/menus")
async def publish_menus(body: MenuRequest, request: Request, session: SessionDep) -> dict[str, Any]:
    """Publish the default menu and one conditional menu per tag (新人福利 / 会员专享 / 积分兑换 by default)."""
    official_account(request, body.appid)
    apps = runtime_of(request).settings.wechat_apps
    mp = apps.of_kind(AppKind.MINI_PROGRAM)
    plan = body.plan or MenuPlan.standard(mp[0].appid if mp else None)
    return await WeChatSync(MemberRepository(session), deps_of(request).wechat).publish_menus(body.appid, plan)


# --- WeChat Shop membership linking (小程序会员服务), answered synchronously through the gateway ---------


class ShopCallback(_Body):
    appid: str = Field(pattern=APPID)
    openid: str = Field(pattern=OPENID)
    payload: dict[str, Any]


@router.post("/shop/vip-user-info")
async def shop_vip_user_info(body: ShopCallback, session: SessionDep) -> dict[str, Any]:
    """``channels_ec_vip_user_info_get``: is this mini-program user one of our members?

    ``is_vip: true`` makes the shop link the buyer silently, so it is said only for an openid we
    already know through a login; ``outer_userid`` is the member id (shop.md §3.2).
    """
    repo = MemberRepository(session)
    identity = await repo.identity(body.appid, body.openid)
    member = await repo.live_member(identity.member_id) if identity is not None else None
    if member is None:
        return {"errcode": 0, "errmsg": "ok", "info": {"is_vip": False}}
    return {
        "errcode": 0,
        "errmsg": "ok",
        "info": {"is_vip": True, "identity": "会员", "outer_userid": str(member.id)},
    }


@router.post("/shop/vip-user-auto-add")
async def shop_vip_user_auto_add(body: ShopCallback) -> dict[str, Any]:
    """``channels_ec_vip_user_auto_add``: acknowledged; the stored push is the record of it."""
    return {"errcode": 0, "errmsg": "ok"}
