from pydantic import Field

from shared.settings import ServiceSettings, service_settings_class

_Base = service_settings_class("gateway", 8000)


class GatewaySettings(_Base):  # type: ignore[valid-type,misc]
    """The gateway's own knobs (``GATEWAY_*``), on top of the shared ones."""

    max_body_bytes: int = Field(default=64 * 1024, validation_alias="GATEWAY_MAX_BODY_BYTES", ge=1024)


def gateway_settings(settings: ServiceSettings) -> GatewaySettings:
    assert isinstance(settings, GatewaySettings)
    return settings
