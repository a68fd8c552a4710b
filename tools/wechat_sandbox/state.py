"""What the sandbox remembers: virtual users, access tokens, login codes, pushes, faults, inboxes.

Everything lives in memory and is rebuilt from the seed on start. Nothing here does I/O, so the
rules (token lifetimes, single-use codes) can be read and tested without HTTP.
"""

from __future__ import annotations

import base64
import random
import string
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.wechat.apps import WeChatApp, WeChatApps

Clock = Callable[[], float]

TOKEN_TTL = 7200
# /cgi-bin/token: the replaced token keeps working this long. /stable_token: the platform mints the
# next token this long before the current one expires, so both are valid during the overlap.
TOKEN_OVERLAP = 300
STABLE_FORCE_REFRESH_PER_DAY = 20
STABLE_FORCE_REFRESH_MIN_GAP = 30
LOGIN_CODE_TTL = 300
PUSH_LOG_LIMIT = 10_000

_ID_ALPHABET = string.ascii_letters + string.digits + "_-"
_CODE_ALPHABET = string.ascii_letters + string.digits

# The errmsg WeChat sends with each errcode the sandbox can answer.
ERRMSGS: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40029: "invalid code",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    42001: "access_token expired",
    43002: "require POST method",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    47001: "data format error",
    48001: "api unauthorized",
}


class WeChatApiError(Exception):
    """An answer WeChat gives as HTTP 200 with ``{"errcode", "errmsg"}``."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSGS.get(errcode, "sandbox error")
        super().__init__(f"{self.errcode} {self.errmsg}")

    def body(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "errmsg": self.errmsg}


class SandboxIds:
    """Every generated id comes from here, one seeded stream per kind of id.

    Separate streams keep ids stable across unrelated activity: the third user created gets the
    same unionid whether or not tokens were fetched in between.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._users = random.Random(f"{seed}:users")
        self._tokens = random.Random(f"{seed}:tokens")
        self._codes = random.Random(f"{seed}:codes")
        self._pushes = random.Random(f"{seed}:pushes")
        # Real openids of one app share a leading run of characters; so do unionids of one
        # Open Platform account. Mimic that so ids look (and sort) like the real thing.
        self._unionid_prefix = self._chars(random.Random(f"{seed}:unionid-prefix"), 5)
        self._openid_prefixes: dict[str, str] = {}

    @staticmethod
    def _chars(rng: random.Random, n: int, alphabet: str = _ID_ALPHABET) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    def unionid(self) -> str:
        return "o" + self._unionid_prefix + self._chars(self._users, 22)

    def openid(self, appid: str) -> str:
        prefix = self._openid_prefixes.get(appid)
        if prefix is None:
            prefix = self._chars(random.Random(f"{self.seed}:openid-prefix:{appid}"), 5)
            self._openid_prefixes[appid] = prefix
        return "o" + prefix + self._chars(self._users, 22)

    def access_token(self) -> str:
        return f"{self._tokens.randint(70, 99)}_" + self._chars(self._tokens, 133)

    def login_code(self) -> str:
        return self._chars(self._codes, 32, _CODE_ALPHABET)

    def session_key(self) -> str:
        return base64.b64encode(self._codes.randbytes(16)).decode()

    def nonce(self) -> str:
        return str(self._pushes.randint(100_000_000, 9_999_999_999))

    def msg_id(self) -> int:
        return self._pushes.randint(10**18, 2**63 - 1)

    def qr_ticket(self) -> str:
        return "gQ" + self._chars(self._pushes, 94, _CODE_ALPHABET)


# --------------------------------------------------------------------------------------------
# Virtual users


@dataclass
class Follow:
    """A user's relation to one official account."""

    following: bool = False
    subscribe_time: int = 0
    subscribe_scene: str = ""
    qr_scene: int = 0
    qr_scene_str: str = ""


@dataclass
class VirtualUser:
    user_id: str
    nickname: str
    unionid: str
    unionid_bound: bool
    openids: dict[str, str]
    follows: dict[str, Follow] = field(default_factory=dict)
    session_keys: dict[str, str] = field(default_factory=dict)
    inbox: list[dict[str, Any]] = field(default_factory=list)

    def follow_of(self, appid: str) -> Follow:
        return self.follows.setdefault(appid, Follow())

    def is_following(self, appid: str) -> bool:
        f = self.follows.get(appid)
        return bool(f and f.following)

    def describe(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "nickname": self.nickname,
            "unionid": self.unionid,
            "unionid_bound": self.unionid_bound,
            "openids": dict(self.openids),
            "following": {appid: f.following for appid, f in self.follows.items()},
        }


# --------------------------------------------------------------------------------------------
# Access tokens


@dataclass
class IssuedToken:
    value: str
    appid: str
    source: str  # "token" | "stable"
    issued_at: float
    expires_at: float
    # Set when a newer token replaced this one: from then on it answers 40001, not 42001.
    revoked_at: float | None = None

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


@dataclass
class _StableSlot:
    current: IssuedToken | None = None
    force_refreshes: list[float] = field(default_factory=list)


def _wechat_day(ts: float) -> int:
    """Quotas reset at midnight Beijing time (UTC+8)."""
    return int((ts + 8 * 3600) // 86400)


class AccessTokens:
    """``/cgi-bin/token`` and ``/cgi-bin/stable_token``, two independent token families per app."""

    def __init__(self, ids: SandboxIds, clock: Clock) -> None:
        self._ids = ids
        self._clock = clock
        self._tokens: dict[str, IssuedToken] = {}
        self._latest: dict[str, IssuedToken] = {}  # appid -> newest /cgi-bin/token token
        self._stable: dict[str, _StableSlot] = {}

    def _mint(self, appid: str, source: str, now: float) -> IssuedToken:
        self._prune(now)
        token = IssuedToken(self._ids.access_token(), appid, source, now, now + TOKEN_TTL)
        self._tokens[token.value] = token
        return token

    def _prune(self, now: float) -> None:
        dead = [v for v, t in self._tokens.items() if t.expires_at + 86400 < now]
        for v in dead:
            del self._tokens[v]

    def issue(self, appid: str) -> IssuedToken:
        """``/cgi-bin/token``: every call mints a token and retires the previous one after 5 min."""
        now = self._clock()
        previous = self._latest.get(appid)
        if previous is not None and previous.revoked_at is None:
            previous.revoked_at = now + TOKEN_OVERLAP
        token = self._mint(appid, "token", now)
        self._latest[appid] = token
        return token

    def stable(self, appid: str, *, force_refresh: bool = False) -> IssuedToken:
        """``/cgi-bin/stable_token``: the same token while valid, renewed 5 min before expiry."""
        now = self._clock()
        slot = self._stable.setdefault(appid, _StableSlot())
        if force_refresh and self._may_force_refresh(slot, now):
            slot.force_refreshes.append(now)
            if slot.current is not None:
                # A forced refresh is for a leaked token: the old one dies at once, no overlap.
                slot.current.revoked_at = now
            slot.current = self._mint(appid, "stable", now)
            return slot.current
        # Otherwise (normal mode, or a force_refresh over its limits) behave as normal mode.
        current = slot.current
        if current is None or now >= current.expires_at - TOKEN_OVERLAP or current.revoked_at is not None:
            current = slot.current = self._mint(appid, "stable", now)
        return current

    @staticmethod
    def _may_force_refresh(slot: _StableSlot, now: float) -> bool:
        today = _wechat_day(now)
        slot.force_refreshes = [t for t in slot.force_refreshes if _wechat_day(t) == today]
        if len(slot.force_refreshes) >= STABLE_FORCE_REFRESH_PER_DAY:
            return False
        return not slot.force_refreshes or now - slot.force_refreshes[-1] >= STABLE_FORCE_REFRESH_MIN_GAP

    def check(self, value: str | None) -> IssuedToken:
        """The token behind an ``access_token`` query parameter, or the error WeChat would give."""
        if not value:
            raise WeChatApiError(41001)
        token = self._tokens.get(value)
        if token is None:
            raise WeChatApiError(40001)
        now = self._clock()
        if token.revoked_at is not None and now >= token.revoked_at:
            raise WeChatApiError(40001)
        if now >= token.expires_at:
            raise WeChatApiError(42001)
        return token


# --------------------------------------------------------------------------------------------
# wx.login codes


@dataclass
class LoginCode:
    code: str
    user_id: str
    appid: str
    expires_at: float
    used: bool = False


# --------------------------------------------------------------------------------------------
# Faults


@dataclass
class Fault:
    """A pending misbehaviour of one WeChat API path: an error answer, a delay, or both."""

    path: str
    errcode: int | None = None
    errmsg: str | None = None
    delay_ms: int = 0
    count: int = 1

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "errcode": self.errcode,
            "errmsg": self.errmsg,
            "delay_ms": self.delay_ms,
            "count": self.count,
        }


# --------------------------------------------------------------------------------------------
# The whole state


class SandboxState:
    def __init__(self, apps: WeChatApps, *, seed: int = 0, clock: Clock) -> None:
        self.apps = apps
        self.clock = clock
        self.ids = SandboxIds(seed)
        self.tokens = AccessTokens(self.ids, clock)
        self.users: dict[str, VirtualUser] = {}
        self._by_openid: dict[tuple[str, str], VirtualUser] = {}
        self._codes: dict[str, LoginCode] = {}
        self.pushes: deque[dict[str, Any]] = deque(maxlen=PUSH_LOG_LIMIT)
        self._push_seq = 0
        # WeChat API path -> pending faults, consumed first to last.
        self.faults: dict[str, list[Fault]] = {}

    def now(self) -> float:
        return self.clock()

    # -- apps ---------------------------------------------------------------------------------

    def app(self, appid: str | None) -> WeChatApp | None:
        return self.apps.get(appid) if appid else None

    def authenticate_app(self, appid: str | None, secret: str | None) -> WeChatApp:
        """The appid/secret check shared by /token, /stable_token and /sns/jscode2session."""
        if not appid:
            raise WeChatApiError(41002)
        app = self.apps.get(appid)
        if app is None:
            raise WeChatApiError(40013)
        if not secret:
            raise WeChatApiError(41004)
        if secret != app.secret:
            raise WeChatApiError(40125)
        return app

    # -- users --------------------------------------------------------------------------------

    def create_user(self, nickname: str | None = None, unionid_bound: bool = True) -> VirtualUser:
        n = len(self.users) + 1
        taken = {u.unionid for u in self.users.values()}
        unionid = self.ids.unionid()
        while unionid in taken:  # pragma: no cover - 22 random chars
            unionid = self.ids.unionid()
        openids: dict[str, str] = {}
        for app in self.apps.apps:
            openid = self.ids.openid(app.appid)
            while (app.appid, openid) in self._by_openid:  # pragma: no cover
                openid = self.ids.openid(app.appid)
            openids[app.appid] = openid
        user = VirtualUser(
            user_id=f"u{n:04d}",
            nickname=nickname or f"Sandbox user {n}",
            unionid=unionid,
            unionid_bound=unionid_bound,
            openids=openids,
        )
        self.users[user.user_id] = user
        for appid, openid in openids.items():
            self._by_openid[(appid, openid)] = user
        return user

    def user(self, user_id: str) -> VirtualUser | None:
        return self.users.get(user_id)

    def user_by_openid(self, appid: str, openid: str) -> VirtualUser | None:
        return self._by_openid.get((appid, openid))

    def deliver(self, user: VirtualUser, message: dict[str, Any]) -> dict[str, Any]:
        """Record a message WeChat showed the user (template, subscription notice, kf message...)."""
        entry = {"seq": len(user.inbox) + 1, "delivered_at": int(self.now()), **message}
        user.inbox.append(entry)
        return entry

    # -- follow state (official accounts) -----------------------------------------------------

    def follow(self, user: VirtualUser, appid: str, scene: str | None) -> Follow:
        f = user.follow_of(appid)
        f.following = True
        f.subscribe_time = int(self.now())
        if scene is None:
            f.subscribe_scene, f.qr_scene, f.qr_scene_str = "ADD_SCENE_SEARCH", 0, ""
        elif scene.isdigit() and 0 < int(scene) < 2**32:
            f.subscribe_scene, f.qr_scene, f.qr_scene_str = "ADD_SCENE_QR_CODE", int(scene), ""
        else:
            f.subscribe_scene, f.qr_scene, f.qr_scene_str = "ADD_SCENE_QR_CODE", 0, scene
        return f

    def unfollow(self, user: VirtualUser, appid: str) -> None:
        user.follow_of(appid).following = False

    # -- wx.login codes -----------------------------------------------------------------------

    def issue_login_code(self, user: VirtualUser, appid: str) -> LoginCode:
        now = self.now()
        for stale in [c for c, lc in self._codes.items() if lc.expires_at + 86400 < now]:
            del self._codes[stale]
        code = LoginCode(self.ids.login_code(), user.user_id, appid, now + LOGIN_CODE_TTL)
        self._codes[code.code] = code
        return code

    def redeem_login_code(self, app: WeChatApp, js_code: str | None) -> tuple[VirtualUser, str]:
        """Exchange a code for (user, session_key); single use, 5 minutes, bound to its app."""
        if not js_code:
            raise WeChatApiError(41008)
        code = self._codes.get(js_code)
        if code is None or code.appid != app.appid or self.now() >= code.expires_at:
            raise WeChatApiError(40029)
        if code.used:
            raise WeChatApiError(40163)
        code.used = True
        user = self.users[code.user_id]
        session_key = self.ids.session_key()
        user.session_keys[app.appid] = session_key
        return user, session_key

    # -- faults -------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        self.faults.setdefault(fault.path, []).append(fault)
        return fault

    def take_fault(self, path: str) -> Fault | None:
        pending = self.faults.get(path)
        if not pending:
            return None
        fault = pending[0]
        fault.count -= 1
        if fault.count <= 0:
            pending.pop(0)
            if not pending:
                del self.faults[path]
        return fault

    # -- push log -----------------------------------------------------------------------------

    def record_push(self, entry: dict[str, Any]) -> dict[str, Any]:
        self._push_seq += 1
        entry = {"seq": self._push_seq, **entry}
        self.pushes.append(entry)
        return entry
