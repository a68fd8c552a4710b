"""access_token from ``/cgi-bin/stable_token``, cached and fetched single-flight.

Why stable_token and not ``/cgi-bin/token``: every ``/cgi-bin/token`` call invalidates the previous
token, so two processes (or a test environment, or a third-party tool) refreshing independently
knock each other out with 40001 — the most reported failure across the WeChat SDKs. stable_token
in normal mode (``force_refresh: false``) returns the *same* token to every caller while it is
valid, so per-process caching is safe without a distributed lock. It is also isolated from
``/cgi-bin/token``: someone else calling that does not invalidate ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx

from shared.observability import get_logger
from shared.wechat.apps import WeChatApp
from shared.wechat.errors import WeChatUnavailable, error_for, parse_errcode

log = get_logger(__name__)

STABLE_TOKEN_PATH = "/cgi-bin/stable_token"

# The platform rotates a stable token 5 min before it expires and answers with the remaining
# lifetime, so any token it returns has expires_in >= 300. Caching until expires_in - 300 makes us
# ask again exactly when WeChat has a new one. If an answer is shorter than the margin (clock
# skew, a sandbox), still cache for a while rather than fetching on every call.
_MIN_CACHE_SECONDS = 60.0


class StableTokenProvider:
    """One app's access token, shared by every coroutine of this process."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        app: WeChatApp,
        *,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._app = app
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._fresh_until = 0.0
        self._inflight: asyncio.Task[str] | None = None

    @property
    def appid(self) -> str:
        return self._app.appid

    async def get(self) -> str:
        """A valid token: the cached one, or one fetch shared by every concurrent caller."""
        if self._token is not None and self._clock() < self._fresh_until:
            return self._token
        if self._inflight is None:
            self._inflight = self._start(force=False)
        # shield: one caller being cancelled must not cancel the fetch the others are waiting on.
        return await asyncio.shield(self._inflight)

    async def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the cached one.

        Compare-and-delete: a call that started with an old token and fails after another caller
        already fetched a new one must not evict the new one (WxJava #1222/#1300).
        """
        if self._token is not None and self._token == token:
            self._token = None
            self._fresh_until = 0.0
            log.info("wechat.token.invalidated", appid=self._app.appid)

    async def force_refresh(self) -> str:
        """Make WeChat issue a new token and drop the old one. Operator action only (token leak).

        WeChat allows this 20 times a day, at least 30 s apart, and it invalidates the previous
        token for every process — never call it from an error path.
        """
        while self._inflight is not None:
            # Let a normal fetch land first, or it could store the token we are about to revoke.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._inflight)
        self._token = None
        self._inflight = self._start(force=True)
        return await asyncio.shield(self._inflight)

    def _start(self, *, force: bool) -> asyncio.Task[str]:
        task = asyncio.get_running_loop().create_task(self._fetch(force=force))
        task.add_done_callback(_consume_exception)
        return task

    async def _fetch(self, *, force: bool) -> str:
        try:
            token, expires_in = await self._request(force=force)
            ttl = max(expires_in - self._margin, min(expires_in / 2, _MIN_CACHE_SECONDS))
            self._token = token
            self._fresh_until = self._clock() + max(ttl, 0.0)
            log.info("wechat.token.fetched", appid=self._app.appid, expires_in=expires_in, forced=force)
            return token
        finally:
            # Cleared inside the task, before any waiter resumes, so a waiter that finds the
            # token unusable starts a new fetch instead of re-awaiting this finished one.
            if self._inflight is asyncio.current_task():
                self._inflight = None

    async def _request(self, *, force: bool) -> tuple[str, float]:
        payload = {
            "grant_type": "client_credential",
            "appid": self._app.appid,
            "secret": self._app.secret,
            "force_refresh": force,
        }
        try:
            response = await self._http.post(STABLE_TOKEN_PATH, json=payload)
        except httpx.TransportError as exc:
            raise WeChatUnavailable(f"WeChat {STABLE_TOKEN_PATH}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise WeChatUnavailable(f"WeChat {STABLE_TOKEN_PATH}: HTTP {response.status_code}")
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise WeChatUnavailable(f"WeChat {STABLE_TOKEN_PATH}: not a JSON object (HTTP {response.status_code})")
        errcode = parse_errcode(body.get("errcode"))
        if errcode is None:
            raise WeChatUnavailable(f"WeChat {STABLE_TOKEN_PATH}: malformed errcode")
        if errcode:
            message = str(body.get("errmsg") or "").replace(self._app.secret, "***")
            raise error_for(errcode, message, STABLE_TOKEN_PATH)
        token = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise WeChatUnavailable(f"WeChat {STABLE_TOKEN_PATH}: answer without access_token/expires_in")
        return token, float(expires_in)


def _consume_exception(task: asyncio.Task[str]) -> None:
    # If every waiter was cancelled nobody reads the error; mark it read so asyncio does not log
    # "Task exception was never retrieved" with a traceback.
    if not task.cancelled():
        task.exception()
