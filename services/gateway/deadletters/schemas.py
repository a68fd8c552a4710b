"""A dead letter as the operator API shows it: one list, two kinds, each with a stable id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter


class DeadSend(BaseModel):
    """A message notify gave up on after its retries (WeChat kept failing)."""

    id: str = Field(description="`send-<n>`: redrive it by this id.")
    kind: Literal["send"] = "send"
    service: Literal["notify"] = "notify"
    member_id: str
    rule: str | None
    campaign_id: str | None
    channel: str | None
    reason: str | None
    errcode: int | None
    attempts: int
    created_at: datetime | None


class DeadEvent(BaseModel):
    """An event a consuming service could not handle: poison, or its retries used up."""

    id: str | None = Field(
        description="`event-<service>-<event_id>`: redrive it by this id; null when the letter carries no "
        "usable event id (redrive it with `siyuctl dlq redrive`)."
    )
    kind: Literal["event"] = "event"
    service: str = Field(description="The consuming service whose handler gave up.")
    event_id: str | None
    type: str | None = Field(description="The event type.")
    attempts: int | None = Field(description="Handler runs before it was given up on.")
    error: str | None = Field(description="Why the last run failed.")
    created_at: datetime | None = Field(description="When the event was published.")


DeadLetter = Annotated[DeadSend | DeadEvent, Field(discriminator="kind")]


class Redriven(BaseModel):
    id: str
    kind: Literal["send", "event"]
    status: Literal["redriven"] = "redriven"


NOTIFY_DEAD_SENDS = TypeAdapter(list[DeadSend])
DEAD_LETTERS = TypeAdapter(list[DeadLetter])
