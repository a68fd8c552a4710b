"""Deciding a message: which channel reaches the member, in one unit of work with its send row.

Channel choice walks the rule's channels in order (contracts.md: order messages go by the
mini-program's one-time subscribe message when authorised, else the service account's template
message when the member follows, else skipped with the reason) and spends what the chosen channel
needs (a one-time authorisation, a customer-service window message) in the same transaction as
the send row, so two deliveries of one event can never both spend it. Never two channels for one
message: the row holds exactly one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.notify.authorisations.repository import AuthorisationRepository
from services.notify.limits.service import QuietHours
from services.notify.members.repository import AppChannel, MemberRepository, WindowRepository
from services.notify.rules.service import Rendered, Rule
from services.notify.sends.repository import Send, SendRepository
from services.notify.templates.service import Channel, TemplateLibrary
from shared.uow import UnitOfWork
from shared.wechat.apps import AppKind

OA = AppKind.OFFICIAL_ACCOUNT.value
MP = AppKind.MINI_PROGRAM.value

SKIP_REASON = {
    Channel.OA_TEMPLATE: "not_following",
    Channel.MP_SUBSCRIBE: "no_authorisation",
    Channel.OA_SUBSCRIBE_NOTICE: "no_authorisation",
    Channel.CUSTOMER_SERVICE: "no_service_window",
}


@dataclass(frozen=True)
class Choice:
    channel: Channel
    app: AppChannel
    template_id: str | None


@dataclass(frozen=True)
class Decision:
    send_id: int | None  # None: this (event, rule, member) was decided before
    status: str
    channel: str | None
    reason: str | None


def choose(rule: Rule, apps: list[AppChannel], library: TemplateLibrary) -> Choice | str:
    """The first of the rule's channels that reaches the member, or the reason none does (no spending)."""
    reason = "no_channel"
    for channel in rule.channels:
        template = None if channel is Channel.CUSTOMER_SERVICE else library.find(channel, rule.template)
        for app in _apps_for(channel, apps):
            if template is not None and template.appid != app.appid:
                continue
            if channel is Channel.OA_TEMPLATE and app.following:
                return Choice(channel, app, template.template_id if template else None)
            if channel in (Channel.MP_SUBSCRIBE, Channel.OA_SUBSCRIBE_NOTICE) and (app.remaining > 0 or app.long_term):
                return Choice(channel, app, template.template_id if template else None)
            if channel is Channel.CUSTOMER_SERVICE and app.window_open:
                return Choice(channel, app, None)
        reason = SKIP_REASON[channel]
    return reason


def _apps_for(channel: Channel, apps: list[AppChannel]) -> list[AppChannel]:
    if channel is Channel.MP_SUBSCRIBE:
        return [a for a in apps if a.app_kind == MP]
    if channel is Channel.CUSTOMER_SERVICE:
        return sorted((a for a in apps if a.app_kind in (OA, MP)), key=lambda a: a.app_kind != OA)
    return [a for a in apps if a.app_kind == OA]


def template_ids(rule: Rule, library: TemplateLibrary) -> list[str]:
    return [t.template_id for c in rule.channels if (t := library.find(c, rule.template)) is not None]


class SendService:
    def __init__(self, uow: UnitOfWork, library: TemplateLibrary, quiet: QuietHours) -> None:
        self.sends = SendRepository(uow.conn)
        self.members = MemberRepository(uow.conn)
        self.authorisations = AuthorisationRepository(uow.conn)
        self.windows = WindowRepository(uow.conn)
        self.library = library
        self.quiet = quiet

    async def decide(
        self,
        rule: Rule,
        rendered: Rendered,
        member_id: str,
        now: datetime,
        *,
        campaign_id: uuid.UUID | None = None,
    ) -> Decision:
        send_id = await self.sends.insert(
            rendered.key,
            member_id,
            rule=rule.name if campaign_id is None else None,
            campaign_id=campaign_id,
            kind=rule.kind,
            due_at=now,
        )
        if send_id is None:
            return Decision(None, "duplicate", None, None)
        ids = template_ids(rule, self.library)
        authorised = False
        for _ in range(len(rule.channels)):
            choice = choose(rule, await self.members.channels(member_id, ids), self.library)
            if isinstance(choice, str):
                await self._record(send_id, None, rendered, "skipped", choice, False, None)
                return Decision(send_id, "skipped", None, choice)
            if await self._spend(choice):
                authorised = choice.channel in (Channel.MP_SUBSCRIBE, Channel.OA_SUBSCRIBE_NOTICE)
                break
            # Spent by a concurrent decision since it was read: read again, the next channel may do.
        else:
            await self._record(send_id, None, rendered, "skipped", "no_channel", False, None)
            return Decision(send_id, "skipped", None, "no_channel")
        status, reason, due = "pending", None, None
        if rule.kind == "marketing" and (end := self.quiet.ends_at(now)) is not None:
            status, reason, due = "deferred", "quiet_hours", end
        await self._record(send_id, choice, rendered, status, reason, authorised, due)
        return Decision(send_id, status, choice.channel.value, reason)

    async def _spend(self, choice: Choice) -> bool:
        """Take what the channel needs (one row lock each): False when a concurrent send took it first."""
        if choice.channel in (Channel.MP_SUBSCRIBE, Channel.OA_SUBSCRIBE_NOTICE):
            assert choice.template_id is not None
            return await self.authorisations.consume(choice.app.appid, choice.app.openid, choice.template_id)
        if choice.channel is Channel.CUSTOMER_SERVICE:
            return await self.windows.use(choice.app.appid, choice.app.openid)
        return True

    async def _record(
        self,
        send_id: int,
        choice: Choice | None,
        rendered: Rendered,
        status: str,
        reason: str | None,
        authorised: bool,
        due: datetime | None,
    ) -> None:
        data: dict[str, Any] = (
            {"text": rendered.text} if choice and choice.channel is Channel.CUSTOMER_SERVICE else dict(rendered.data)
        )
        await self.sends.decide(
            send_id,
            channel=choice.channel.value if choice else None,
            appid=choice.app.appid if choice else None,
            openid=choice.app.openid if choice else None,
            template_id=choice.template_id if choice else None,
            data=data,
            page=rendered.page,
            status=status,
            reason=reason,
            authorised=authorised,
            due_at=due,
        )

    async def release(self, send: Send | dict[str, object]) -> None:
        """Give back what a send spent when it ends without WeChat having taken it."""
        get = send.get if isinstance(send, dict) else lambda k: getattr(send, k)
        appid, openid, template_id = get("appid"), get("openid"), get("template_id")
        if not isinstance(appid, str) or not isinstance(openid, str):
            return
        if get("authorised") and isinstance(template_id, str):
            await self.authorisations.give_back(appid, openid, template_id)
        elif get("channel") == Channel.CUSTOMER_SERVICE.value:
            await self.windows.give_back(appid, openid)
