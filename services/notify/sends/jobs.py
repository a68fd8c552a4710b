"""The sender: claims due sends, paces them under each (app, API)'s shared rate, calls WeChat after
the commit and records the outcome in a second unit of work.

Nothing is held across WeChat's call: a send is leased (``lease_until``), not locked, so a replica
that dies mid-call leaves a lease that expires and the send is claimed again. A template message
carries ``client_msg_id`` (WeChat delivers one message per openid + id within 10 minutes), so that
replay is not delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from services.notify.authorisations.repository import AuthorisationRepository
from services.notify.limits.repository import BudgetRepository, CapRepository, Permit
from services.notify.limits.service import CapService
from services.notify.members.repository import MemberRepository
from services.notify.sends.repository import Send, SendRepository
from services.notify.sends.service import SendService
from services.notify.settings import BIZSEND, CUSTOM_SEND, SUBSCRIBE_SEND, TEMPLATE_SEND
from services.notify.templates.service import Channel
from shared.db import is_transient
from shared.observability import get_logger
from shared.wechat.errors import (
    DailyQuotaExceeded,
    InvalidAccessToken,
    MinuteQuotaExceeded,
    RequireSubscribe,
    SystemBusy,
    UserRefusedMessage,
    WeChatAPIError,
    WeChatUnavailable,
)

if TYPE_CHECKING:
    from services.notify.deps import NotifyDeps

log = get_logger(__name__)

SENT = Counter("siyu_notify_sends_total", "Sends finished, by channel and outcome", ["channel", "outcome"])
SEND_SECONDS = Histogram("siyu_notify_send_seconds", "Decision to WeChat's answer", ["channel"])

RESLOTS = Counter("siyu_notify_send_reslots_total", "Pace slots given up by a sender that woke up late")
# After this many late wake-ups in a row the call goes anyway: the machine is too busy to do better.
MAX_RESLOTS = 5

API_OF = {
    Channel.OA_TEMPLATE.value: TEMPLATE_SEND,
    Channel.MP_SUBSCRIBE.value: SUBSCRIBE_SEND,
    Channel.OA_SUBSCRIBE_NOTICE.value: BIZSEND,
    Channel.CUSTOMER_SERVICE.value: CUSTOM_SEND,
}


def attributed_page(send: Send) -> str:
    """The jump target with its attribution: what it is about (in the rule's page) and this send."""
    page = send.page or ""
    extra = f"siyu_send={send.id}" + (f"&siyu_rule={send.rule}" if send.rule else "")
    return page + ("&" if "?" in page else "?") + extra


def wechat_body(send: Send, deps: NotifyDeps) -> dict[str, Any]:
    page = attributed_page(send)
    if send.channel == Channel.OA_TEMPLATE.value:
        body: dict[str, Any] = {
            "touser": send.openid,
            "template_id": send.template_id,
            "data": send.data,
            "client_msg_id": f"siyu-{send.id}",
        }
        if deps.mp_appid:
            body["miniprogram"] = {"appid": deps.mp_appid, "pagepath": page}
        return body
    if send.channel == Channel.MP_SUBSCRIBE.value:
        return {
            "touser": send.openid,
            "template_id": send.template_id,
            "page": page,
            "data": send.data,
            "miniprogram_state": deps.settings.miniprogram_state,
            "lang": "zh_CN",
        }
    if send.channel == Channel.OA_SUBSCRIBE_NOTICE.value:
        body = {"touser": send.openid, "template_id": send.template_id, "data": send.data}
        if deps.mp_appid:
            body["miniprogram"] = {"appid": deps.mp_appid, "pagepath": page}
        return body
    text = str(send.data.get("text") or "")
    if deps.mp_appid and send.appid != deps.mp_appid:
        # A text with a mini-program link: tapping it opens the page with its attribution.
        text += f'\n<a data-miniprogram-appid="{deps.mp_appid}" data-miniprogram-path="{page}">查看详情</a>'
    return {"touser": send.openid, "msgtype": "text", "text": {"content": text}}


class Sender:
    def __init__(self, deps: NotifyDeps) -> None:
        self.deps = deps
        self.s = deps.settings

    async def claim(self, limit: int) -> list[Send]:
        async with self.deps.db.connection() as conn:
            return await SendRepository(conn).claim(limit, self.deps.clock(), self.s.send_lease_seconds)

    async def sweep(self) -> int:
        async with self.deps.db.connection() as conn:
            return await SendRepository(conn).outcome_unknown(self.deps.clock())

    async def process(self, send: Send) -> str:
        """Send one claimed message; the outcome (for metrics and tests)."""
        deps = self.deps
        now = deps.clock()
        assert send.channel is not None and send.appid is not None
        if send.kind == "marketing" and not send.cap_counted:
            end = deps.quiet.ends_at(now)
            if end is not None:
                await self._reschedule(send, "deferred", "quiet_hours", end)
                return "deferred"
            assert send.lease_until is not None
            async with deps.db.unit_of_work() as uow:
                if not await SendRepository(uow.conn).cap_counted(send.id, send.lease_until):
                    return "lease_lost"
                if not await CapService(CapRepository(uow.conn), deps.caps).take(send.member_id, now):
                    await SendRepository(uow.conn).skipped(send.id, "cap_reached")
                    await SendService(uow, deps.library, deps.quiet).release(send)
                    return "cap_reached"
        api = API_OF[send.channel]
        # Marked as calling before the wait for the slot, so that nothing stands between the slot and
        # the call: a database round trip there (slow on a busy machine) bunched calls into WeChat's
        # second. A send refused its slot below is rescheduled, which clears the mark.
        assert send.lease_until is not None
        async with deps.db.connection() as conn:
            if not await SendRepository(conn).calling(
                send.id, send.lease_until, deps.clock(), self.s.send_lease_seconds
            ):
                return "lease_lost"  # another sender has it now: it decides
        permit = await self._slot(send.appid, api)
        if not permit.granted:
            until = permit.until or now + timedelta(seconds=60)
            await self._reschedule(send, "deferred", permit.reason or "quota_exhausted", until)
            return "quota"
        started = time.perf_counter()
        try:
            answer = await deps.wechat.call(send.appid, "POST", api, json=wechat_body(send, deps))
        except MinuteQuotaExceeded:
            async with deps.db.connection() as conn:
                until = await BudgetRepository(conn).pause_for(send.appid, api, self.s.minute_quota_backoff_seconds)
            await self._reschedule(send, "pending", "45011", until)
            return "45011"
        except DailyQuotaExceeded:
            async with deps.db.connection() as conn:
                until = await BudgetRepository(conn).pause_until_midnight(send.appid, api)
            await self._reschedule(send, "deferred", "45009", until)
            return "45009"
        except (SystemBusy, WeChatUnavailable, InvalidAccessToken) as exc:
            return await self._retry(send, exc)
        except WeChatAPIError as exc:
            await self._failed(send, exc)
            return "failed"
        SEND_SECONDS.labels(send.channel).observe(time.perf_counter() - started)
        msgid = answer.get("msgid")
        async with deps.db.connection() as conn:
            await SendRepository(conn).sent(send.id, str(msgid) if msgid is not None else None)
        SENT.labels(send.channel, "sent").inc()
        return "sent"

    async def _slot(self, appid: str, api: str) -> Permit:
        """Wait for this call's slot in the (app, API)'s pace.

        The pace holds only if each call leaves at its slot: one that wakes up late (a busy event
        loop) would land next to the following slots and could make L+1 in one of WeChat's
        seconds. So a call late by more than a quarter of the interval gives its slot up (the gap
        stays empty) and takes the next free one.
        """
        interval = 1.0 / (self.s.api_rates.get(api, 50) * self.s.rate_headroom)
        quota = self.s.daily_quotas.get(api, 10**9)
        loop = asyncio.get_running_loop()
        for _ in range(MAX_RESLOTS):
            async with self.deps.db.connection() as conn:
                permit = await BudgetRepository(conn).permit(appid, api, interval, quota)
            if not permit.granted:
                return permit
            target = loop.time() + permit.wait
            await asyncio.sleep(permit.wait)
            if loop.time() - target <= interval / 4:
                return permit
            RESLOTS.inc()
        return permit

    async def _reschedule(self, send: Send, status: str, reason: str, until: datetime, attempt: int = 0) -> None:
        async with self.deps.db.connection() as conn:
            await SendRepository(conn).reschedule(send.id, status, reason, until, attempt)

    async def _retry(self, send: Send, exc: Exception) -> str:
        errcode = getattr(exc, "errcode", None)
        reason = str(errcode) if errcode is not None else "timeout"
        if send.attempts + 1 >= self.s.send_max_attempts:
            async with self.deps.db.unit_of_work() as uow:
                await SendRepository(uow.conn).failed(send.id, reason, errcode, dead=True)
                # A timeout may have been delivered: only WeChat's -1 says it took nothing.
                if isinstance(exc, SystemBusy | InvalidAccessToken):
                    await SendService(uow, self.deps.library, self.deps.quiet).release(send)
            SENT.labels(send.channel or "?", "dead").inc()
            log.warning("send.dead", send_id=send.id, reason=reason)
            return "dead"
        delay = self.s.send_backoff_seconds * 2**send.attempts
        await self._reschedule(send, "pending", reason, self.deps.clock() + timedelta(seconds=delay), attempt=1)
        return "retry"

    async def _failed(self, send: Send, exc: WeChatAPIError) -> None:
        async with self.deps.db.unit_of_work() as uow:
            await SendRepository(uow.conn).failed(send.id, str(exc.errcode), exc.errcode)
            if isinstance(exc, UserRefusedMessage):
                # WeChat holds no authorisation for it: our ledger was wrong, now it is right.
                if send.template_id and send.openid:
                    await AuthorisationRepository(uow.conn).turn_off(send.appid or "", send.openid, send.template_id)
            else:
                await SendService(uow, self.deps.library, self.deps.quiet).release(send)
            if isinstance(exc, RequireSubscribe) and send.openid:
                await MemberRepository(uow.conn).not_following(send.appid or "", send.openid)
        SENT.labels(send.channel or "?", "failed").inc()
        log.info("send.failed", send_id=send.id, errcode=exc.errcode)


async def send_forever(deps: NotifyDeps) -> None:
    """Background job: keep up to ``NOTIFY_SENDER_CONCURRENCY`` sends in flight."""
    sender = Sender(deps)
    limit = deps.settings.sender_concurrency
    running: set[asyncio.Task[str]] = set()
    wake = asyncio.Event()

    def done(task: asyncio.Task[str]) -> None:
        running.discard(task)
        wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("send.crashed", error=repr(exc), transient=is_transient(exc))

    rounds = 0
    try:
        while True:
            rounds += 1
            if rounds % 100 == 1:
                try:
                    if unknown := await sender.sweep():
                        log.warning("sends.outcome_unknown", count=unknown)
                except Exception as exc:
                    log.warning("sender.sweep_failed", error=repr(exc))
            free = limit - len(running)
            claimed: list[Send] = []
            if free > 0:
                try:
                    claimed = await sender.claim(free)
                except Exception as exc:
                    log.warning("sender.claim_failed", error=repr(exc))
            for send in claimed:
                task = asyncio.create_task(sender.process(send))
                running.add(task)
                task.add_done_callback(done)
            if claimed and len(claimed) == free:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=deps.settings.sender_poll_seconds)
                continue
            await asyncio.sleep(deps.settings.sender_poll_seconds)
    finally:
        for task in running:
            task.cancel()
