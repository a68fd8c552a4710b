"""Event schemas: the only thing services share about each other's events.

``registry`` maps every event type to its ``data`` model; WeChat pushes share one model under the
``wechat.`` prefix. ``make contracts`` exports each as JSON Schema.
"""

from __future__ import annotations

from shared.events.envelope import Envelope, EventData
from shared.events.identity import FollowChanged, MemberMerged, MemberRegistered
from shared.events.wechat import WeChatPushReceived

DOMAIN_EVENTS: tuple[type[EventData], ...] = (MemberRegistered, MemberMerged, FollowChanged)

registry: dict[str, type[EventData]] = {cls.event_type: cls for cls in DOMAIN_EVENTS}


def data_model(event_type: str) -> type[EventData] | None:
    if event_type.startswith("wechat."):
        return WeChatPushReceived
    return registry.get(event_type)


__all__ = [
    "DOMAIN_EVENTS",
    "Envelope",
    "EventData",
    "FollowChanged",
    "MemberMerged",
    "MemberRegistered",
    "WeChatPushReceived",
    "data_model",
    "registry",
]
