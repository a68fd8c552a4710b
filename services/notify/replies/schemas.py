"""``POST /internal/replies`` bodies, and commerce's answer for a member's points."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.replies import ReplyAsk, Trigger


class ReplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    appid: str = Field(max_length=32)
    openid: str = Field(min_length=1, max_length=64)
    trigger: Trigger
    text: str | None = Field(default=None, max_length=2048)
    scene: str | None = Field(default=None, max_length=128)
    key: str | None = Field(default=None, max_length=128)

    def ask(self) -> ReplyAsk:
        return ReplyAsk(trigger=self.trigger, text=self.text, scene=self.scene, key=self.key)


class Reply(BaseModel):
    msgtype: Literal["text"] = "text"
    content: str


class ReplyAnswer(BaseModel):
    """``reply``: answer this now (null: no reply). ``defer``: the data it needs is not there in
    time; the gateway answers the rule's pending text and notify sends the real reply later."""

    reply: Reply | None
    defer: bool = False


class PointsBalance(BaseModel):
    """commerce's ``GET /internal/members/by-openid/{appid}/{openid}/points``."""

    model_config = ConfigDict(extra="ignore")

    member_id: uuid.UUID
    available: int
    pending: int = 0
