"""Identity's domain logic: one member per person across the brand's apps.

Services take the session and never commit; the consumer wrapper or request dependency does.
They do not publish either: every domain event they decide on is appended to ``self.events`` and
the caller hands them to its outbox (``EventContext.publish`` in a handler, ``Outbox.add`` in a
request), in the same transaction.

Linking rules (README.md has the long form):

* (appid, openid) identifies an app identity; it belongs to exactly one live member.
* A unionid belongs to at most one live member. When an identity learns a unionid that another
  member already holds, the two members are one person: they are merged. The older member
  survives (ties broken by id); everything the other owned moves to it and the other becomes a
  tombstone whose id keeps resolving to the survivor. The merge log records what moved, so an
  operator can undo it; an undone pair is never merged again automatically.
* A phone number belongs to at most one member and never causes a merge (see ``bind_phone``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.identity.models import PROFILE_COUNTERS, AppIdentity, Follow, Member, Merge, Phone
from services.identity.repository import MemberRepository
from services.identity.tagging import Tagging
from shared.errors import Conflict, NotFound, Unprocessable
from shared.events import (
    EventData,
    FollowChanged,
    MemberLinked,
    MemberMerged,
    MemberRegistered,
    MemberTagsChanged,
    MemberUnmerged,
    PhoneBound,
)
from shared.observability import get_logger

log = get_logger(__name__)


BEHAVIOUR_COUNTERS = {
    "product_view": "product_views",
    "add_to_cart": "add_to_carts",
    "share": "shares",
    "article_read": "article_reads",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Resolution:
    member: Member
    identity: AppIdentity
    created: bool
    linked: bool = False
    merges: list[Merge] = field(default_factory=list)


@dataclass
class PhoneNumber:
    country_code: str
    national_number: str

    @property
    def e164(self) -> str:
        return f"+{self.country_code}{self.national_number}"

    @property
    def masked(self) -> str:
        n = self.national_number
        if len(n) >= 8:
            return f"{n[:3]}{'*' * (len(n) - 7)}{n[-4:]}"
        return f"{n[:1]}{'*' * max(len(n) - 3, 1)}{n[-2:]}"

    @classmethod
    def parse(cls, country_code: str, national_number: str) -> PhoneNumber:
        """Normalise WeChat's ``countryCode`` + ``purePhoneNumber`` into E.164 parts."""
        cc = str(country_code).strip().lstrip("+")
        nn = "".join(ch for ch in str(national_number) if not ch.isspace() and ch != "-")
        if not (cc.isdigit() and 1 <= len(cc) <= 3 and not cc.startswith("0")):
            raise ValueError(f"not a country calling code: {country_code!r}")
        if not (nn.isdigit() and 4 <= len(nn) <= 15 - len(cc)):
            raise ValueError("not a national phone number")
        return cls(cc, nn)


class IdentityService:
    def __init__(self, repo: MemberRepository) -> None:
        self.repo = repo
        self.tagging = Tagging(repo)
        self.events: list[EventData] = []

    def drain_events(self) -> list[EventData]:
        """The events decided so far, in order, with one tag change per member (the net change)."""
        out: list[EventData | None] = []
        tags: dict[str, tuple[int, list[str], list[str], str]] = {}
        for event in self.events:
            if not isinstance(event, MemberTagsChanged):
                out.append(event)
                continue
            if event.member_id not in tags:
                tags[event.member_id] = (len(out), [], [], event.by)
                out.append(None)
            _, added, removed, _ = tags[event.member_id]
            for name in event.added:
                if name in removed:
                    removed.remove(name)  # removed, then added back: no net change
                else:
                    added.append(name)
            for name in event.removed:
                if name in added:
                    added.remove(name)
                else:
                    removed.append(name)
        for member_id, (index, added, removed, by) in tags.items():
            if added or removed:
                out[index] = MemberTagsChanged(member_id=member_id, added=sorted(added), removed=sorted(removed), by=by)
        self.events.clear()
        return [e for e in out if e is not None]

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
    ) -> Resolution:
        """Find the member behind (appid, openid), linking or merging by unionid; create one if nobody matches.

        Idempotent: the same call again finds the identity, the member, and the unionid in place.
        """
        at = at or utcnow()
        unionid = unionid or None
        await self.repo.lock_person(unionid or "", f"{appid}:{openid}")
        identity = await self.repo.identity(appid, openid)
        if identity is not None:
            member = await self._live_member_of(identity)
            await self.repo.touch(identity, at)
            merges: list[Merge] = []
            if unionid:
                member, merges = await self._learn_unionid(member, identity, unionid, source, source_event_id, at)
            return Resolution(member, identity, created=False, merges=merges)

        holder = await self._locked_holder(unionid) if unionid else None
        if holder is not None:
            identity = await self.repo.add_identity(
                holder, appid=appid, app_kind=app_kind, openid=openid, unionid=unionid, learned_via=source, at=at
            )
            if scene and holder.first_scene is None:
                holder.first_scene = scene
            log.info("identity.linked", member_id=str(holder.id), appid=appid, via=source)
            self.events.append(
                MemberLinked(member_id=str(holder.id), appid=appid, app_kind=app_kind, openid=openid, source=source)
            )
            return Resolution(holder, identity, created=False, linked=True)

        member = await self.repo.add_member(unionid=unionid, source=source, scene=scene)
        identity = await self.repo.add_identity(
            member, appid=appid, app_kind=app_kind, openid=openid, unionid=unionid, learned_via=source, at=at
        )
        log.info("identity.member_created", member_id=str(member.id), appid=appid, via=source)
        self.events.append(
            MemberRegistered(
                member_id=str(member.id),
                appid=appid,
                app_kind=app_kind,
                openid=openid,
                unionid=unionid,
                source=source,
                scene=scene,
            )
        )
        await self._refresh_rules(member)
        return Resolution(member, identity, created=True)

    async def _locked_holder(self, unionid: str) -> Member | None:
        """The live member holding ``unionid``, under its lock (an operator merge may move the unionid)."""
        holder = await self.repo.by_unionid(unionid)
        for _ in range(8):
            if holder is None:
                return None
            await self.repo.lock_members(holder.id)
            again = await self.repo.by_unionid(unionid)
            if again is not None and again.id == holder.id:
                return again
            holder = again
        raise Conflict("the holder of this unionid keeps changing; try again")

    async def _live_member_of(self, identity: AppIdentity) -> Member:
        """The member owning ``identity``, under that member's lock (a merge may move it meanwhile)."""
        for _ in range(8):
            member_id = identity.member_id
            await self.repo.lock_members(member_id)
            identity = await self.repo.identity(identity.appid, identity.openid) or identity
            if identity.member_id == member_id:
                member = await self.repo.member(member_id)
                assert member is not None
                return member
        raise Conflict("the member of this identity keeps changing; try again")

    async def _learn_unionid(
        self,
        member: Member,
        identity: AppIdentity,
        unionid: str,
        via: str,
        source_event_id: uuid.UUID | None,
        at: datetime,
    ) -> tuple[Member, list[Merge]]:
        if identity.unionid is None:
            identity.unionid = unionid
            identity.unionid_via = via
            identity.unionid_at = at
        elif identity.unionid != unionid:
            # One openid has one unionid for life; a different one means bad data upstream.
            log.error("identity.unionid_mismatch", member_id=str(member.id), appid=identity.appid, via=via)
            return member, []
        if member.unionid == unionid:
            return member, []
        if member.unionid is not None:
            log.error("identity.member_unionid_conflict", member_id=str(member.id), appid=identity.appid, via=via)
            return member, []
        holder = await self.repo.by_unionid(unionid)
        if holder is None:
            member.unionid = unionid
            await self.repo.flush()
            return member, []
        if await self.repo.is_blocked(holder.id, member.id):
            log.warning("identity.merge_blocked", member_id=str(member.id), holder_id=str(holder.id))
            return member, []
        merge = await self.merge(holder, member, reason="unionid", unionid=unionid, source_event_id=source_event_id)
        survivor = await self.repo.member(merge.survivor_id)
        assert survivor is not None
        return survivor, [merge]

    # --- merge and undo --------------------------------------------------------------------------

    async def merge(
        self,
        a: Member,
        b: Member,
        *,
        reason: str,
        unionid: str | None = None,
        source_event_id: uuid.UUID | None = None,
        detail: str = "",
    ) -> Merge:
        """Merge two live members; the older one survives. Returns the merge log entry."""
        if a.id == b.id:
            raise Conflict("a member cannot be merged with itself")
        await self.repo.lock_members(a.id, b.id)
        a2, b2 = await self.repo.member(a.id), await self.repo.member(b.id)
        if a2 is None or b2 is None:
            raise NotFound("no such member")
        if a2.merged_into is not None or b2.merged_into is not None:
            raise Conflict("one of the members was already merged into another")
        if a2.unionid and b2.unionid and a2.unionid != b2.unionid:
            raise Conflict("the members have different unionids: WeChat says they are two people")
        survivor, merged = sorted([a2, b2], key=lambda m: (m.created_at, str(m.id)))
        now = utcnow()
        merge_id = uuid.uuid4()

        identities = await self.repo.identities_of(merged.id)
        follows = await self.repo.follows_of(merged.id)
        pairs = [(i.appid, i.openid) for i in identities]
        await self.repo.move_identities([i.id for i in identities], from_member=merged.id, to_member=survivor.id)
        await self.repo.move_follows([f.id for f in follows], from_member=merged.id, to_member=survivor.id)
        await self.repo.move_follow_events(pairs, from_member=merged.id, to_member=survivor.id)

        merged_tag_rows = await self.repo.member_tags(merged.id)
        survivor_tag_ids = {t.id for _, t in await self.repo.member_tags(survivor.id)}
        tags_of_merged = [
            {"tag_id": t.id, "added_by": mt.added_by, "added_at": mt.added_at.isoformat()} for mt, t in merged_tag_rows
        ]
        gained = sorted({t.id for _, t in merged_tag_rows} - survivor_tag_ids)
        await self.repo.remove_member_tags(merged.id, (t.id for _, t in merged_tag_rows))
        await self.repo.add_member_tags(survivor.id, gained, f"merge:{merge_id}")

        merged_phones = await self.repo.phones_of(merged.id)
        survivor_phones = await self.repo.phones_of(survivor.id)
        # One person, one verified number: the survivor's wins; the other stays on the tombstone
        # (still unique, still resolving to the survivor) and comes back on undo.
        moved_phones = [p.e164 for p in merged_phones] if not survivor_phones else []
        await self.repo.move_phones(moved_phones, from_member=merged.id, to_member=survivor.id)

        merged_profile = await self.repo.profile(merged.id)
        survivor_profile = await self.repo.profile(survivor.id)
        counters = {c: int(getattr(merged_profile, c)) for c in PROFILE_COUNTERS}
        snapshot: dict[str, Any] = dict(counters)
        for stamp in ("last_order_at", "last_active_at"):
            value = getattr(merged_profile, stamp)
            snapshot[stamp] = value.isoformat() if value else None
            if value and (getattr(survivor_profile, stamp) is None or value > getattr(survivor_profile, stamp)):
                setattr(survivor_profile, stamp, value)
        await self.repo.add_profile_counters(survivor.id, counters)
        await self.repo.add_profile_counters(merged.id, counters, sign=-1)

        origins = await self.repo.behaviour_origins(merged.id)
        await self.repo.move_behaviour_events(from_member=merged.id, to_member=survivor.id)

        unionid_holder = None
        if merged.unionid is not None:
            unionid_holder = str(merged.id)
            carried = merged.unionid
            merged.unionid = None
            await self.repo.flush()
            survivor.unionid = carried
        elif survivor.unionid is not None:
            unionid_holder = str(survivor.id)
        first_scene_taken = survivor.first_scene is None and merged.first_scene is not None
        if first_scene_taken:
            survivor.first_scene = merged.first_scene
        merged.merged_into = survivor.id
        merged.merged_at = now

        record = Merge(
            id=merge_id,
            survivor_id=survivor.id,
            merged_id=merged.id,
            reason=reason,
            detail=detail,
            unionid=unionid or survivor.unionid,
            source_event_id=source_event_id,
            moved={
                "identities": [i.id for i in identities],
                "identity_pairs": [list(p) for p in pairs],
                "follows": [f.id for f in follows],
                "tags_of_merged": tags_of_merged,
                "tags_gained": gained,
                "phones": moved_phones,
                "profile": snapshot,
                "event_origins": [str(o) for o in origins],
                "unionid_holder": unionid_holder,
                "first_scene_taken": first_scene_taken,
            },
            created_at=now,
        )
        self.repo.add_merge(record)
        await self.repo.flush()
        log.info(
            "identity.merged",
            survivor_id=str(survivor.id),
            merged_id=str(merged.id),
            reason=reason,
            merge_id=str(merge_id),
        )
        self.events.append(
            MemberMerged(
                survivor_id=str(survivor.id),
                merged_id=str(merged.id),
                reason=reason,
                unionid=record.unionid,
                merge_id=str(merge_id),
            )
        )
        await self._refresh_rules(survivor)
        return record

    async def merge_members(self, a_id: uuid.UUID, b_id: uuid.UUID, *, reason: str, detail: str) -> Merge:
        """Operator merge (e.g. after a phone conflict was confirmed to be one person)."""
        a, b = await self.repo.live_member(a_id), await self.repo.live_member(b_id)
        if a is None or b is None:
            raise NotFound("no such member")
        if a.id == b.id:
            raise Conflict("these ids already resolve to the same member")
        return await self.merge(a, b, reason=reason, detail=detail)

    async def undo_merge(self, merge_id: uuid.UUID, *, reason: str) -> Merge:
        """Give the merged member back everything the merge moved, and never auto-merge the pair again."""
        record = await self.repo.merge_record(merge_id)
        if record is None:
            raise NotFound("no such merge")
        await self.repo.lock_members(record.survivor_id, record.merged_id)
        record = await self.repo.merge_record(merge_id)
        assert record is not None
        if record.undone_at is not None:
            raise Conflict("this merge was already undone")
        survivor = await self.repo.member(record.survivor_id)
        merged = await self.repo.member(record.merged_id)
        assert survivor is not None and merged is not None
        if survivor.merged_into is not None:
            raise Conflict(f"the survivor was merged again into {survivor.merged_into}: undo that merge first")
        if merged.merged_into != survivor.id:
            raise Conflict("the merged member no longer points at the survivor")
        moved = record.moved
        pairs = [(str(p[0]), str(p[1])) for p in moved.get("identity_pairs", [])]
        await self.repo.move_identities(moved["identities"], from_member=survivor.id, to_member=merged.id)
        await self.repo.move_follows(moved["follows"], from_member=survivor.id, to_member=merged.id)
        await self.repo.move_follow_events(pairs, from_member=survivor.id, to_member=merged.id)
        await self.repo.remove_member_tags(survivor.id, moved["tags_gained"])
        await self.repo.restore_member_tags(merged.id, moved["tags_of_merged"])
        await self.repo.move_phones(moved["phones"], from_member=survivor.id, to_member=merged.id)
        counters = {c: int(moved["profile"].get(c, 0)) for c in PROFILE_COUNTERS}
        await self.repo.add_profile_counters(survivor.id, counters, sign=-1)
        await self.repo.add_profile_counters(merged.id, counters)
        merged_profile = await self.repo.profile(merged.id)
        for stamp in ("last_order_at", "last_active_at"):
            value = moved["profile"].get(stamp)
            setattr(merged_profile, stamp, datetime.fromisoformat(value) if value else None)
        await self.repo.move_behaviour_events(
            from_member=survivor.id, to_member=merged.id, origins=[uuid.UUID(o) for o in moved["event_origins"]]
        )
        if moved.get("unionid_holder") == str(merged.id) and record.unionid:
            survivor.unionid = None
            await self.repo.flush()
            merged.unionid = record.unionid
        if moved.get("first_scene_taken"):
            survivor.first_scene = None
        merged.merged_into = None
        merged.merged_at = None
        record.undone_at = utcnow()
        record.undo_reason = reason
        await self.repo.block(survivor.id, merged.id, record.id)
        await self.repo.flush()
        log.info("identity.unmerged", survivor_id=str(survivor.id), restored_id=str(merged.id), merge_id=str(merge_id))
        self.events.append(
            MemberUnmerged(
                survivor_id=str(survivor.id), restored_id=str(merged.id), merge_id=str(record.id), reason=reason
            )
        )
        await self._refresh_rules(survivor)
        await self._refresh_rules(merged)
        return record

    # --- follows ---------------------------------------------------------------------------------

    async def record_follow(
        self,
        member: Member,
        *,
        appid: str,
        openid: str,
        change: str,
        scene: str | None,
        ticket: str | None,
        at: datetime,
        source_event_id: uuid.UUID | None = None,
    ) -> bool:
        """Apply a subscribe / unsubscribe / scan; True when the follow state flipped.

        A push older than the newest one applied (a late retry) is logged for attribution but does
        not flip the state back. The same change at the same WeChat time twice is a no-op.
        """
        fresh = await self.repo.record_follow_event(
            member_id=member.id,
            appid=appid,
            openid=openid,
            change=change,
            scene=scene,
            ticket=ticket,
            at=at,
            source_event_id=source_event_id,
        )
        if not fresh:
            return False
        follow = await self.repo.follow(appid, openid)
        if follow is None:
            follow = Follow(member_id=member.id, appid=appid, openid=openid, subscribed=False, subscribe_count=0)
            self.repo.add_follow(follow)
        follow.member_id = member.id
        stale = follow.state_at is not None and at < follow.state_at
        was = follow.subscribed
        if not stale:
            follow.state_at = at
            if change in ("subscribe", "scan"):
                # SCAN comes only from a follower: if we missed the subscribe, this repairs it.
                follow.subscribed = True
                if not was:
                    follow.subscribed_at = at
                    follow.subscribe_count += 1
                    follow.first_subscribed_at = follow.first_subscribed_at or at
            else:
                follow.subscribed = False
                follow.unsubscribed_at = at
        if scene and change != "unsubscribe":
            if follow.first_scene is None:
                follow.first_scene, follow.first_ticket = scene, ticket
            if follow.last_scene_at is None or at >= follow.last_scene_at:
                follow.last_scene, follow.last_ticket, follow.last_scene_at = scene, ticket, at
            if member.first_scene is None:
                member.first_scene = scene
        follow.updated_at = utcnow()
        await self.repo.flush()
        changed = follow.subscribed != was
        if changed or change == "scan":
            self.events.append(
                FollowChanged(
                    member_id=str(member.id),
                    appid=appid,
                    openid=openid,
                    subscribed=follow.subscribed,
                    scene=scene,
                    change=change,
                )
            )
        if changed:
            await self._refresh_rules(member)
        return changed

    # --- phone -----------------------------------------------------------------------------------

    async def bind_phone(self, member_id: uuid.UUID, *, appid: str, number: PhoneNumber) -> tuple[Member, bool]:
        """Bind a verified number to a member. Returns (member, newly bound).

        Policy: a number held by another member is a 409, never a merge — two people can share a
        phone (family) and a number is recycled by carriers, so a phone is evidence for an operator,
        not proof. The same number again is a no-op. A different number replaces the member's
        previous one (people change numbers).
        """
        await self.repo.lock_person(f"phone:{number.e164}")
        member = await self.repo.live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        await self.repo.lock_members(member.id)
        holder = await self.repo.phone(number.e164)
        if holder is not None:
            owner = await self.repo.live_member(holder.member_id)
            if owner is not None and owner.id == member.id:
                return member, False
            raise PhoneTaken(
                "this phone number is bound to another member; an operator can merge them if they are one person"
            )
        for old in await self.repo.phones_of(member.id):
            await self.repo.delete_phone(old)
        self.repo.add_phone(
            Phone(
                e164=number.e164,
                member_id=member.id,
                country_code=number.country_code,
                national_number=number.national_number,
                appid=appid,
                bound_at=utcnow(),
            )
        )
        await self.repo.flush()
        self.events.append(
            PhoneBound(member_id=str(member.id), phone_masked=number.masked, country_code=number.country_code)
        )
        return member, True

    # --- activity and behaviour --------------------------------------------------------------------

    async def touch_activity(self, member: Member, at: datetime) -> None:
        profile = await self.repo.profile(member.id)
        previous = profile.last_active_at
        if previous is None or at > previous:
            profile.last_active_at = at
            # Back from a long absence: drop "lapsed" now rather than at the next sweep.
            if previous is not None and previous < at - timedelta(days=self.tagging.policy.lapsed_days):
                await self._refresh_rules(member)

    async def record_behaviour(self, member_id: uuid.UUID, events: list[dict[str, Any]]) -> tuple[Member, int]:
        """Store behaviour events (a retried batch is recognised row by row); returns (member, new rows)."""
        member = await self.repo.live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        # origin = the id the caller addressed, so a batch retried after a merge is still a duplicate.
        rows = [{**e, "member_id": member.id, "origin_member_id": member_id} for e in events]
        new_types = await self.repo.add_behaviour_events(rows)
        delta: dict[str, int] = {}
        for t in new_types:
            counter = BEHAVIOUR_COUNTERS[t]
            delta[counter] = delta.get(counter, 0) + 1
        if delta:
            await self.repo.add_profile_counters(member.id, delta)
            await self.touch_activity(member, max(e["occurred_at"] for e in events))
            await self._refresh_rules(member)
        return member, len(new_types)

    async def record_order(self, member_id: uuid.UUID, *, amount_fen: int, at: datetime) -> None:
        """A paid order (for commerce's events once they exist): feeds buyer / frequent_buyer."""
        member = await self.repo.live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        await self.repo.add_profile_counters(member.id, {"orders": 1, "spent_fen": amount_fen})
        profile = await self.repo.profile(member.id)
        if profile.last_order_at is None or at > profile.last_order_at:
            profile.last_order_at = at
        await self._refresh_rules(member)

    async def record_gift(self, member_id: uuid.UUID, *, role: str) -> None:
        """A gift sent or received (for commerce's gift events): feeds gift_giver / gift_receiver."""
        member = await self.repo.live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        await self.repo.add_profile_counters(member.id, {"gifts_sent" if role == "giver" else "gifts_received": 1})
        await self._refresh_rules(member)

    # --- operator tags ---------------------------------------------------------------------------

    async def set_tags(self, member_id: uuid.UUID, *, add: list[str], remove: list[str], operator: str) -> Member:
        member = await self.repo.live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        if set(add) & set(remove):
            raise Unprocessable("a tag cannot be added and removed at once")
        change = await self.tagging.set_operator_tags(member, add=add, remove=remove, operator=operator)
        if change:
            self.events.append(change)
        return member

    async def refresh_rules(self, member_id: uuid.UUID) -> None:
        member = await self.repo.live_member(member_id)
        if member is not None:
            await self._refresh_rules(member)

    async def _refresh_rules(self, member: Member) -> None:
        change: MemberTagsChanged | None = await self.tagging.refresh_rules(member, utcnow())
        if change:
            self.events.append(change)

    # --- views -----------------------------------------------------------------------------------

    async def member_view(self, member_id: uuid.UUID) -> dict[str, object]:
        member = await self.repo.live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        identities = await self.repo.identities_of(member.id)
        follows = await self.repo.follows_of(member.id)
        phones = await self.repo.phones_of(member.id)
        profile = await self.repo.profile(member.id)
        tags = await self.repo.member_tags(member.id)
        phone = phones[-1] if phones else None
        view: dict[str, object] = {
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
                    "unionid_via": i.unionid_via,
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
                    "first_subscribed_at": f.first_subscribed_at,
                    "subscribe_count": f.subscribe_count,
                    "first_scene": f.first_scene,
                    "last_scene": f.last_scene,
                }
                for f in follows
            ],
            "tags": [t.name for _, t in tags],
            "phone_masked": PhoneNumber(phone.country_code, phone.national_number).masked if phone else None,
            "phone_country_code": phone.country_code if phone else None,
            "profile": {
                **{c: getattr(profile, c) for c in PROFILE_COUNTERS},
                "last_order_at": profile.last_order_at,
                "last_active_at": profile.last_active_at,
            },
        }
        if member.id != member_id:
            view["resolved_from"] = str(member_id)
        return view


class PhoneTaken(Conflict):
    type_slug = "phone-taken"
    title = "Phone number bound to another member"
