"""Identity's SQL. Only this module touches the tables.

Look-ups that decide a link or a merge re-read the row (``populate_existing``): after an advisory
lock was granted, the session's identity map may still hold what another transaction has since
changed, and the decision must be taken on what is committed now.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ScalarResult, Select, and_, delete, exists, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.models import (
    PROFILE_COUNTERS,
    AppIdentity,
    BehaviourEvent,
    Follow,
    FollowEvent,
    Member,
    MemberTag,
    Merge,
    MergeBlock,
    Phone,
    Profile,
    Segment,
    Tag,
    WeChatMenu,
    WeChatTag,
    WeChatUserTag,
)

T = TypeVar("T")

MAX_MERGE_CHAIN = 32


class MemberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _fresh(self, stmt: Select[Any]) -> ScalarResult[Any]:
        """Rows as committed now. Pending changes are flushed first: re-reading would discard them."""
        await self.session.flush()
        return await self.session.scalars(stmt.execution_options(populate_existing=True))

    # --- locks -----------------------------------------------------------------------------------

    async def lock_person(self, *keys: str) -> None:
        """Serialise work on one person (by unionid or openid) across consumers and replicas.

        Two first contacts for the same person (a follow and a login at the same moment) would
        otherwise both miss and both create a member; a transaction-scoped advisory lock per key
        makes the second one see the first one's rows. Keys are taken in sorted order so two
        transactions never wait on each other in a cycle.
        """
        for key in sorted({k for k in keys if k}):
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})

    async def lock_members(self, *member_ids: uuid.UUID) -> None:
        """Serialise merges and undos touching these members (taken after any person lock)."""
        await self.lock_person(*(f"member:{m}" for m in member_ids))

    # --- members ---------------------------------------------------------------------------------

    async def member(self, member_id: uuid.UUID) -> Member | None:
        return (await self._fresh(select(Member).where(Member.id == member_id))).first()

    async def live_member(self, member_id: uuid.UUID) -> Member | None:
        """The member behind ``member_id``, following merge tombstones to the survivor."""
        member = await self.member(member_id)
        hops = 0
        while member is not None and member.merged_into is not None:
            hops += 1
            if hops > MAX_MERGE_CHAIN:
                raise RuntimeError(f"merge chain from {member_id} is longer than {MAX_MERGE_CHAIN}")
            member = await self.member(member.merged_into)
        return member

    async def by_unionid(self, unionid: str) -> Member | None:
        return (await self._fresh(select(Member).where(Member.unionid == unionid))).first()

    async def add_member(self, *, unionid: str | None, source: str, scene: str | None) -> Member:
        member = Member(id=uuid.uuid4(), unionid=unionid, source=source, first_scene=scene)
        self.session.add(member)
        await self.session.flush()
        self.session.add(Profile(member_id=member.id))
        await self.session.flush()
        return member

    async def flush(self) -> None:
        await self.session.flush()

    # --- app identities --------------------------------------------------------------------------

    async def snapshot(self) -> None:
        """Make every later read in this transaction see one snapshot (must come first).

        Under READ COMMITTED each statement sees the latest commit: a view read in several
        statements could show a follow committed between them without the identity committed
        with it. Read-only views call this before their first query.
        """
        await self.session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))

    async def try_lock(self, key: int) -> bool:
        """A transaction-scoped advisory lock, without waiting: False when another holder has it."""
        return bool(await self.session.scalar(select(func.pg_try_advisory_xact_lock(key))))

    async def identity(self, appid: str, openid: str) -> AppIdentity | None:
        stmt = select(AppIdentity).where(AppIdentity.appid == appid, AppIdentity.openid == openid)
        return (await self._fresh(stmt)).first()

    async def add_identity(
        self,
        member: Member,
        *,
        appid: str,
        app_kind: str,
        openid: str,
        unionid: str | None,
        learned_via: str,
        at: datetime,
    ) -> AppIdentity:
        identity = AppIdentity(
            member_id=member.id,
            appid=appid,
            app_kind=app_kind,
            openid=openid,
            unionid=unionid,
            learned_via=learned_via,
            unionid_via=learned_via if unionid else None,
            unionid_at=at if unionid else None,
            first_seen=at,
            last_seen=at,
        )
        self.session.add(identity)
        await self.session.flush()
        return identity

    async def identities_of(self, member_id: uuid.UUID) -> list[AppIdentity]:
        stmt = select(AppIdentity).where(AppIdentity.member_id == member_id).order_by(AppIdentity.id)
        return list(await self._fresh(stmt))

    async def identities_of_many(self, member_ids: Sequence[uuid.UUID]) -> list[AppIdentity]:
        if not member_ids:
            return []
        stmt = select(AppIdentity).where(AppIdentity.member_id.in_(member_ids)).order_by(AppIdentity.id)
        return list(await self.session.scalars(stmt))

    async def move_identities(self, ids: Sequence[int], *, from_member: uuid.UUID, to_member: uuid.UUID) -> None:
        if ids:
            await self.session.execute(
                update(AppIdentity)
                .where(AppIdentity.id.in_(ids), AppIdentity.member_id == from_member)
                .values(member_id=to_member)
            )

    # --- follows ---------------------------------------------------------------------------------

    async def follow(self, appid: str, openid: str) -> Follow | None:
        stmt = select(Follow).where(Follow.appid == appid, Follow.openid == openid)
        return (await self._fresh(stmt)).first()

    async def follows_of(self, member_id: uuid.UUID) -> list[Follow]:
        stmt = select(Follow).where(Follow.member_id == member_id).order_by(Follow.id)
        return list(await self._fresh(stmt))

    async def following_of_many(self, member_ids: Sequence[uuid.UUID]) -> list[Follow]:
        if not member_ids:
            return []
        stmt = select(Follow).where(Follow.member_id.in_(member_ids), Follow.subscribed.is_(True))
        return list(await self.session.scalars(stmt))

    def add_follow(self, follow: Follow) -> None:
        self.session.add(follow)

    async def move_follows(self, ids: Sequence[int], *, from_member: uuid.UUID, to_member: uuid.UUID) -> None:
        if ids:
            await self.session.execute(
                update(Follow).where(Follow.id.in_(ids), Follow.member_id == from_member).values(member_id=to_member)
            )

    async def record_follow_event(
        self,
        *,
        member_id: uuid.UUID,
        appid: str,
        openid: str,
        change: str,
        scene: str | None,
        ticket: str | None,
        at: datetime,
        source_event_id: uuid.UUID | None,
    ) -> bool:
        """Append to the follow log; False when this exact change was applied before."""
        inserted = await self.session.scalar(
            pg_insert(FollowEvent)
            .values(
                member_id=member_id,
                appid=appid,
                openid=openid,
                change=change,
                scene=scene,
                ticket=ticket,
                occurred_at=at,
                source_event_id=source_event_id,
            )
            .on_conflict_do_nothing()
            .returning(FollowEvent.id)
        )
        return inserted is not None

    async def move_follow_events(
        self, pairs: Sequence[tuple[str, str]], *, from_member: uuid.UUID, to_member: uuid.UUID
    ) -> None:
        if pairs:
            await self.session.execute(
                update(FollowEvent)
                .where(
                    FollowEvent.member_id == from_member,
                    tuple_(FollowEvent.appid, FollowEvent.openid).in_(list(pairs)),
                )
                .values(member_id=to_member)
            )

    async def phone(self, e164: str) -> Phone | None:
        return (await self._fresh(select(Phone).where(Phone.e164 == e164))).first()

    async def phones_of(self, member_id: uuid.UUID) -> list[Phone]:
        stmt = select(Phone).where(Phone.member_id == member_id).order_by(Phone.bound_at)
        return list(await self._fresh(stmt))

    def add_phone(self, phone: Phone) -> None:
        self.session.add(phone)

    async def delete_phone(self, phone: Phone) -> None:
        await self.session.delete(phone)
        await self.session.flush()

    async def move_phones(self, e164s: Sequence[str], *, from_member: uuid.UUID, to_member: uuid.UUID) -> None:
        if e164s:
            await self.session.execute(
                update(Phone).where(Phone.e164.in_(e164s), Phone.member_id == from_member).values(member_id=to_member)
            )

    # --- profiles and behaviour ------------------------------------------------------------------

    async def profile(self, member_id: uuid.UUID) -> Profile:
        found = (await self._fresh(select(Profile).where(Profile.member_id == member_id))).first()
        if found is None:  # members created before profiles existed
            await self.session.execute(pg_insert(Profile).values(member_id=member_id).on_conflict_do_nothing())
            found = (await self._fresh(select(Profile).where(Profile.member_id == member_id))).one()
        profile: Profile = found
        return profile

    async def add_behaviour_events(self, rows: list[dict[str, Any]]) -> list[str]:
        """Insert the rows a retry has not inserted before; returns the types of the new ones."""
        if not rows:
            return []
        result = await self.session.execute(
            pg_insert(BehaviourEvent).values(rows).on_conflict_do_nothing().returning(BehaviourEvent.type)
        )
        return list(result.scalars())

    async def behaviour_origins(self, member_id: uuid.UUID) -> list[uuid.UUID]:
        stmt = select(BehaviourEvent.origin_member_id).where(BehaviourEvent.member_id == member_id).distinct()
        return list(await self.session.scalars(stmt))

    async def move_behaviour_events(
        self, *, from_member: uuid.UUID, to_member: uuid.UUID, origins: Sequence[uuid.UUID] | None = None
    ) -> None:
        stmt = update(BehaviourEvent).where(BehaviourEvent.member_id == from_member)
        if origins is not None:
            if not origins:
                return
            stmt = stmt.where(BehaviourEvent.origin_member_id.in_(origins))
        await self.session.execute(stmt.values(member_id=to_member))

    async def ensure_tags(self, specs: Iterable[dict[str, Any]]) -> None:
        rows = list(specs)
        if rows:
            await self.session.execute(pg_insert(Tag).values(rows).on_conflict_do_nothing(index_elements=["name"]))

    async def tag(self, name: str) -> Tag | None:
        return (await self._fresh(select(Tag).where(Tag.name == name))).first()

    async def tags_named(self, names: Iterable[str]) -> list[Tag]:
        wanted = sorted(set(names))
        if not wanted:
            return []
        return list(await self.session.scalars(select(Tag).where(Tag.name.in_(wanted))))

    async def all_tags(self) -> list[Tag]:
        return list(await self._fresh(select(Tag).order_by(Tag.priority, Tag.name)))

    def add_tag(self, tag: Tag) -> None:
        self.session.add(tag)

    async def member_tags(self, member_id: uuid.UUID) -> list[tuple[MemberTag, Tag]]:
        stmt = (
            select(MemberTag, Tag)
            .join(Tag, Tag.id == MemberTag.tag_id)
            .where(MemberTag.member_id == member_id)
            .order_by(Tag.priority, Tag.name)
        )
        return [(mt, t) for mt, t in (await self.session.execute(stmt)).all()]

    async def tag_names_of_many(self, member_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
        out: dict[uuid.UUID, list[str]] = {m: [] for m in member_ids}
        if not member_ids:
            return out
        stmt = (
            select(MemberTag.member_id, Tag.name)
            .join(Tag, Tag.id == MemberTag.tag_id)
            .where(MemberTag.member_id.in_(member_ids))
            .order_by(Tag.priority, Tag.name)
        )
        for member_id, name in (await self.session.execute(stmt)).all():
            out[member_id].append(name)
        return out

    async def add_member_tags(self, member_id: uuid.UUID, tag_ids: Iterable[int], added_by: str) -> list[int]:
        rows = [{"member_id": member_id, "tag_id": t, "added_by": added_by} for t in sorted(set(tag_ids))]
        if not rows:
            return []
        result = await self.session.execute(
            pg_insert(MemberTag).values(rows).on_conflict_do_nothing().returning(MemberTag.tag_id)
        )
        return list(result.scalars())

    async def remove_member_tags(self, member_id: uuid.UUID, tag_ids: Iterable[int]) -> list[int]:
        ids = sorted(set(tag_ids))
        if not ids:
            return []
        result = await self.session.execute(
            delete(MemberTag)
            .where(MemberTag.member_id == member_id, MemberTag.tag_id.in_(ids))
            .returning(MemberTag.tag_id)
        )
        return list(result.scalars())

    async def restore_member_tags(self, member_id: uuid.UUID, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            values = [
                {
                    "member_id": member_id,
                    "tag_id": r["tag_id"],
                    "added_by": r["added_by"],
                    "added_at": datetime.fromisoformat(r["added_at"]),
                }
                for r in rows
            ]
            await self.session.execute(pg_insert(MemberTag).values(values).on_conflict_do_nothing())

    # --- member lists (tags and segments) ----------------------------------------------------------

    async def members_page(
        self,
        *,
        all_tags: Sequence[str] = (),
        any_tags: Sequence[str] = (),
        none_tags: Sequence[str] = (),
        after: uuid.UUID | None,
        limit: int,
    ) -> list[uuid.UUID]:
        """Live members matching a tag query, ordered by id (keyset pagination: ``after``)."""

        def has(name: str) -> Any:
            return exists().where(MemberTag.member_id == Member.id, MemberTag.tag_id == Tag.id, Tag.name == name)

        conditions: list[Any] = [Member.merged_into.is_(None)]
        conditions += [has(n) for n in all_tags]
        if any_tags:
            conditions.append(
                exists().where(
                    MemberTag.member_id == Member.id, MemberTag.tag_id == Tag.id, Tag.name.in_(list(any_tags))
                )
            )
        conditions += [~has(n) for n in none_tags]
        if after is not None:
            conditions.append(Member.id > after)
        stmt = select(Member.id).where(and_(*conditions)).order_by(Member.id).limit(limit)
        return list(await self.session.scalars(stmt))

    async def segment(self, name: str) -> Segment | None:
        return (await self.session.scalars(select(Segment).where(Segment.name == name))).first()

    async def segments(self) -> list[Segment]:
        return list(await self.session.scalars(select(Segment).order_by(Segment.name)))

    def add_segment(self, segment: Segment) -> None:
        self.session.add(segment)

    async def members_for_rule_refresh(self, *, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        stmt = select(Member.id).where(Member.merged_into.is_(None))
        if after is not None:
            stmt = stmt.where(Member.id > after)
        return list(await self.session.scalars(stmt.order_by(Member.id).limit(limit)))

    # --- merges ----------------------------------------------------------------------------------

    def add_merge(self, merge: Merge) -> None:
        self.session.add(merge)

    async def merge_record(self, merge_id: uuid.UUID) -> Merge | None:
        return (await self._fresh(select(Merge).where(Merge.id == merge_id))).first()

    async def merges_of(self, member_id: uuid.UUID) -> list[Merge]:
        stmt = (
            select(Merge)
            .where(or_(Merge.survivor_id == member_id, Merge.merged_id == member_id))
            .order_by(Merge.created_at)
        )
        return list(await self._fresh(stmt))

    async def is_blocked(self, a: uuid.UUID, b: uuid.UUID) -> bool:
        first, second = sorted([a, b], key=str)
        found = await self.session.scalar(
            select(func.count())
            .select_from(MergeBlock)
            .where(MergeBlock.member_a == first, MergeBlock.member_b == second)
        )
        return bool(found)

    async def block(self, a: uuid.UUID, b: uuid.UUID, merge_id: uuid.UUID | None) -> None:
        first, second = sorted([a, b], key=str)
        await self.session.execute(
            pg_insert(MergeBlock).values(member_a=first, member_b=second, merge_id=merge_id).on_conflict_do_nothing()
        )

    async def add_profile_counters(self, member_id: uuid.UUID, delta: dict[str, int], sign: int = 1) -> None:
        values: dict[str, Any] = {
            c: func.greatest(getattr(Profile, c) + sign * int(delta.get(c, 0)), 0) for c in PROFILE_COUNTERS
        }
        values["updated_at"] = func.now()
        await self.session.execute(update(Profile).where(Profile.member_id == member_id).values(values))

    # --- WeChat sync state -------------------------------------------------------------------------

    async def wechat_tags(self, appid: str) -> list[WeChatTag]:
        return list(await self._fresh(select(WeChatTag).where(WeChatTag.appid == appid)))

    def add_wechat_tag(self, row: WeChatTag) -> None:
        self.session.add(row)

    async def forget_wechat_tag(self, row: WeChatTag) -> None:
        """A WeChat tag that no longer exists: drop the mapping and what we applied with it."""
        await self.session.execute(
            delete(WeChatUserTag).where(
                WeChatUserTag.appid == row.appid, WeChatUserTag.wechat_tag_id == row.wechat_tag_id
            )
        )
        await self.session.delete(row)
        await self.session.flush()

    async def followers_with_tags(self, appid: str, tag_ids: Sequence[int]) -> list[tuple[str, int | None]]:
        """(openid, tag_id or None) for every current follower of ``appid`` (tags limited to ``tag_ids``)."""
        stmt = (
            select(Follow.openid, MemberTag.tag_id)
            .join(Member, Member.id == Follow.member_id)
            .outerjoin(
                MemberTag,
                and_(MemberTag.member_id == Follow.member_id, MemberTag.tag_id.in_(list(tag_ids) or [-1])),
            )
            .where(Follow.appid == appid, Follow.subscribed.is_(True))
        )
        return [(o, t) for o, t in (await self.session.execute(stmt)).all()]

    async def applied_user_tags(self, appid: str) -> list[tuple[str, int]]:
        stmt = select(WeChatUserTag.openid, WeChatUserTag.wechat_tag_id).where(WeChatUserTag.appid == appid)
        return [(o, t) for o, t in (await self.session.execute(stmt)).all()]

    async def mark_user_tags(self, appid: str, wechat_tag_id: int, openids: Sequence[str], applied: bool) -> None:
        if not openids:
            return
        if applied:
            rows = [{"appid": appid, "openid": o, "wechat_tag_id": wechat_tag_id} for o in openids]
            await self.session.execute(pg_insert(WeChatUserTag).values(rows).on_conflict_do_nothing())
        else:
            await self.session.execute(
                delete(WeChatUserTag).where(
                    WeChatUserTag.appid == appid,
                    WeChatUserTag.wechat_tag_id == wechat_tag_id,
                    WeChatUserTag.openid.in_(list(openids)),
                )
            )

    async def clear_menus(self, appid: str) -> None:
        await self.session.execute(delete(WeChatMenu).where(WeChatMenu.appid == appid))

    def add_menu(self, menu: WeChatMenu) -> None:
        self.session.add(menu)

    async def menus(self, appid: str) -> list[WeChatMenu]:
        stmt = select(WeChatMenu).where(WeChatMenu.appid == appid).order_by(WeChatMenu.id)
        return list(await self.session.scalars(stmt))

    async def touch(self, identity: AppIdentity, when: datetime) -> None:
        if identity.last_seen is None or when > identity.last_seen:  # a late retry does not move it back
            identity.last_seen = when
