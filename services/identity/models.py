"""Identity's tables: members, app identities, follows, phones, profiles, tags, segments, merges.

The schema for Alembic only: at run time every statement is SQL text in a domain's repository.py,
on asyncpg.

A member is one person. Everything that says "this is the same person" (an openid in one of the
brand's apps, a unionid, a phone number) points at a member; a merge moves those pointers to the
surviving member and leaves a tombstone (``merged_into``) so old ids keep resolving.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.bus.tables import bus_tables
from shared.db import make_base

Base = make_base()
BUS = bus_tables(Base.metadata)

# Server defaults (created_at, counters) are read back by INSERT/UPDATE ... RETURNING: an expired
# attribute would need a lazy load, which async sessions cannot do.
EAGER_DEFAULTS: dict[str, Any] = {"eager_defaults": True}


class Member(Base):
    __tablename__ = "members"
    __mapper_args__ = EAGER_DEFAULTS

    # Random (uuid4: 122 random bits) so ids can be shown to clients without being guessable.
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    unionid: Mapped[str | None] = mapped_column(String(64), unique=True)
    # How we first met this person (oa_subscribe, mp_login, shop_order, ...) and the first-touch channel.
    source: Mapped[str] = mapped_column(String(32))
    first_scene: Mapped[str | None] = mapped_column(String(128))
    # Set on the member that lost a merge: a tombstone that resolves to the survivor.
    merged_into: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"))
    merged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    identities: Mapped[list[AppIdentity]] = relationship(back_populates="member", lazy="raise")


class AppIdentity(Base):
    """One openid in one of the brand's apps."""

    __tablename__ = "app_identities"
    __mapper_args__ = EAGER_DEFAULTS
    __table_args__ = (UniqueConstraint("appid", "openid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), index=True)
    appid: Mapped[str] = mapped_column(String(32))
    app_kind: Mapped[str] = mapped_column(String(16))
    openid: Mapped[str] = mapped_column(String(64))
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    # How this openid reached us, and how (and when) its unionid did.
    learned_via: Mapped[str] = mapped_column(String(32))
    unionid_via: Mapped[str | None] = mapped_column(String(32))
    unionid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Mini-program only: the latest session_key, AES-GCM encrypted (services/identity/crypto.py).
    session_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    session_key_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    member: Mapped[Member] = relationship(back_populates="identities", lazy="raise")


class Follow(Base):
    """Follow state of one openid on one service account, with first- and last-touch attribution."""

    __tablename__ = "follows"
    __mapper_args__ = EAGER_DEFAULTS

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), index=True)
    appid: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    subscribed: Mapped[bool] = mapped_column(Boolean)
    subscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_subscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    subscribe_count: Mapped[int] = mapped_column(Integer, server_default="0")
    first_scene: Mapped[str | None] = mapped_column(String(128))
    first_ticket: Mapped[str | None] = mapped_column(String(256))
    last_scene: Mapped[str | None] = mapped_column(String(128))
    last_scene_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_ticket: Mapped[str | None] = mapped_column(String(256))
    first_scene_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # WeChat time of the newest push applied: an older push (a late retry) does not flip the state back.
    state_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("appid", "openid"),
        Index("ix_follows_subscribed_openid", "appid", "openid", postgresql_where=text("subscribed")),
    )


class FollowEvent(Base):
    """Every subscribe / unsubscribe / SCAN applied, for attribution reports (append-only, pruned
    after ``IDENTITY_FOLLOW_EVENTS_RETENTION_DAYS``). ``member_id`` is empty for an unsubscribe
    handled before anyone was known for the openid (it is attached when they are)."""

    __tablename__ = "follow_events"
    __table_args__ = (
        UniqueConstraint("appid", "openid", "change", "occurred_at"),
        Index("ix_follow_events_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    member_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("members.id"), index=True)
    appid: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64))
    change: Mapped[str] = mapped_column(String(16))
    scene: Mapped[str | None] = mapped_column(String(128), index=True)
    ticket: Mapped[str | None] = mapped_column(String(256))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source_event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class Phone(Base):
    """A verified phone number (E.164), unique across members: it is never silently merged."""

    __tablename__ = "phones"
    __mapper_args__ = EAGER_DEFAULTS

    e164: Mapped[str] = mapped_column(String(16), primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), index=True)
    country_code: Mapped[str] = mapped_column(String(4))
    national_number: Mapped[str] = mapped_column(String(15))
    masked: Mapped[str] = mapped_column(String(20))
    appid: Mapped[str] = mapped_column(String(32))
    bound_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Profile(Base):
    """What we know about a member's behaviour: counters and recency that tag rules read."""

    __tablename__ = "profiles"
    __mapper_args__ = EAGER_DEFAULTS

    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    product_views: Mapped[int] = mapped_column(Integer, server_default="0")
    add_to_carts: Mapped[int] = mapped_column(Integer, server_default="0")
    shares: Mapped[int] = mapped_column(Integer, server_default="0")
    article_reads: Mapped[int] = mapped_column(Integer, server_default="0")
    orders: Mapped[int] = mapped_column(Integer, server_default="0")
    spent_fen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    gifts_sent: Mapped[int] = mapped_column(Integer, server_default="0")
    gifts_received: Mapped[int] = mapped_column(Integer, server_default="0")
    last_order_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_active_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


PROFILE_COUNTERS = (
    "product_views",
    "add_to_carts",
    "shares",
    "article_reads",
    "orders",
    "spent_fen",
    "gifts_sent",
    "gifts_received",
)


class BehaviourEvent(Base):
    """One mini-program behaviour event (product_view, add_to_cart, share, article_read)."""

    __tablename__ = "behaviour_events"
    # origin_member_id never changes (a merge moves member_id only), so a retry is recognised and
    # an undone merge can give the events back.
    __table_args__ = (
        UniqueConstraint("origin_member_id", "type", "object_id", "occurred_at"),
        Index("ix_behaviour_events_member_time", "member_id", "occurred_at"),
        Index("ix_behaviour_events_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    origin_member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    appid: Mapped[str | None] = mapped_column(String(32))
    props: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Tag(Base):
    """A label on members. ``kind`` rule: set by :mod:`services.identity.tagging`; operator: by people."""

    __tablename__ = "tags"
    __mapper_args__ = EAGER_DEFAULTS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, server_default="")
    # Mirrored onto WeChat user tags of the service account(s); lower priority wins a slot first
    # when a follower would carry more than WeChat's 20 tags per user.
    wechat_sync: Mapped[bool] = mapped_column(Boolean, server_default="false")
    priority: Mapped[int] = mapped_column(Integer, server_default="100")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MemberTag(Base):
    __tablename__ = "member_tags"

    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    added_by: Mapped[str] = mapped_column(String(64))


class Segment(Base):
    """A saved tag query: members with all of ``all_tags``, one of ``any_tags``, none of ``none_tags``."""

    __tablename__ = "segments"
    __mapper_args__ = EAGER_DEFAULTS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, server_default="")
    all_tags: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    any_tags: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    none_tags: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Merge(Base):
    """The merge log: who absorbed whom, why, what moved (so an operator can undo it)."""

    __tablename__ = "merges"
    __mapper_args__ = EAGER_DEFAULTS
    __table_args__ = (
        # A member is merged away at most once at a time.
        Index("uq_merges_merged_id_active", "merged_id", unique=True, postgresql_where=text("undone_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    survivor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), index=True)
    merged_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, server_default="")
    unionid: Mapped[str | None] = mapped_column(String(64))
    source_event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # What moved: identity ids, follow ids, tag ids the survivor gained, phone, profile counters.
    moved: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    undo_reason: Mapped[str | None] = mapped_column(Text)


class MergeBlock(Base):
    """Two members an operator separated: no automatic merge joins them again."""

    __tablename__ = "merge_blocks"

    member_a: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    member_b: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    merge_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("merges.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WeChatTag(Base):
    """A Siyu tag's counterpart among one service account's WeChat user tags."""

    __tablename__ = "wechat_tags"
    __table_args__ = (UniqueConstraint("appid", "tag_id"), UniqueConstraint("appid", "wechat_tag_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    appid: Mapped[str] = mapped_column(String(32))
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"))
    wechat_tag_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(32))


class WeChatUserTag(Base):
    """A WeChat user tag we applied to a follower (what WeChat has, as far as we know)."""

    __tablename__ = "wechat_user_tags"

    appid: Mapped[str] = mapped_column(String(32), primary_key=True)
    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    wechat_tag_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WeChatMenu(Base):
    """A menu we published on a service account (the default one has no tag and no menuid)."""

    __tablename__ = "wechat_menus"
    __mapper_args__ = EAGER_DEFAULTS

    id: Mapped[int] = mapped_column(primary_key=True)
    appid: Mapped[str] = mapped_column(String(32), index=True)
    tag_name: Mapped[str | None] = mapped_column(String(32))
    wechat_tag_id: Mapped[int | None] = mapped_column(Integer)
    menuid: Mapped[str | None] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WeChatSyncJob(Base):
    """One WeChat sync job (``tag_sync``, ``menus``) per service account: who runs it (a lease, not a
    lock held across WeChat calls) and, for tag sync, how far it got (resumable after a crash)."""

    __tablename__ = "wechat_sync_jobs"

    appid: Mapped[str] = mapped_column(String(32), primary_key=True)
    job: Mapped[str] = mapped_column(String(16), primary_key=True)
    lease_owner: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cursor: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    report: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WeChatSyncAttempt(Base):
    """A batch of (un)tagging decided and committed before WeChat is called: the idempotency guard.

    ``pending`` until the outcome is recorded; a crash in between leaves it pending and the next run
    sends it again (tagging twice is harmless on WeChat's side) instead of deciding anew.
    """

    __tablename__ = "wechat_sync_attempts"
    __table_args__ = (
        Index("ix_wechat_sync_attempts_pending", "appid", "id", postgresql_where=text("state = 'pending'")),
        Index("ix_wechat_sync_attempts_done_at", "done_at", postgresql_where=text("state = 'done'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    appid: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    op: Mapped[str] = mapped_column(String(8))
    wechat_tag_id: Mapped[int] = mapped_column(Integer)
    openids: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    state: Mapped[str] = mapped_column(String(8), server_default="pending")
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
