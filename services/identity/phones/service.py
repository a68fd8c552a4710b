"""Phone binding policy.

A number held by another member is a 409, never a merge: two people can share a phone (family) and
carriers recycle numbers, so a phone is evidence for an operator, not proof. The same number again
is a no-op; a different number replaces the member's previous one (people change numbers).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.identity.members.repository import MemberRepository, PersonLocks, member_keys
from services.identity.phones.repository import PhoneRepository
from shared.errors import NotFound, PhoneTaken
from shared.events import PhoneBound
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class PhoneNumber:
    country_code: str
    national_number: str

    @property
    def e164(self) -> str:
        return f"+{self.country_code}{self.national_number}"

    @property
    def masked(self) -> str:
        """The only form that leaves identity (migration 0004 backfills stored rows with the same rule)."""
        n = self.national_number
        if len(n) >= 8:
            return f"{n[:3]}{'*' * (len(n) - 7)}{n[-4:]}"
        return f"{n[:1]}{'*' * max(len(n) - 3, 1)}{n[-2:]}"

    @classmethod
    def parse(cls, country_code: str, national_number: str) -> PhoneNumber:
        """Normalise WeChat's ``countryCode`` + ``purePhoneNumber`` into E.164 parts."""
        cc = str(country_code).strip().lstrip("+")
        nn = "".join(ch for ch in str(national_number) if not ch.isspace() and ch != "-")
        if not (cc.isdigit() and 1 <= len(cc) <= 3 and not cc.startswith("0")):
            raise ValueError(f"not a country calling code: {country_code!r}")
        if not (nn.isdigit() and 4 <= len(nn) <= 15 - len(cc)):
            raise ValueError("not a national phone number")
        return cls(cc, nn)


class PhoneService:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.phones = PhoneRepository(uow.conn)
        self.members = MemberRepository(uow.conn)
        self.locks = PersonLocks(uow.conn)

    async def bind(self, member_id: uuid.UUID, *, appid: str, number: PhoneNumber) -> bool:
        """Bind a verified number to a member; True when newly bound."""
        await self.locks.lock([f"phone:{number.e164}"])
        member = await self.members.live_member(member_id)
        if member is None:
            raise NotFound("no such member")
        await self.locks.lock(member_keys(member.id))
        holder = await self.phones.holder(number.e164)
        if holder is not None:
            owner = await self.members.live_member(holder)
            if owner is not None and owner.id == member.id:
                return False
            raise PhoneTaken(
                "this phone number is bound to another member; an operator can merge them if they are one person"
            )
        await self.phones.delete_of(member.id)
        await self.phones.insert(
            number.e164,
            member.id,
            country_code=number.country_code,
            national_number=number.national_number,
            masked=number.masked,
            appid=appid,
        )
        self.uow.publish(
            PhoneBound(member_id=str(member.id), phone_masked=number.masked, country_code=number.country_code)
        )
        return True
