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
