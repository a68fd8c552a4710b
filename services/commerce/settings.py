"""commerce's settings: the shared ``SIYU_*`` ones, ``SIYU_POINTS_PER_YUAN``, and its ``COMMERCE_*`` knobs
(each listed in services/commerce/README.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.settings import service_settings_class

_Base = service_settings_class("commerce", 8002)


class TierRule(BaseModel):
    """A tier: reached when rolling 12-month spend is at least ``min_spend_fen``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    min_spend_fen: int = Field(ge=0)
    multiplier_pct: int = Field(ge=100, le=1000, description="earn multiplier in percent; the base tier's is 100")


class CouponRule(BaseModel):
    """What a welcome, tier or abandoned-order coupon is worth and how long it lasts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=60)
    discount_fen: int = Field(gt=0)
    min_spend_fen: int = Field(default=0, ge=0)
    validity_days: int = Field(gt=0, le=366)
    # The shop coupon (``coupon_id`` of /channels/ec/coupon) this coupon is redeemed as, so the shop's
    # ``channels_ec_user_coupon_use`` push can mark it used.
    shop_coupon_id: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$")


DEFAULT_TIERS = (
    TierRule(name="base", min_spend_fen=0, multiplier_pct=100),
    TierRule(name="silver", min_spend_fen=100_000, multiplier_pct=120),
    TierRule(name="gold", min_spend_fen=500_000, multiplier_pct=150),
)


def _c(name: str) -> str:
    return f"COMMERCE_{name}"


class CommerceSettings(_Base):  # type: ignore[valid-type,misc]
    """commerce's own knobs (``COMMERCE_*``), on top of the shared ones."""

    # contracts.md "Messaging defaults": points per whole yuan paid, at the base tier.
    points_per_yuan: int = Field(default=1, ge=0, le=10_000, validation_alias="SIYU_POINTS_PER_YUAN")
    identity_url: str = Field(default="http://127.0.0.1:8001", validation_alias=_c("IDENTITY_URL"))

    # Points lots expire this long after they became available; members hear of it this far ahead.
    points_validity_days: int = Field(default=365, ge=1, validation_alias=_c("POINTS_VALIDITY_DAYS"))
    points_notice_days: int = Field(default=30, ge=0, validation_alias=_c("POINTS_NOTICE_DAYS"))

    # Tiers by rolling 12-month spend, lowest first; the first one must start at 0 fen.
    tiers: tuple[TierRule, ...] = Field(default=DEFAULT_TIERS, validation_alias=_c("TIERS"))
    tier_period_days: int = Field(default=365, ge=1, validation_alias=_c("TIER_PERIOD_DAYS"))

    checkin_points: int = Field(default=5, ge=0, validation_alias=_c("CHECKIN_POINTS"))
    checkin_streak_days: int = Field(default=7, ge=2, validation_alias=_c("CHECKIN_STREAK_DAYS"))
    checkin_streak_bonus: int = Field(default=20, ge=0, validation_alias=_c("CHECKIN_STREAK_BONUS"))

    welcome_coupon: CouponRule = Field(
        default=CouponRule(title="新人专享券", discount_fen=1000, min_spend_fen=5000, validity_days=30),
        validation_alias=_c("WELCOME_COUPON"),
    )
    tier_coupon: CouponRule = Field(
        default=CouponRule(title="会员升级礼券", discount_fen=2000, min_spend_fen=10000, validity_days=30),
        validation_alias=_c("TIER_COUPON"),
    )
    abandoned_coupon: CouponRule = Field(
        default=CouponRule(title="回来看看：下单立减", discount_fen=500, min_spend_fen=0, validity_days=7),
        validation_alias=_c("ABANDONED_COUPON"),
    )
    # At most one abandoned-order coupon per member in this many days (the claim limit).
    abandoned_coupon_every_days: int = Field(default=30, ge=1, validation_alias=_c("ABANDONED_COUPON_EVERY_DAYS"))

    # A gift not accepted this long after payment fails and is refunded (research/shop.md §2.1).
    gift_ttl_seconds: int = Field(default=86_400, ge=60, validation_alias=_c("GIFT_TTL_SECONDS"))

    # Periodic jobs (0 turns one off): the order reconcile walks order/list/get by update time;
    # housekeeping expires points, sends expiring notices, ends tier periods and checks gifts.
    reconcile_interval_seconds: float = Field(default=60, ge=0, validation_alias=_c("RECONCILE_INTERVAL_SECONDS"))
    reconcile_overlap_seconds: int = Field(default=300, ge=0, validation_alias=_c("RECONCILE_OVERLAP_SECONDS"))
    reconcile_first_window_seconds: int = Field(
        default=86_400, ge=60, le=7 * 86_400, validation_alias=_c("RECONCILE_FIRST_WINDOW_SECONDS")
    )
    housekeeping_interval_seconds: float = Field(default=60, ge=0, validation_alias=_c("HOUSEKEEPING_INTERVAL_SECONDS"))
    # A redemption still reserved this long after it started (its process died mid-way) is released.
    redemption_stale_seconds: int = Field(default=300, ge=10, validation_alias=_c("REDEMPTION_STALE_SECONDS"))

    # Retention (README.md, "Retention"): how often one replica prunes (0: never) and the horizons
    # (0: keep forever).
    retention_interval_seconds: float = Field(default=3600, ge=0, validation_alias=_c("RETENTION_INTERVAL_SECONDS"))
    vip_reservation_retention_days: int = Field(
        default=180, ge=0, validation_alias=_c("VIP_RESERVATION_RETENTION_DAYS")
    )
    checkins_retention_days: int = Field(default=400, ge=0, validation_alias=_c("CHECKINS_RETENTION_DAYS"))

    @field_validator("tiers")
    @classmethod
    def _tiers_ascend_from_zero(cls, tiers: tuple[TierRule, ...]) -> tuple[TierRule, ...]:
        if not tiers or tiers[0].min_spend_fen != 0 or tiers[0].multiplier_pct != 100:
            raise ValueError("the first tier must start at 0 fen with multiplier_pct 100 (the base tier)")
        spends = [t.min_spend_fen for t in tiers]
        if spends != sorted(set(spends)) or len({t.name for t in tiers}) != len(tiers):
            raise ValueError("tiers must have distinct names and strictly ascending min_spend_fen")
        return tiers

    def tier(self, name: str) -> TierRule:
        return next((t for t in self.tiers if t.name == name), self.tiers[0])

    def tier_for_spend(self, spend_fen: int) -> TierRule:
        return [t for t in self.tiers if t.min_spend_fen <= spend_fen][-1]

    def tier_rank(self, name: str) -> int:
        return next((i for i, t in enumerate(self.tiers) if t.name == name), 0)
