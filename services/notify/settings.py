from pathlib import Path

from pydantic import Field, field_validator

from shared.settings import service_settings_class

_Base = service_settings_class("notify", 8003)
_ROOT = Path(__file__).resolve().parents[2]

# WeChat's message APIs, by the path notify calls.
TEMPLATE_SEND = "/cgi-bin/message/template/send"
SUBSCRIBE_SEND = "/cgi-bin/message/subscribe/send"
BIZSEND = "/cgi-bin/message/subscribe/bizsend"
CUSTOM_SEND = "/cgi-bin/message/custom/send"


class NotifySettings(_Base):  # type: ignore[valid-type,misc]
    """notify's own knobs (``NOTIFY_*``) and the brand's messaging defaults (``SIYU_*``, contracts.md)."""

    reply_rules_file: str = Field(
        default=str(_ROOT / "deploy" / "dev" / "reply-rules.yaml"), validation_alias="NOTIFY_REPLY_RULES_FILE"
    )
    message_rules_file: str = Field(
        default=str(_ROOT / "deploy" / "dev" / "message-rules.yaml"), validation_alias="NOTIFY_MESSAGE_RULES_FILE"
    )
    # How long start-up waits for WeChat's template library before starting without it (events then
    # wait in the queue and /ready says why until a background job has loaded it).
    templates_wait_seconds: float = Field(default=10, ge=0, validation_alias="NOTIFY_TEMPLATES_WAIT_SECONDS")
    marketing_cap_day: int = Field(default=1, ge=0, validation_alias="SIYU_MARKETING_CAP_DAY")
    marketing_cap_week: int = Field(default=3, ge=0, validation_alias="SIYU_MARKETING_CAP_WEEK")
    quiet_hours: str = Field(default="22:00-08:00", validation_alias="SIYU_QUIET_HOURS")
    abandoned_order_minutes: float = Field(default=30, gt=0, validation_alias="NOTIFY_ABANDONED_ORDER_MINUTES")
    funnel_order_window_hours: float = Field(default=72, gt=0, validation_alias="NOTIFY_FUNNEL_ORDER_WINDOW_HOURS")
    # Each WeChat message API's calls per second for one app (all replicas together), and the share
    # of it notify uses: a few percent under, so network jitter never lands L+1 calls in one second.
    api_rates: dict[str, float] = Field(
        default={TEMPLATE_SEND: 50, SUBSCRIBE_SEND: 50, BIZSEND: 50, CUSTOM_SEND: 50},
        validation_alias="NOTIFY_API_RATES",
    )
    rate_headroom: float = Field(default=0.97, gt=0, le=1, validation_alias="NOTIFY_RATE_HEADROOM")
    # Each API's daily quota per app (research/wechat.md §5, shop.md §4.5); reset at Beijing midnight.
    daily_quotas: dict[str, int] = Field(
        default={TEMPLATE_SEND: 100_000, SUBSCRIBE_SEND: 10_000_000, BIZSEND: 100_000, CUSTOM_SEND: 500_000},
        validation_alias="NOTIFY_DAILY_QUOTAS",
    )
    send_max_attempts: int = Field(default=5, ge=1, validation_alias="NOTIFY_SEND_MAX_ATTEMPTS")
    send_backoff_seconds: float = Field(default=2.0, gt=0, validation_alias="NOTIFY_SEND_BACKOFF_SECONDS")
    # 45011 says "retry next minute".
    minute_quota_backoff_seconds: float = Field(
        default=60, gt=0, validation_alias="NOTIFY_MINUTE_QUOTA_BACKOFF_SECONDS"
    )
    sender_concurrency: int = Field(default=32, ge=1, validation_alias="NOTIFY_SENDER_CONCURRENCY")
    sender_poll_seconds: float = Field(default=0.05, gt=0, validation_alias="NOTIFY_SENDER_POLL_SECONDS")
    send_lease_seconds: float = Field(default=30, gt=0, validation_alias="NOTIFY_SEND_LEASE_SECONDS")
    jobs_poll_seconds: float = Field(default=1.0, gt=0, validation_alias="NOTIFY_JOBS_POLL_SECONDS")
    miniprogram_state: str = Field(
        default="formal", pattern="^(developer|trial|formal)$", validation_alias="NOTIFY_MINIPROGRAM_STATE"
    )
    identity_url: str = Field(default="http://127.0.0.1:8001", validation_alias="NOTIFY_IDENTITY_URL")

    # Where commerce answers a member's points (a reply that needs data), and how long a reply may
    # wait for it: inside the gateway's reply budget (GATEWAY_REPLY_BUDGET_SECONDS, 1.5 s), so
    # notify can still say "defer" in time.
    commerce_url: str = Field(default="http://127.0.0.1:8002", validation_alias="NOTIFY_COMMERCE_URL")
    commerce_timeout_seconds: float = Field(
        default=0.8, validation_alias="NOTIFY_COMMERCE_TIMEOUT_SECONDS", gt=0, le=10
    )
    # A customer-service send that has not reported back after this long died with its process
    # (the WeChat client gives up well before): it is marked unknown, never sent again.
    delivery_stuck_seconds: int = Field(default=300, validation_alias="NOTIFY_DELIVERY_STUCK_SECONDS", ge=60)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, v: str) -> str:
        from services.notify.limits.service import QuietHours

        QuietHours.parse(v)  # raises ValueError naming the format
        return v
