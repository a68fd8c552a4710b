"""The gateway's tables: the inbound log of WeChat pushes (its de-dup keys), its outbox and inbox,
the mini-program API's rate-limit buckets and idempotency keys, and its copy of notify's reply
rules. No business data. Only Alembic reads this module; at run time the SQL is in the
repositories (``services/gateway/<domain>/repository.py``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.bus.tables import bus_tables
from shared.db import make_base

Base = make_base()
BUS = bus_tables(Base.metadata)


class InboundPush(Base):
    """Every verified push, once: the unique ``dedup_key`` is what makes a WeChat retry a no-op.

    Kept durably (not in a cache) for longer than WeChat's longest retry horizon (shop: ~3.6 h).
    Pushes that verified but could not be parsed are kept with ``status='unparsed'`` for inspection.
    ``id`` is handed out by the gateway from blocks of its sequence (which counts in steps of
    ``PUSH_ID_BLOCK``, migration 0005), so the event body, which names the id, is complete before
    the one statement that stores the push and its outbox row.
    """

    __tablename__ = "inbound_pushes"
    __table_args__ = (Index("ix_inbound_pushes_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    appid: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(300), unique=True)
    event_type: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'accepted'"))
    payload: Mapped[dict[str, object]] = mapped_column(JSONB)
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PushNonce(Base):
    """Replay store: each (appid, nonce, timestamp) signs one body, inside the timestamp window.

    The same signature with the same body is WeChat retrying; with a different body it is a forgery
    (in plaintext mode ``signature`` does not cover the body, so this is the only guard).
    """

    __tablename__ = "push_nonces"
    __table_args__ = (Index("ix_push_nonces_seen_at", "seen_at"),)

    appid: Mapped[str] = mapped_column(String(32), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    timestamp: Mapped[str] = mapped_column(String(16), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RateLimitBucket(Base):
    """One GCRA bucket per limited key (``ip:<addr>``, ``member:<id>``, ...), shared by every replica.

    ``tat`` is the bucket's theoretical arrival time: a request is allowed when, after adding one
    emission interval, ``tat`` stays within one period of now. One row per key, updated with one
    atomic UPSERT (see ``services/gateway/ratelimit.py``). UNLOGGED: a crash forgets the counters
    (which only resets limits) and in return each check writes no WAL.
    """

    __tablename__ = "rate_limits"
    # No index on ``tat``: every check rewrites it, and an index on it would make each update a
    # non-HOT one (new index entries, bloat). The janitor deletes by ``sweep_at`` instead, which
    # changes rarely. fillfactor leaves room on each page for the HOT updates.
    __table_args__ = (
        Index("ix_rate_limits_sweep_at", "sweep_at"),
        {"prefixes": ["UNLOGGED"], "postgresql_with": {"fillfactor": 70}},
    )

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tat: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    allowed: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # The bucket's period, so one multi-row UPSERT checks buckets of different limits (each row's
    # own period is read from EXCLUDED).
    period_s: Mapped[float] = mapped_column(Float, server_default=text("60"))
    # When an idle bucket may be forgotten: an hour after a check, moved on only when it is less than
    # 50 minutes away (ratelimit/repository.py), so nearly every check stays a HOT update while the
    # janitor deletes by this index.
    sweep_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now() + interval '1 hour'")
    )


class IdempotencyRecord(Base):
    """The first answer to a POST carrying an ``Idempotency-Key``, replayed for 24 h.

    ``scope`` is whose key it is (``member:<id>``, or ``ip:<addr>`` before sign-in), so two clients
    can never see each other's answers. ``request_hash`` covers method, path and the validated body:
    the same key with a different request is refused. ``owner`` is the claim of the request that
    is executing it; only that request may record the answer.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("scope", "key"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    scope: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # in_flight | done
    owner: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    locked_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReplyRules(Base):
    """The gateway's copy of notify's passive-reply rules (``notify.reply_rules.published``).

    One row per rule set (``name``); the consumer keeps the newest by notify's ``published_at``,
    and every replica reloads its in-memory copy when ``version`` changes.
    """

    __tablename__ = "reply_rules"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    rules: Mapped[dict[str, object]] = mapped_column(JSONB)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
