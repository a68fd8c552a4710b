from pathlib import Path

from pydantic import Field

from shared.settings import service_settings_class

_Base = service_settings_class("notify", 8003)
_ROOT = Path(__file__).resolve().parents[2]


class NotifySettings(_Base):  # type: ignore[valid-type,misc]
    """notify's own knobs (``NOTIFY_*``), on top of the shared ones."""

    reply_rules_file: str = Field(
        default=str(_ROOT / "deploy" / "dev" / "reply-rules.yaml"), validation_alias="NOTIFY_REPLY_RULES_FILE"
    )
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
