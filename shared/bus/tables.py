"""The outbox and inbox tables every service database carries.

Both are plain Core tables added to a service's metadata so its Alembic migrations create them;
only the bus code touches them. Outbox ``status``: ``pending`` → ``sent`` | ``unroutable`` (no
service consumes the type) | ``parked`` (failed ``max_attempts`` times; ``siyuctl outbox retry``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("type", String(200), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("status", String(16), nullable=False, server_default="pending"),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("available_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True)),
        Column("last_error", Text),
        Index("ix_outbox_pending", "id", postgresql_where=text("status = 'pending'")),
        # The relay's gauge counts parked rows every few seconds: without this it reads the whole table.
        Index("ix_outbox_parked", "id", postgresql_where=text("status = 'parked'")),
        # Retention deletes by age among finished rows; pending and parked rows are never pruned.
        Index("ix_outbox_sent_at", "sent_at", postgresql_where=text("status IN ('sent', 'unroutable')")),
    )


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(100), nullable=False),
        Column("event_id", UUID(as_uuid=True), nullable=False),
        Column("event_type", String(200), nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id"),
        Index("ix_inbox_received_at", "received_at"),
    )


@dataclass(frozen=True)
class BusTables:
    outbox: Table
    inbox: Table


def bus_tables(metadata: MetaData) -> BusTables:
    """Add the outbox and inbox to a service's metadata (its migrations then create them)."""
    return BusTables(outbox=outbox_table(metadata), inbox=inbox_table(metadata))


def create_retention_indexes(op: Any) -> None:
    """Migration step shared by every service: the indexes the bus retention deletes walk, and the
    one the relay counts parked rows with."""
    op.create_index(
        "ix_outbox_sent_at", "outbox", ["sent_at"], postgresql_where=text("status IN ('sent', 'unroutable')")
    )
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"])
    op.create_index("ix_outbox_parked", "outbox", ["id"], postgresql_where=text("status = 'parked'"))


def drop_retention_indexes(op: Any) -> None:
    op.drop_index("ix_outbox_parked", table_name="outbox")
    op.drop_index("ix_inbox_received_at", table_name="inbox")
    op.drop_index("ix_outbox_sent_at", table_name="outbox")
