"""The customer-service window: when ``/cgi-bin/message/custom/send`` may reach a user.

A user's interaction with an app opens a grant for that (app, user): a number of messages the app may
send within a time limit. The official tables (research/shop.md §4.4):

| app | interaction | messages | valid for |
|---|---|---|---|
| service account | user sends a message | 5 | 48 hours |
| service account | menu click (click / scancode types) | 3 | 1 minute |
| service account | follow | 3 | 1 minute |
| service account | scan a QR code | 3 | 1 minute |
| mini-program | user sends a message | 5 | 48 hours |

(doc/service/api/customer/message/api_sendcustommessage; miniprogram/.../customer-message/send).
Outside every grant: 45015; inside one but with its quota spent: 45047.

What the docs leave open, and how the sandbox reads it: a new interaction of the same kind replaces
that kind's grant (quota and clock start afresh; quotas of one kind do not add up); grants of
different kinds coexist, and a message uses the live grant that expires first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.wechat_sandbox.errors import WeChatApiError


@dataclass(frozen=True)
class Scene:
    name: str
    quota: int
    ttl: float


MESSAGE = Scene("message", 5, 48 * 3600)
MENU_CLICK = Scene("menu_click", 3, 60)
FOLLOW = Scene("follow", 3, 60)
SCAN = Scene("scan", 3, 60)
SCENES = {s.name: s for s in (MESSAGE, MENU_CLICK, FOLLOW, SCAN)}


@dataclass
class Grant:
    scene: str
    opened_at: float
    expires_at: float
    quota: int
    used: int = 0

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "scene": self.scene,
            "opened_at": int(self.opened_at),
            "expires_in": max(0, int(self.expires_at - now)),
            "quota": self.quota,
            "used": self.used,
        }


@dataclass
class ServiceWindows:
    clock: Callable[[], float]
    _grants: dict[tuple[str, str], dict[str, Grant]] = field(default_factory=dict)

    def open(self, appid: str, user_id: str, scene: Scene) -> Grant:
        now = self.clock()
        grant = Grant(scene.name, now, now + scene.ttl, scene.quota)
        self._grants.setdefault((appid, user_id), {})[scene.name] = grant
        return grant

    def close(self, appid: str, user_id: str) -> None:
        self._grants.pop((appid, user_id), None)

    def live(self, appid: str, user_id: str) -> list[Grant]:
        now = self.clock()
        grants = self._grants.get((appid, user_id), {})
        for name in [n for n, g in grants.items() if now >= g.expires_at]:
            del grants[name]
        return sorted(grants.values(), key=lambda g: g.expires_at)

    def consume(self, appid: str, user_id: str) -> Grant:
        """Spend one message of the window, or raise 45015 (no window) / 45047 (quota spent)."""
        live = self.live(appid, user_id)
        if not live:
            raise WeChatApiError(45015)
        for grant in live:
            if grant.used < grant.quota:
                grant.used += 1
                return grant
        raise WeChatApiError(45047)

    def describe(self, appid: str, user_id: str) -> list[dict[str, Any]]:
        now = self.clock()
        return [g.describe(now) for g in self.live(appid, user_id)]
