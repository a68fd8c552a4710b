from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


class MessageView(BaseModel):
    """One entry of a member's send log (contracts.md, operator API)."""

    send_id: str
    rule: str | None
    campaign_id: uuid.UUID | None
    kind: str
    channel: str | None
    status: str
    reason: str | None
    errcode: int | None
    template_id: str | None
    page: str | None
    attempts: int
    created_at: datetime
    due_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    ordered_at: datetime | None
    order_id: str | None


class DeadLetter(BaseModel):
    id: str
    kind: str
    member_id: str
    rule: str | None
    campaign_id: uuid.UUID | None
    channel: str | None
    reason: str | None
    errcode: int | None
    attempts: int
    created_at: datetime
