"""Events published by notify."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.events.envelope import EventData
from shared.replies import ReplyRuleSet


class ReplyRulesPublished(EventData):
    """notify's passive-reply rules as they now stand, published when they change.

    The gateway keeps the newest set (by ``published_at``, notify's database clock) and answers
    pushes from it; ``version`` is the content's digest, so an unchanged set is never published again.
    """

    event_type: ClassVar[str] = "notify.reply_rules.published"

    version: str = Field(min_length=1, max_length=64)
    published_at: datetime
    rules: ReplyRuleSet
