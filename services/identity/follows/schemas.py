"""Follow state and the changes it is made of (pure data; the rules are in service.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Change = Literal["subscribe", "scan", "unsubscribe"]

# Two changes at the same WeChat second (CreateTime has whole seconds) are ordered by this, so the
# outcome does not depend on which was handled first: an unsubscribe in the same second wins.
RANK: dict[str, int] = {"subscribe": 1, "scan": 2, "unsubscribe": 3}


@dataclass(frozen=True, slots=True)
class LoggedChange:
    change: str
    scene: str | None
    ticket: str | None
    at: datetime

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.at, RANK[self.change])


@dataclass(frozen=True, slots=True)
class FollowState:
    """One ``follows`` row's state, in the column order of follows/repository.py."""

    subscribed: bool = False
    subscribed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    first_subscribed_at: datetime | None = None
    subscribe_count: int = 0
    first_scene: str | None = None
    first_ticket: str | None = None
    first_scene_at: datetime | None = None
    last_scene: str | None = None
    last_ticket: str | None = None
    last_scene_at: datetime | None = None
    # WeChat time of the newest change applied: the state is the newest change's, whatever order
    # the changes are handled in.
    state_at: datetime | None = None
