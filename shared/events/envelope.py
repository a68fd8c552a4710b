"""The envelope every event travels in (contracts.md, "Events on the wire")."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class EventData(BaseModel):
    """Base of every event's ``data``. One subclass per event type, one file per domain.

    Changes are additive; a breaking change is a new event type (or a new ``schema_version``
    that consumers opt into).
    """

    # A tolerant reader: a consumer still on the previous schema ignores fields a producer added,
    # instead of dead-lettering every event of that type (changes are additive by contract).
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){2,}$", max_length=200)
    schema_version: int = Field(ge=1)
    occurred_at: datetime
    producer: str
    correlation_id: str | None = None
    causation_id: str | None = None
    data: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        data: EventData,
        *,
        producer: str,
        event_type: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Envelope:
        return cls(
            event_id=event_id or uuid.uuid4(),
            type=event_type or data.event_type,
            schema_version=data.schema_version,
            occurred_at=datetime.now(UTC),
            producer=producer,
            correlation_id=correlation_id,
            causation_id=causation_id,
            data=data.model_dump(mode="json"),
        )
