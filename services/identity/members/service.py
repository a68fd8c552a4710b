"""One member per person across the brand's apps: resolve-or-create, links, merges and their undo.

Linking rules (README.md has the long form):

* (appid, openid) identifies an app identity; it belongs to exactly one live member.
* A unionid belongs to at most one live member. When an identity learns a unionid that another
  member already holds, the two members are one person: they are merged. The older member survives
  (ties broken by id); everything the other owned moves to it and the other becomes a tombstone
  whose id keeps resolving to the survivor. The merge log records what moved, so an operator can
  undo it; an undone pair is never merged again automatically.
* A phone number belongs to at most one member and never causes a merge (phones/service.py).

Concurrency: person locks (unionid, ``appid:openid``) then member locks (``member:<id>``), each
sorted; after a lock is granted the deciding rows are read again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.identity.behaviour.repository import ProfileRepository
from services.identity.members.repository import (
    IdentityRow,
    MemberRepository,
    MemberRow,
    MergeRepository,
    PersonLocks,
    member_keys,
    person_keys,
)
from services.identity.models import PROFILE_COUNTERS
from services.identity.tags.schemas import NEW_MEMBER_RULE_TAGS
from services.identity.tags.service import TagService
from shared.bus.outbox import Outbox
from shared.db import Database
from shared.errors import Conflict, NotFound
from shared.events import MemberLinked, MemberMerged, MemberRegistered, MemberTagsChanged, MemberUnmerged
from shared.observability import get_logger
from shared.uow import UnitOfWork

log = get_logger(__name__)

# How often a lock-then-re-read loop may find its row moved by a merge before giving up (409).
MAX_RELOCKS = 8


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Resolution:
    member_id: uuid.UUID
    created: bool
    unionid_known: bool
    linked: bool = False
    merged: list[uuid.UUID] = field(default_factory=list)
    # The member was tagged lapsed and has just been active: its rule tags need a refresh.
    back_from_lapse: bool = False


class MemberService:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.members = MemberRepository(uow.conn)
        self.merges = MergeRepository(uow.conn)
        self.locks = PersonLocks(uow.conn)
        self.tags = TagService(uow)

    # --- resolve or create -----------------------------------------------------------------------

    async def resolve_or_create(
        self,
        *,
        appid: str,
        app_kind: str,
        openid: str,
        unionid: str | None,
        source: str,
        scene: str | None = None,
        source_event_id: uuid.UUID | None = None,
        at: datetime | None = None,
        session_key_enc: bytes | None = None,
    ) -> Resolution:
        """Find the member behind (appid, openid), linking or merging by unionid; create one if nobody
        matches. Idempotent: the same call again finds the identity, the member and the unionid in place.
        Publishes registered / linked / merged; the caller refreshes rule tags once at the end."""
        at = at or utcnow()
        unionid = unionid or None
        await self.locks.lock(person_keys(appid, openid, unionid))
        identity = await self.members.identity(appid, openid)
        if identity is not None:
            member, identity = await self._live_member_of(identity)
            await self.members.touch_identity(identity.id, at, session_key_enc)
            merged: list[uuid.UUID] = []
            if unionid:
                member, merged = await self._learn_unionid(member, identity, unionid, source, source_event_id, at)
            return Resolution(member.id, created=False, unionid_known=member.unionid is not None, merged=merged)

        holder = await self._locked_holder(unionid) if unionid else None
        if holder is not None:
            await self.members.add_identity(
                holder.id,
                appid=appid,
                app_kind=app_kind,
                openid=openid,
                unionid=unionid,
                learned_via=source,
                at=at,
                session_key_enc=session_key_enc,
            )
            if scene:
                await self.members.set_first_scene(holder.id, scene)
            log.info("identity.linked", member_id=str(holder.id), appid=appid, via=source)
            self.uow.publish(
                MemberLinked(member_id=str(holder.id), appid=appid, app_kind=app_kind, openid=openid, source=source)
            )
            return Resolution(holder.id, created=False, unionid_known=True, linked=True)

        member_id = uuid.uuid4()
        await self.members.create_member(
            member_id,
            unionid=unionid,
            source=source,
            scene=scene,
            appid=appid,
            app_kind=app_kind,
            openid=openid,
            at=at,
            session_key_enc=session_key_enc,
        )
        log.info("identity.member_created", member_id=str(member_id), appid=appid, via=source)
        self.uow.publish(
            MemberRegistered(
                member_id=str(member_id),
                appid=appid,
                app_kind=app_kind,
                openid=openid,
                unionid=unionid,
                source=source,
                scene=scene,
            )
        )
        return Resolution(member_id, created=True, unionid_known=unionid is not None)

    async def _locked_holder(self, unionid: str) -> MemberRow | None:
        """The live member holding ``unionid``, under its lock (an operator merge may move the unionid)."""
        holder = await self.members.by_unionid(unionid)
        for _ in range(MAX_RELOCKS):
            if holder is None:
                return None
            await self.locks.lock(member_keys(holder.id))
            again = await self.members.by_unionid(unionid)
            if again is not None and again.id == holder.id:
                return again
            holder = again
        raise Conflict("the holder of this unionid keeps changing; try again")

    async def _live_member_of(self, identity: IdentityRow) -> tuple[MemberRow, IdentityRow]:
        """The member owning ``identity``, under that member's lock (a merge may move it meanwhile)."""
        for _ in range(MAX_RELOCKS):
            member_id = identity.member_id
            await self.locks.lock(member_keys(member_id))
            identity = await self.members.identity(identity.appid, identity.openid) or identity
            if identity.member_id == member_id:
                member = await self.members.member(member_id)
                if member is None:  # pragma: no cover - the foreign key forbids it
                    raise NotFound("no such member")
                return member, identity
        raise Conflict("the member of this identity keeps changing; try again")

    async def _learn_unionid(
        self,
        member: MemberRow,
        identity: IdentityRow,
        unionid: str,
        via: str,
        source_event_id: uuid.UUID | None,
        at: datetime,
    ) -> tuple[MemberRow, list[uuid.UUID]]:
        if identity.unionid is None:
            await self.members.learn_identity_unionid(identity.id, unionid, via, at)
        elif identity.unionid != unionid:
            # One openid has one unionid for life; a different one means bad data upstream.
            log.error("identity.unionid_mismatch", member_id=str(member.id), appid=identity.appid, via=via)
            return member, []
        if member.unionid == unionid:
            return member, []
        if member.unionid is not None:
            log.error("identity.member_unionid_conflict", member_id=str(member.id), appid=identity.appid, via=via)
            return member, []
        holder = await self.members.by_unionid(unionid)
        if holder is None:
            await self.members.set_member_unionid(member.id, unionid)
            return await self._reload(member.id), []
        if await self.merges.is_blocked(holder.id, member.id):
            log.warning("identity.merge_blocked", member_id=str(member.id), holder_id=str(holder.id))
            return member, []
        record = await self.merge(
            holder.id, member.id, reason="unionid", unionid=unionid, source_event_id=source_event_id
        )
        return await self._reload(record["survivor_id"]), [record["merged_id"]]

    async def _reload(self, member_id: uuid.UUID) -> MemberRow:
        member = await self.members.member(member_id)
        if member is None:  # pragma: no cover - members are never deleted
            raise NotFound("no such member")
        return member

    # --- merge and undo --------------------------------------------------------------------------

    async def merge(
        self,
        a_id: uuid.UUID,
        b_id: uuid.UUID,
        *,
        reason: str,
        unionid: str | None = None,
        source_event_id: uuid.UUID | None = None,
        detail: str = "",
    ) -> asyncpg.Record:
        """Merge two live members; the older one survives. Returns the merge log entry."""
        if a_id == b_id:
            raise Conflict("a member cannot be merged with itself")
        await self.locks.lock(member_keys(a_id, b_id))
        a, b = await self.members.member(a_id), await self.members.member(b_id)
        if a is None or b is None:
            raise NotFound("no such member")
        if a.merged_into is not None or b.merged_into is not None:
            raise Conflict("one of the members was already merged into another")
        if a.unionid and b.unionid and a.unionid != b.unionid:
            raise Conflict("the members have different unionids: WeChat says they are two people")
        survivor, merged = sorted([a, b], key=lambda m: (m.created_at, str(m.id)))
        merge_id = uuid.uuid4()
        moves = self.merges

        identities = await moves.identities_of(merged.id)
        follows = await moves.follow_ids_of(merged.id)
        pairs = [(str(i["appid"]), str(i["openid"])) for i in identities]
        await moves.move_identities([i["id"] for i in identities], from_member=merged.id, to_member=survivor.id)
        await moves.move_follows(follows, from_member=merged.id, to_member=survivor.id)
        await moves.move_follow_events(pairs, from_member=merged.id, to_member=survivor.id)

        merged_tags = await moves.member_tag_rows(merged.id)
        survivor_tags = {r["tag_id"] for r in await moves.member_tag_rows(survivor.id)}
        tags_of_merged = [
            {"tag_id": r["tag_id"], "added_by": r["added_by"], "added_at": r["added_at"].isoformat()}
            for r in merged_tags
        ]
        gained = sorted({r["tag_id"] for r in merged_tags} - survivor_tags)
        await self.tags.tags.remove_member_tags(merged.id, [r["tag_id"] for r in merged_tags])
        await self.tags.tags.add_member_tags(survivor.id, gained, f"merge:{merge_id}")

        # One person, one verified number: the survivor's wins; the other stays on the tombstone
        # (still unique, still resolving to the survivor) and comes back on undo.
        merged_phones = await moves.phones_of(merged.id)
        moved_phones = merged_phones if not await moves.phones_of(survivor.id) else []
        await moves.move_phones(moved_phones, from_member=merged.id, to_member=survivor.id)

        merged_profile = await moves.profile(merged.id)
        survivor_profile = await moves.profile(survivor.id)
        counters = {c: int(merged_profile[c]) if merged_profile else 0 for c in PROFILE_COUNTERS}
        snapshot: dict[str, Any] = dict(counters)
        stamps: dict[str, datetime | None] = {}
        for stamp in ("last_order_at", "last_active_at"):
            theirs = merged_profile[stamp] if merged_profile else None
            ours = survivor_profile[stamp] if survivor_profile else None
            snapshot[stamp] = theirs.isoformat() if theirs else None
            stamps[stamp] = max((t for t in (theirs, ours) if t is not None), default=None)
        await moves.add_profile_counters(survivor.id, counters)
        await moves.add_profile_counters(merged.id, counters, sign=-1)
        await moves.set_profile_stamps(
            survivor.id, last_order_at=stamps["last_order_at"], last_active_at=stamps["last_active_at"]
        )

        origins = await moves.behaviour_origins(merged.id)
        await moves.move_behaviour_events(from_member=merged.id, to_member=survivor.id)

        unionid_holder = None
        if merged.unionid is not None:
            unionid_holder = str(merged.id)
            await self.members.set_member_unionid(merged.id, None)
            await self.members.set_member_unionid(survivor.id, merged.unionid)
        elif survivor.unionid is not None:
            unionid_holder = str(survivor.id)
        first_scene_taken = survivor.first_scene is None and merged.first_scene is not None
        if first_scene_taken and merged.first_scene:
            await self.members.set_first_scene(survivor.id, merged.first_scene)
        await moves.mark_merged(merged.id, survivor.id)

        record = await moves.insert(
            merge_id,
            survivor_id=survivor.id,
            merged_id=merged.id,
            reason=reason,
            detail=detail,
            unionid=unionid or survivor.unionid or merged.unionid,
            source_event_id=source_event_id,
            moved={
                "identities": [i["id"] for i in identities],
                "identity_pairs": [list(p) for p in pairs],
                "follows": follows,
                "tags_of_merged": tags_of_merged,
                "tags_gained": gained,
                "phones": moved_phones,
                "profile": snapshot,
                "event_origins": [str(o) for o in origins],
                "unionid_holder": unionid_holder,
                "first_scene_taken": first_scene_taken,
            },
        )
        log.info(
            "identity.merged",
            survivor_id=str(survivor.id),
            merged_id=str(merged.id),
            reason=reason,
            merge_id=str(merge_id),
        )
        self.uow.publish(
            MemberMerged(
                survivor_id=str(survivor.id),
                merged_id=str(merged.id),
                reason=reason,
                unionid=record["unionid"],
                merge_id=str(merge_id),
            )
        )
        return record

    async def merge_members(self, a_id: uuid.UUID, b_id: uuid.UUID, *, reason: str, detail: str) -> asyncpg.Record:
        """Operator merge (e.g. after a phone conflict was confirmed to be one person)."""
        a, b = await self.members.live_member(a_id), await self.members.live_member(b_id)
        if a is None or b is None:
            raise NotFound("no such member")
        if a.id == b.id:
            raise Conflict("these ids already resolve to the same member")
        record = await self.merge(a.id, b.id, reason=reason, detail=detail)
        await self.tags.refresh_rules([record["survivor_id"]])
        return record

    async def undo_merge(self, merge_id: uuid.UUID, *, reason: str) -> asyncpg.Record:
        """Give the merged member back everything the merge moved, and never auto-merge the pair again."""
        record = await self.merges.get(merge_id)
        if record is None:
            raise NotFound("no such merge")
        await self.locks.lock(member_keys(record["survivor_id"], record["merged_id"]))
        record = await self.merges.get(merge_id)
        assert record is not None
        if record["undone_at"] is not None:
            raise Conflict("this merge was already undone")
        survivor = await self._reload(record["survivor_id"])
        merged = await self._reload(record["merged_id"])
        if survivor.merged_into is not None:
            raise Conflict(f"the survivor was merged again into {survivor.merged_into}: undo that merge first")
        if merged.merged_into != survivor.id:
            raise Conflict("the merged member no longer points at the survivor")
        moved: dict[str, Any] = record["moved"]
        moves = self.merges
        pairs = [(str(p[0]), str(p[1])) for p in moved.get("identity_pairs", [])]
        returned = await moves.move_identities(moved["identities"], from_member=survivor.id, to_member=merged.id)
        await moves.move_follows(moved["follows"], from_member=survivor.id, to_member=merged.id)
        await moves.move_follow_events(pairs, from_member=survivor.id, to_member=merged.id)
        await self.tags.tags.remove_member_tags(survivor.id, moved["tags_gained"])
        await moves.restore_member_tags(merged.id, moved["tags_of_merged"])
        await moves.move_phones(moved["phones"], from_member=survivor.id, to_member=merged.id)
        counters = {c: int(moved["profile"].get(c, 0)) for c in PROFILE_COUNTERS}
        await moves.add_profile_counters(survivor.id, counters, sign=-1)
        await moves.add_profile_counters(merged.id, counters)
        stamps = {s: moved["profile"].get(s) for s in ("last_order_at", "last_active_at")}
        await moves.set_profile_stamps(
            merged.id,
            last_order_at=datetime.fromisoformat(stamps["last_order_at"]) if stamps["last_order_at"] else None,
            last_active_at=datetime.fromisoformat(stamps["last_active_at"]) if stamps["last_active_at"] else None,
        )
        await moves.move_behaviour_events(
            from_member=survivor.id, to_member=merged.id, origins=[uuid.UUID(o) for o in moved["event_origins"]]
        )
        if moved.get("unionid_holder") == str(merged.id) and record["unionid"]:
            await self.members.set_member_unionid(survivor.id, None)
            await self.members.set_member_unionid(merged.id, record["unionid"])
        if moved.get("first_scene_taken"):
            await self.members.clear_first_scene(survivor.id)
        await moves.unmark_merged(merged.id)
        record = await moves.mark_undone(merge_id, reason)
        await moves.block(survivor.id, merged.id, merge_id)
        log.info("identity.unmerged", survivor_id=str(survivor.id), restored_id=str(merged.id), merge_id=str(merge_id))
        self.uow.publish(
            MemberUnmerged(
                survivor_id=str(survivor.id), restored_id=str(merged.id), merge_id=str(merge_id), reason=reason
            )
        )
        # Whoever keeps a projection of openid → member (notify) learns each identity that went back.
        for row in returned:
            self.uow.publish(
                MemberLinked(
                    member_id=str(merged.id),
                    appid=row["appid"],
                    app_kind=row["app_kind"],
                    openid=row["openid"],
                    source="unmerge",
                )
            )
        await self.tags.refresh_rules([survivor.id, merged.id])
        return record

    async def merges_of(self, member_id: uuid.UUID) -> list[asyncpg.Record]:
        if not await self.members.exists(member_id):
            raise NotFound("no such member")
        return await self.merges.of_member(member_id)


class QuickResolve:
    """The hot paths of resolve-or-create, one statement each on a connection in autocommit.

    A known identity whose unionid is already in place is touched and answered; an unknown one is
    created with its events in one statement. Anything else (a unionid to learn, a link, a merge, a
    race lost on a unique constraint) answers None: the caller takes the locked path,
    :meth:`MemberService.resolve_or_create` in a unit of work, which decides it under the locks.
    """

    def __init__(self, conn: asyncpg.Connection, outbox: Outbox) -> None:
        self.members = MemberRepository(conn)
        self.outbox = outbox

    async def resolve(
        self,
        *,
        appid: str,
        app_kind: str,
        openid: str,
        unionid: str | None,
        source: str,
        at: datetime,
        session_key_enc: bytes | None = None,
        activity: bool = False,
    ) -> Resolution | None:
        unionid = unionid or None
        known = await self.members.touch_known(appid, openid, at=at, session_key_enc=session_key_enc, activity=activity)
        if known is not None:
            settled = not known.merged and (
                unionid is None or (known.identity_unionid == unionid and known.member_unionid == unionid)
            )
            if not settled:
                return None
            return Resolution(
                known.member_id,
                created=False,
                unionid_known=known.member_unionid is not None,
                back_from_lapse=activity and known.lapsed,
            )
        member_id = uuid.uuid4()
        events = [
            self.outbox.prepare(
                MemberRegistered(
                    member_id=str(member_id),
                    appid=appid,
                    app_kind=app_kind,
                    openid=openid,
                    unionid=unionid,
                    source=source,
                )
            ),
            self.outbox.prepare(
                MemberTagsChanged(member_id=str(member_id), added=sorted(NEW_MEMBER_RULE_TAGS), removed=[], by="rules")
            ),
        ]
        try:
            await self.members.create_fast(
                member_id,
                unionid=unionid,
                source=source,
                scene=None,
                appid=appid,
                app_kind=app_kind,
                openid=openid,
                at=at,
                session_key_enc=session_key_enc,
                activity=activity,
                rule_tags=NEW_MEMBER_RULE_TAGS,
                events=events,
            )
        except asyncpg.UniqueViolationError:
            return None  # someone holds the unionid, or the identity was created meanwhile
        log.info("identity.member_created", member_id=str(member_id), appid=appid, via=source)
        return Resolution(member_id, created=True, unionid_known=unionid is not None)


class MemberViews:
    """The member view: one statement that follows tombstones and builds the JSON in PostgreSQL."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.members = MemberRepository(conn)

    async def by_id(self, member_id: uuid.UUID) -> str:
        found = await self.members.view(member_id)
        if found is None:
            raise NotFound("no such member")
        live_id, body = found
        if live_id != member_id:
            # Only a merged-away id says where it came from (the key is absent otherwise).
            body = f'{body[:-1]}, "resolved_from" : "{member_id}"}}'
        return body

    async def by_identity(self, appid: str, openid: str) -> str:
        found = await self.members.view_by_identity(appid, openid)
        if found is None:
            raise NotFound("no member is known for this appid and openid")
        return found[1]


async def resolve_or_create(
    db: Database,
    *,
    appid: str,
    app_kind: str,
    openid: str,
    unionid: str | None,
    source: str,
    session_key_enc: bytes | None = None,
    activity: bool = False,
    at: datetime | None = None,
) -> Resolution:
    """Resolve-or-create as the internal API does it: the one-statement hot path first; the locked
    path in a unit of work when it declines (and rule tags refreshed there, once)."""
    at = at or utcnow()
    async with db.connection() as conn:
        found = await QuickResolve(conn, db.outbox).resolve(
            appid=appid,
            app_kind=app_kind,
            openid=openid,
            unionid=unionid,
            source=source,
            at=at,
            session_key_enc=session_key_enc,
            activity=activity,
        )
    if found is not None and not found.back_from_lapse:
        return found
    async with db.unit_of_work() as uow:
        if found is None:
            found = await MemberService(uow).resolve_or_create(
                appid=appid,
                app_kind=app_kind,
                openid=openid,
                unionid=unionid,
                source=source,
                at=at,
                session_key_enc=session_key_enc,
            )
            if activity:
                await ProfileRepository(uow.conn).touch_activity(found.member_id, at)
        await TagService(uow).refresh_rules([found.member_id])
    return found
