"""What a member agreed to receive: the popup's answers (from the mini-program and from WeChat's
pushes) and later changes in the notification settings."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from services.notify.authorisations.repository import AuthorisationRepository
from services.notify.templates.service import TemplateLibrary
from shared.uow import UnitOfWork

Answer = Literal["accept", "reject", "ban"]


class AuthorisationService:
    def __init__(self, uow: UnitOfWork, library: TemplateLibrary) -> None:
        self.repo = AuthorisationRepository(uow.conn)
        self.library = library

    async def answer(
        self, appid: str, openid: str, template_id: str, answer: Answer, source: str, at: datetime
    ) -> None:
        template = self.library.by_id(appid, template_id)
        long_term = template is not None and template.long_term
        await self.repo.lock(appid, openid, template_id)
        if answer == "ban":
            await self.repo.turn_off(appid, openid, template_id)
        elif long_term:
            await self.repo.set_long_term(appid, openid, template_id, answer == "accept")
        elif answer == "accept" and await self.repo.record_grant(appid, openid, template_id, source, at):
            await self.repo.add_one(appid, openid, template_id)

    async def changed(self, appid: str, openid: str, template_id: str, accepted: bool) -> None:
        """subscribe_msg_change_event: the user switched a template on or off in their settings."""
        await self.repo.lock(appid, openid, template_id)
        if accepted:
            template = self.library.by_id(appid, template_id)
            if template is not None and template.long_term:
                await self.repo.set_long_term(appid, openid, template_id, True)
        else:
            await self.repo.turn_off(appid, openid, template_id)
