"""What notify answers when the gateway asks it for a reply that needs data (``POST /internal/replies``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class NotifyReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    msgtype: Literal["text"] = "text"
    content: str


class NotifyAnswer(BaseModel):
    """``reply``: say this now. ``defer``: the data is not there in time; notify sends it later."""

    model_config = ConfigDict(extra="ignore")

    reply: NotifyReply | None  # required: an answer without it is not notify's
    defer: bool = False
