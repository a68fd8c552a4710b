"""Bodies of the messaging routes and notify's answers (contracts.md; ``POST /api/v1/opens`` is
notify's proposed addition). Request bodies forbid unknown fields: the member is the session's."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator

from services.gateway.sessions.schemas import ApiRequest

TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEMPLATES = 3  # wx.requestSubscribeMessage asks for at most 3 templates at a time
MAX_PAGE = 1024


class SubscriptionsRequest(ApiRequest):
    results: dict[str, Literal["accept", "reject", "ban"]] = Field(
        min_length=1,
        max_length=MAX_TEMPLATES,
        description="What `wx.requestSubscribeMessage` returned: template id → accept | reject | ban "
        "(at most 3 templates, as WeChat asks at most 3 at a time).",
    )

    @field_validator("results")
    @classmethod
    def _template_ids(cls, results: dict[str, str]) -> dict[str, str]:
        if not all(TEMPLATE_ID.match(t) for t in results):
            raise ValueError("a template id is 1-64 letters, digits, _ or -")
        return results


class OpenRequest(ApiRequest):
    page: str = Field(
        min_length=1,
        max_length=MAX_PAGE,
        description="The page the mini-program opened from a message, with the query the message put on it "
        "(e.g. `pages/order/detail?order_id=…&siyu_send=…`).",
    )

    @field_validator("page")
    @classmethod
    def _one_printable_line(cls, page: str) -> str:
        if not page.isprintable() or any(c.isspace() for c in page):
            raise ValueError("page is a path with its query: printable, without spaces")
        return page


class OpenOut(BaseModel):
    attributed: bool = Field(description="Whether the page was a message's jump to this member, now counted as opened.")
    send_id: str | None = Field(default=None, description="The message that was opened; absent when not attributed.")
    rule: str | None = Field(default=None, description="The message rule it came from, if any.")
    campaign_id: str | None = Field(default=None, description="The campaign it came from, if any.")


OPEN = TypeAdapter(OpenOut)
