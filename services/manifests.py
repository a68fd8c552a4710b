"""Which services exist, their default ports, and what each consumes (for topology, the relay and ops).

Each consuming service's own ``subscriptions.py`` is its manifest; this module only collects them.
"""

from __future__ import annotations

from services.commerce.subscriptions import SUBSCRIPTIONS as COMMERCE
from services.gateway.subscriptions import SUBSCRIPTIONS as GATEWAY
from services.identity.subscriptions import SUBSCRIPTIONS as IDENTITY
from services.notify.subscriptions import SUBSCRIPTIONS as NOTIFY

SERVICES: dict[str, int] = {"gateway": 8000, "identity": 8001, "commerce": 8002, "notify": 8003}

CONSUMERS: dict[str, list[str]] = {
    "commerce": sorted(COMMERCE),
    "gateway": sorted(GATEWAY),
    "identity": sorted(IDENTITY),
    "notify": sorted(NOTIFY),
}


def consumed_types() -> frozenset[str]:
    """Every event type some service consumes: for these, "no queue bound" is a fault, not a shrug."""
    return frozenset(t for types in CONSUMERS.values() for t in types)
