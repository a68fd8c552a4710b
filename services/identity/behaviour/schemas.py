"""Behaviour events as the mini-program sends them (through the gateway)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator

from services.identity.members.schemas import APPID, Body

OBJECT_ID = r"^[A-Za-z0-9_.:\-]{1,64}$"
MAX_EVENTS_PER_CALL = 50
EVENT_MAX_AGE = timedelta(days=30)
EVENT_MAX_SKEW = timedelta(minutes=5)


class BehaviourEventIn(Body):
    type: Literal["product_view", "add_to_cart", "share", "article_read"]
    object_id: str = Field(pattern=OBJECT_ID)
    occurred_at: AwareDatetime
    appid: str | None = Field(default=None, pattern=APPID)
    props: dict[str, str | int | bool] = Field(default_factory=dict, max_length=10)

    @field_validator("props")
    @classmethod
    def _bounded_props(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for key, value in v.items():
            if not (1 <= len(key) <= 32) or not key.replace("_", "").isalnum():
                raise ValueError("a props key is 1-32 letters, digits or _")
            if isinstance(value, str) and len(value) > 256:
                raise ValueError("a props value has at most 256 characters")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                raise ValueError("a props number must fit in 53 bits")
        return v


class BehaviourBatch(Body):
    events: list[BehaviourEventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_CALL)


class BehaviourAccepted(BaseModel):
    member_id: str
    accepted: int
    duplicates: int
