"""Identity's domain logic: one member per person across the brand's apps.

Services take the session and never commit; the consumer wrapper or request dependency does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from services.identity.models import AppIdentity, Follow, Member
from services.identity.repository import MemberRepository
from shared.errors import NotFound
from shared.observability import get_logger

log = get_logger(__name__)


@dataclass
class Resolution:
    member: Member
    identity: AppIdentity
    created: bool


class IdentityService:
    def __init__(self, repo: MemberRepository) -> None:
        self.repo = repo

    async def resolve_or_create(
        self,
        *,
        appid: str,
        app_kind: str,
        openid: str,
        unionid: str | None,
        source: str,
        scene: str | None = None,
    ) -> Resolution:
        """Find the member behind (appid, openid), linking by unionid; create one if nobody matches."""
        await self.repo.lock_person(unionid or "", f"{appid}:{openid}")
        identity = await self.repo.identity(appid, openid)
        if identity is not None:
            member = await self.repo.member(identity.member_id)
            assert member is not None
            await self.repo.touch(identity)
            if unionid and identity.unionid is None:
                await self._attach_unionid(member, identity, unionid)
            return Resolution(member, identity, created=False)

        member = await self.repo.by_unionid(unionid) if unionid else None
        created = member is None
        if member is None:
            member = await self.repo.add_member(unionid=unionid, source=source, scene=scene)
        identity = await self.repo.add_identity(
            member, appid=appid, app_kind=app_kind, openid=openid, unionid=unionid, learned_via=source
        )
        log.info("identity.linked" if not created else "identity.member_created", member_id=str(member.id), appid=appid)
        return Resolution(member, identity, created)

    async def _attach_unionid(self, member: Member, identity: AppIdentity, unionid: str) -> None:
        identity.unionid = unionid
        if member.unionid is None:
            holder = await self.repo.by_unionid(unionid)
            if holder is None:
                member.unionid = unionid
            else:
                # Another member already holds this unionid: the same person met through two apps
                # before the unionid was known. Merging them is the merge flow's job (identity issue).
                log.warning("identity.merge_needed", member_id=str(member.id), holder_id=str(holder.id))

    async def record_follow(
        self,
        member: Member,
        *,
        appid: str,
        openid: str,
        subscribed: bool,
        scene: str | None,
        ticket: str | None,
        at: datetime,
    ) -> tuple[Follow, bool]:
        """Apply a follow change; returns the follow row and whether the state changed."""
        follow = await self.repo.follow(appid, openid)
        if follow is None:
            follow = Follow(
                member_id=member.id,
                appid=appid,
                openid=openid,
                subscribed=False,
                first_scene=scene if subscribed else None,
            )
            self.repo.add_follow(follow)
        changed = follow.subscribed != subscribed
        follow.member_id = member.id
        follow.subscribed = subscribed
        if subscribed:
            follow.subscribed_at = at if changed or follow.subscribed_at is None else follow.subscribed_at
            if scene:
                follow.last_scene = scene
                follow.first_scene = follow.first_scene or scene
            if ticket:
                follow.last_ticket = ticket
        else:
            follow.unsubscribed_at = at
        follow.updated_at = datetime.now(UTC)
        return follow, changed

    async def member_view(self, member_id: uuid.UUID) -> dict[str, object]:
        member = await self.repo.member(member_id)
        if member is None:
            raise NotFound("no such member")
        while member.merged_into is not None:  # old ids keep resolving to the survivor
            survivor = await self.repo.member(member.merged_into)
            assert survivor is not None
            member = survivor
        identities = await self.repo.identities_of(member.id)
        follows = await self.repo.follows_of(member.id)
        return {
            "member_id": str(member.id),
            "unionid_known": member.unionid is not None,
            "source": member.source,
            "first_scene": member.first_scene,
            "created_at": member.created_at,
            "identities": [
                {
                    "appid": i.appid,
                    "app_kind": i.app_kind,
                    "openid": i.openid,
                    "learned_via": i.learned_via,
                    "first_seen": i.first_seen,
                    "last_seen": i.last_seen,
                }
                for i in identities
            ],
            "follows": [
                {
                    "appid": f.appid,
                    "subscribed": f.subscribed,
                    "subscribed_at": f.subscribed_at,
                    "unsubscribed_at": f.unsubscribed_at,
                    "first_scene": f.first_scene,
                    "last_scene": f.last_scene,
                }
                for f in follows
            ],
        }
