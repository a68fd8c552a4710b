"""Identity's SQL. Only this module touches the tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.models import AppIdentity, Follow, Member


class MemberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_person(self, *keys: str) -> None:
        """Serialise work on one person (by unionid or openid) across consumers and replicas.

        Two first contacts for the same person (a follow and a login at the same moment) would
        otherwise both miss and both create a member; a transaction-scoped advisory lock per key
        makes the second one see the first one's rows.
        """
        for key in sorted({k for k in keys if k}):
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})

    async def identity(self, appid: str, openid: str) -> AppIdentity | None:
        result = await self.session.scalars(
            select(AppIdentity).where(AppIdentity.appid == appid, AppIdentity.openid == openid)
        )
        return result.first()

    async def member(self, member_id: uuid.UUID) -> Member | None:
        return await self.session.get(Member, member_id)

    async def by_unionid(self, unionid: str) -> Member | None:
        result = await self.session.scalars(select(Member).where(Member.unionid == unionid))
        return result.first()

    async def add_member(self, *, unionid: str | None, source: str, scene: str | None) -> Member:
        member = Member(id=uuid.uuid4(), unionid=unionid, source=source, first_scene=scene)
        self.session.add(member)
        await self.session.flush()
        return member

    async def add_identity(
        self, member: Member, *, appid: str, app_kind: str, openid: str, unionid: str | None, learned_via: str
    ) -> AppIdentity:
        identity = AppIdentity(
            member_id=member.id, appid=appid, app_kind=app_kind, openid=openid, unionid=unionid, learned_via=learned_via
        )
        self.session.add(identity)
        await self.session.flush()
        return identity

    async def identities_of(self, member_id: uuid.UUID) -> list[AppIdentity]:
        result = await self.session.scalars(
            select(AppIdentity).where(AppIdentity.member_id == member_id).order_by(AppIdentity.id)
        )
        return list(result)

    async def follow(self, appid: str, openid: str) -> Follow | None:
        result = await self.session.scalars(select(Follow).where(Follow.appid == appid, Follow.openid == openid))
        return result.first()

    async def follows_of(self, member_id: uuid.UUID) -> list[Follow]:
        result = await self.session.scalars(select(Follow).where(Follow.member_id == member_id).order_by(Follow.id))
        return list(result)

    def add_follow(self, follow: Follow) -> None:
        self.session.add(follow)

    async def touch(self, identity: AppIdentity, when: datetime | None = None) -> None:
        identity.last_seen = when or func.now()  # type: ignore[assignment]
