"""Events published by the gateway besides the WeChat pushes themselves."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.events.envelope import EventData


class ReplyDeferred(EventData):
    """A push deserved a passive reply but notify did not answer within the gateway's budget.

    WeChat has already been told ``success``; notify sends the reply as a customer-service
    message instead (inside the user's 48-hour window).
    """

    event_type: ClassVar[str] = "gateway.reply.deferred"

    appid: str
    openid: str
    push_id: int
    trigger: str = Field(pattern="^(text|subscribe|scan|click)$")
    text: str | None = Field(default=None, max_length=2048)
    scene: str | None = None
    key: str | None = None
    reason: str
