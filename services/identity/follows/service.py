"""Follow state on the service accounts, in WeChat's order.

Every change is logged with its WeChat ``CreateTime`` (``follow_events``); the state is the newest
change's, whatever order deliveries are handled in (they run concurrently, and a retry can come
late). An unsubscribe handled before anyone is known for the openid is logged without a member;
when the person is met (their subscribe, handled later), the state is folded from the whole log.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from datetime import datetime

from services.identity.follows.repository import FollowRepository
from services.identity.follows.schemas import RANK, Change, FollowState, LoggedChange
from services.identity.members.repository import MemberRepository
from shared.events import FollowChanged
from shared.uow import UnitOfWork


def apply(state: FollowState, c: LoggedChange) -> FollowState:
    """``state`` after the change ``c`` (pure: the whole follow rule)."""
    held = RANK["scan"] if state.subscribed else RANK["unsubscribe"]
    newer = state.state_at is None or c.order > (state.state_at, held)
    s = dataclasses.replace(state)
    if c.change in ("subscribe", "scan"):
        if newer and not state.subscribed:
            # A SCAN comes only from a follower: if we missed the subscribe, this repairs it.
            s = dataclasses.replace(
                s,
                subscribe_count=s.subscribe_count + 1,
                subscribed_at=max(t for t in (s.subscribed_at, c.at) if t is not None),
            )
        s = dataclasses.replace(s, first_subscribed_at=min(t for t in (s.first_subscribed_at, c.at) if t is not None))
        if c.scene:
            if s.first_scene_at is None or c.at < s.first_scene_at:
                s = dataclasses.replace(s, first_scene=c.scene, first_ticket=c.ticket, first_scene_at=c.at)
            if s.last_scene_at is None or c.at >= s.last_scene_at:
                s = dataclasses.replace(s, last_scene=c.scene, last_ticket=c.ticket, last_scene_at=c.at)
    else:
        s = dataclasses.replace(s, unsubscribed_at=max(t for t in (s.unsubscribed_at, c.at) if t is not None))
    if newer:
        s = dataclasses.replace(s, subscribed=c.change != "unsubscribe", state_at=c.at)
    return s


def fold(changes: Iterable[LoggedChange]) -> FollowState:
    """The state a log of changes makes, applied in WeChat's order."""
    state = FollowState()
    for c in sorted(changes, key=lambda c: c.order):
        state = apply(state, c)
    return state


class FollowService:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.follows = FollowRepository(uow.conn)
        self.members = MemberRepository(uow.conn)

    async def record_unknown(
        self, *, appid: str, openid: str, change: Change, at: datetime, source_event_id: uuid.UUID | None
    ) -> None:
        """A change from an openid nobody is known for (an unsubscribe): logged, nobody created.
        The caller holds the person lock of (appid, openid)."""
        await self.follows.record(
            None,
            appid=appid,
            openid=openid,
            change=change,
            scene=None,
            ticket=None,
            at=at,
            source_event_id=source_event_id,
        )

    async def record(
        self,
        member_id: uuid.UUID,
        *,
        appid: str,
        openid: str,
        change: Change,
        scene: str | None,
        ticket: str | None,
        at: datetime,
        source_event_id: uuid.UUID | None = None,
    ) -> bool:
        """Apply a subscribe / unsubscribe / SCAN of the member's openid; True when the state flipped.
        The caller holds the person lock of (appid, openid). The same change twice is a no-op."""
        scene = scene if change != "unsubscribe" else None
        fresh = await self.follows.record(
            member_id,
            appid=appid,
            openid=openid,
            change=change,
            scene=scene,
            ticket=ticket if scene else None,
            at=at,
            source_event_id=source_event_id,
        )
        if not fresh:
            return False
        before = await self.follows.state(appid, openid)
        if before is None:
            # First change seen with a member: fold in what was logged before anyone was known.
            after = fold(await self.follows.logged(appid, openid))
            await self.follows.attach_orphans(appid, openid, member_id)
        else:
            after = apply(before, LoggedChange(change, scene, ticket if scene else None, at))
        await self.follows.save(member_id, appid, openid, after)
        if scene:
            await self.members.set_first_scene(member_id, scene)
        was = before.subscribed if before is not None else False
        flipped = after.subscribed != was
        if flipped or change == "scan":
            self.uow.publish(
                FollowChanged(
                    member_id=str(member_id),
                    appid=appid,
                    openid=openid,
                    subscribed=after.subscribed,
                    scene=scene,
                    change=change,
                )
            )
        return flipped
