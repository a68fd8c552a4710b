"""``POST /internal/replies``: the gateway asks, under its budget, what to answer a push with."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from services.notify.replies.rules import ReplyRules
from shared.app import InternalOnly, runtime_of

router = APIRouter(prefix="/internal", dependencies=[InternalOnly], tags=["internal"])


class ReplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    appid: str = Field(max_length=32)
    openid: str = Field(max_length=64)
    trigger: Literal["text", "subscribe", "scan", "click"]
    text: str | None = Field(default=None, max_length=2048)
    scene: str | None = Field(default=None, max_length=128)
    key: str | None = Field(default=None, max_length=128)


class Reply(BaseModel):
    msgtype: Literal["text"] = "text"
    content: str


class ReplyAnswer(BaseModel):
    reply: Reply | None


def rules_of(request: Request) -> ReplyRules:
    rules: ReplyRules = runtime_of(request).deps.rules
    return rules


@router.post("/replies")
async def passive_reply(body: ReplyRequest, request: Request) -> ReplyAnswer:
    content = rules_of(request).reply_for(body.trigger, text=body.text, scene=body.scene, key=body.key)
    return ReplyAnswer(reply=Reply(content=content) if content else None)
