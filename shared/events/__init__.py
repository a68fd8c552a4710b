"""Event schemas: the only thing services share about each other's events.

``registry`` maps every event type to its ``data`` model; WeChat pushes share one model under the
``wechat.`` prefix. ``make contracts`` exports each as JSON Schema.
"""

from __future__ import annotations

from typing import TypeVar

from shared.events.commerce import COMMERCE_EVENTS
from shared.events.envelope import Envelope, EventData
from shared.events.gateway import ReplyDeferred
from shared.events.identity import (
    FollowChanged,
    MemberLinked,
    MemberMerged,
    MemberRegistered,
    MemberTagsChanged,
    MemberUnmerged,
    PhoneBound,
)
from shared.events.notify import ReplyRulesPublished
from shared.events.wechat import WeChatPushReceived

DOMAIN_EVENTS: tuple[type[EventData], ...] = (
    MemberRegistered,
    MemberMerged,
    FollowChanged,
    ReplyDeferred,
    MemberLinked,
    MemberUnmerged,
    PhoneBound,
    MemberTagsChanged,
    ReplyRulesPublished,
    *COMMERCE_EVENTS,
)

registry: dict[str, type[EventData]] = {cls.event_type: cls for cls in DOMAIN_EVENTS}


E = TypeVar("E", bound=type[EventData])


def register(cls: E) -> E:
    """Make ``cls`` known to :func:`data_model` at run time (tests, tools); usable as a decorator.

    Not a contract: only ``DOMAIN_EVENTS`` is exported as JSON Schema. Registering a different
    class for a type that is already known is refused; the caller may ``registry.pop`` it again.
    """
    known = registry.get(cls.event_type)
    if known is not None and known is not cls:
        raise ValueError(f"{cls.event_type} is already registered to {known.__name__}")
    registry[cls.event_type] = cls
    return cls


def data_model(event_type: str) -> type[EventData] | None:
    if event_type.startswith("wechat."):
        return WeChatPushReceived
    return registry.get(event_type)


__all__ = [
    "COMMERCE_EVENTS",
    "DOMAIN_EVENTS",
    "Envelope",
    "EventData",
    "FollowChanged",
    "MemberLinked",
    "MemberMerged",
    "MemberRegistered",
    "MemberTagsChanged",
    "MemberUnmerged",
    "PhoneBound",
    "ReplyDeferred",
    "ReplyRulesPublished",
    "WeChatPushReceived",
    "data_model",
    "register",
    "registry",
]
