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
from tools.wechat_sandbox.errors import ERRMSGS as ERRMSGS
from tools.wechat_sandbox.errors import WeChatApiError as WeChatApiError
from tools.wechat_sandbox.kf import ServiceWindows
from tools.wechat_sandbox.oa import OfficialAccountBook
from tools.wechat_sandbox.shop_state import ShopBook

Clock = Callable[[], float]

TOKEN_TTL = 7200
# /cgi-bin/token: the replaced token keeps working this long. /stable_token: the platform mints the
# next token this long before the current one expires, so both are valid during the overlap.
TOKEN_OVERLAP = 300
STABLE_FORCE_REFRESH_PER_DAY = 20
STABLE_FORCE_REFRESH_MIN_GAP = 30
LOGIN_CODE_TTL = 300
# getPhoneNumber codes: "每个 code 只能使用一次，code 的有效期为 5min" (official getPhoneNumber doc).
PHONE_CODE_TTL = 300
PUSH_LOG_LIMIT = 10_000

_ID_ALPHABET = string.ascii_letters + string.digits + "_-"
_CODE_ALPHABET = string.ascii_letters + string.digits


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
        self._phones = random.Random(f"{seed}:phones")
        self._phone_codes = random.Random(f"{seed}:phone-codes")
        self._menus = random.Random(f"{seed}:menus")
        self._shop = random.Random(f"{seed}:shop")
        # The shop's own records (orders, gifts, after-sales, payments): a stream apart from the
        # raw-push ids above, so arbitrary /sandbox/shop/push calls do not shift them.
        self._shop_records = random.Random(f"{seed}:shop-records")
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

    def phone(self) -> str:
        """A mainland mobile number like the ones in WeChat's examples: 138 and eight digits."""
        return "138" + "".join(self._phones.choice(string.digits) for _ in range(8))

    def phone_code(self) -> str:
        # Like the getPhoneNumber doc's example code: 64 lower-case hex digits.
        return self._phone_codes.randbytes(32).hex()

    def menu_id(self) -> int:
        return self._menus.randint(400_000_000, 499_999_999)

    def shop_order_id(self) -> int:
        # WeChat Shop order ids are 19-digit numbers: exact in JSON, but past a double's 2^53.
        return self._shop.randint(3_700_000_000_000_000_000, 3_799_999_999_999_999_999)

    def shop_aftersale_id(self) -> int:
        return self._shop.randint(4_000_000_000_000_000_000, 4_099_999_999_999_999_999)

    def shop_record_id(self, prefix: int) -> str:
        """A 19-digit record id as a string: orders start 37, gifts (present orders) 42 like the
        docs' samples, after-sales 40 like the raw pushes'."""
        return str(self._shop_records.randint(prefix * 10**17, (prefix + 1) * 10**17 - 1))

    def shop_payment_digits(self, n: int) -> str:
        """Digits for prepay, transaction and waybill numbers."""
        return "".join(self._shop_records.choice(string.digits) for _ in range(n))

    def shop_catalog(self, appid: str) -> random.Random:
        """The stream a shop's seeded catalog draws its ids from: the same catalog on every run."""
        return random.Random(f"{self.seed}:shop-catalog:{appid}")

    def shop_system_openid(self, appid: str) -> str:
        """The fixed FromUserName of shop events that concern no buyer (product audits, coupons...)."""
        rng = random.Random(f"{self.seed}:shop-system:{appid}")
        return "o" + self._chars(rng, 27)


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
    openids: dict[str, str]
    # Apps whose APIs reveal the unionid: the apps bound to the Open Platform account, as this
    # user experiences them. Unbound at creation (unionid_bound=false) and bound later by
    # /sandbox/users/{id}/bind-unionid, for all apps or one.
    bound_apps: set[str] = field(default_factory=set)
    phone: str = ""
    country_code: str = "86"
    follows: dict[str, Follow] = field(default_factory=dict)
    session_keys: dict[str, str] = field(default_factory=dict)
    inbox: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unionid_bound(self) -> bool:
        """Every app reveals the unionid."""
        return all(appid in self.bound_apps for appid in self.openids)

    def unionid_visible(self, appid: str) -> bool:
        return appid in self.bound_apps

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
            "unionid_bound_apps": [appid for appid in self.openids if appid in self.bound_apps],
            "openids": dict(self.openids),
            "phone": self.phone,
            "country_code": self.country_code,
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


def wechat_day(ts: float) -> int:
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
        today = wechat_day(now)
        slot.force_refreshes = [t for t in slot.force_refreshes if wechat_day(t) == today]
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
    """A ``wx.login`` code or a getPhoneNumber button code: single use, 5 minutes, bound to its app."""

    code: str
    user_id: str
    appid: str
    expires_at: float
    used: bool = False
    issued_at: float = 0.0


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
        self._phone_codes: dict[str, LoginCode] = {}
        self.kf = ServiceWindows(clock)
        # Official-account state (user tags, menus), one book per account.
        self._books: dict[str, OfficialAccountBook] = {}
        # WeChat Shop state (catalog, orders, gifts, after-sales), one book per shop app.
        self._shops: dict[str, ShopBook] = {}
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

    def create_user(
        self,
        nickname: str | None = None,
        unionid_bound: bool = True,
        phone: str | None = None,
        country_code: str = "86",
    ) -> VirtualUser:
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
        if phone is None:
            # Drawn from its own stream whether or not a phone was given, so the n-th user's seeded
            # number does not depend on the users before it.
            taken_phones = {u.phone for u in self.users.values()}
            phone = self.ids.phone()
            while phone in taken_phones:  # pragma: no cover - 10^8 numbers
                phone = self.ids.phone()
        user = VirtualUser(
            user_id=f"u{n:04d}",
            nickname=nickname or f"Sandbox user {n}",
            unionid=unionid,
            openids=openids,
            bound_apps=set(openids) if unionid_bound else set(),
            phone=phone,
            country_code=country_code,
        )
        self.users[user.user_id] = user
        for appid, openid in openids.items():
            self._by_openid[(appid, openid)] = user
        return user

    def user(self, user_id: str) -> VirtualUser | None:
        return self.users.get(user_id)

    def user_by_openid(self, appid: str, openid: str) -> VirtualUser | None:
        return self._by_openid.get((appid, openid))

    def bind_unionid(self, user: VirtualUser, appid: str | None = None) -> None:
        """Bind the user's apps (or one app) to the Open Platform account: the unionid shows from now on."""
        if appid is None:
            user.bound_apps.update(user.openids)
        else:
            user.bound_apps.add(appid)

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
        # Unfollowing ends the customer-service window ("subscription is canceled") and, in the
        # sandbox, the user's tags on that account (WeChat's docs do not say what happens to them).
        self.kf.close(appid, user.user_id)
        self.book(appid).forget_user(user.user_id)

    # -- official-account books (tags, menus) -------------------------------------------------

    def book(self, appid: str) -> OfficialAccountBook:
        book = self._books.get(appid)
        if book is None:
            book = self._books[appid] = OfficialAccountBook(appid, self.ids)
        return book

    # -- WeChat Shop books --------------------------------------------------------------------

    def shop(self, appid: str) -> ShopBook:
        shop = self._shops.get(appid)
        if shop is None:
            shop = self._shops[appid] = ShopBook(appid, self.ids, self.clock)
        return shop

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

    # -- getPhoneNumber codes ------------------------------------------------------------------

    def issue_phone_code(self, user: VirtualUser, appid: str) -> LoginCode:
        now = self.now()
        for stale in [c for c, pc in self._phone_codes.items() if pc.expires_at + 86400 < now]:
            del self._phone_codes[stale]
        code = LoginCode(self.ids.phone_code(), user.user_id, appid, now + PHONE_CODE_TTL, issued_at=now)
        self._phone_codes[code.code] = code
        return code

    def redeem_phone_code(self, appid: str, code_value: Any, openid: Any = None) -> tuple[VirtualUser, LoginCode]:
        """Exchange a getPhoneNumber code: single use, 5 minutes, only by the app it was issued for.

        ``openid`` (optional in the request) must be the code's user, else 40003; the code stays unused.
        """
        if not code_value or not isinstance(code_value, str):
            raise WeChatApiError(41008)
        code = self._phone_codes.get(code_value)
        if code is None or code.appid != appid or self.now() >= code.expires_at:
            raise WeChatApiError(40029)
        if code.used:
            raise WeChatApiError(40163)
        user = self.users[code.user_id]
        if openid not in (None, "") and openid != user.openids.get(appid):
            raise WeChatApiError(40003)
        code.used = True
        return user, code

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
