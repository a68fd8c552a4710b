from __future__ import annotations

from pydantic import Field, model_validator

from shared.settings import service_settings_class

_Base = service_settings_class("identity", 8001)


class IdentitySettings(_Base):  # type: ignore[misc,valid-type]
    """identity's settings: the shared ones plus the key that encrypts stored session keys."""

    # Key material for encryption at rest (session_key). Falls back to SIYU_SESSION_SECRET; a
    # dedicated key lets the two be rotated independently.
    data_key: str | None = Field(default=None, min_length=32, validation_alias="IDENTITY_DATA_KEY")

    # Rule-tag refresh and the WeChat tag mirror run this often (0 turns the schedule off).
    schedule_interval_seconds: int = Field(default=900, ge=0, validation_alias="IDENTITY_SCHEDULE_INTERVAL_SECONDS")

    # Retention (README.md, "Retention"): how long the raw logs are kept; the aggregates they fed
    # (follow rows, profile counters) are kept for good. 0 keeps a log for ever.
    follow_events_retention_days: int = Field(
        default=400, ge=0, validation_alias="IDENTITY_FOLLOW_EVENTS_RETENTION_DAYS"
    )
    behaviour_events_retention_days: int = Field(
        default=180, ge=0, validation_alias="IDENTITY_BEHAVIOUR_EVENTS_RETENTION_DAYS"
    )
    retention_interval_seconds: int = Field(default=3600, ge=0, validation_alias="IDENTITY_RETENTION_INTERVAL_SECONDS")

    @model_validator(mode="after")
    def _no_sample_data_key_in_prod(self) -> IdentitySettings:
        if self.env == "prod" and not self.data_key:
            # Falling back to SIYU_SESSION_SECRET in production would tie the two together: rotating
            # the session secret would make every stored session_key unreadable.
            raise ValueError("IDENTITY_DATA_KEY is required outside dev/test")
        if self.env == "prod" and self.data_key and "not-secret" in self.data_key:
            raise ValueError("IDENTITY_DATA_KEY still holds a sample development value")
        return self

    @property
    def data_key_value(self) -> str:
        return self.data_key or self.session_secret_value
