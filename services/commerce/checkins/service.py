"""Check-in: one per member per Beijing day (UTC+8, no daylight saving), a streak that continues from
yesterday, ``COMMERCE_CHECKIN_POINTS`` each day and ``COMMERCE_CHECKIN_STREAK_BONUS`` on every
``COMMERCE_CHECKIN_STREAK_DAYS``-th day of a streak. The points are available at once, as a lot."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from services.commerce.checkins.repository import CheckInRepository
from services.commerce.points.service import PointsService
from services.commerce.settings import CommerceSettings
from shared.errors import AlreadyCheckedIn
from shared.events.commerce import CheckedIn
from shared.uow import UnitOfWork

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


def beijing_day(at: datetime) -> date:
    return at.astimezone(BEIJING).date()


class CheckInService:
    def __init__(self, uow: UnitOfWork, settings: CommerceSettings, now: datetime) -> None:
        self.uow = uow
        self.repo = CheckInRepository(uow.conn)
        self.settings = settings
        self.now = now

    async def check_in(self, member_id: str) -> tuple[int, int]:
        """(points, streak); :class:`AlreadyCheckedIn` the second time in a Beijing day."""
        day = beijing_day(self.now)
        row = await self.repo.check_in(
            member_id,
            day,
            points=self.settings.checkin_points,
            bonus=self.settings.checkin_streak_bonus,
            every=self.settings.checkin_streak_days,
        )
        if row is None:
            raise AlreadyCheckedIn(f"already checked in on {day.isoformat()} (Beijing time)")
        points, streak = int(row["points"]), int(row["streak"])
        if points > 0:
            await PointsService(self.uow, self.settings, self.now).earn_available(
                member_id, points, rule="checkin", idem_key=f"checkin:{member_id}:{day.isoformat()}"
            )
        self.uow.publish(CheckedIn(member_id=member_id, day=day.isoformat(), streak=streak, points=points))
        return points, streak
