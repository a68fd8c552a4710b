from shared.settings import service_settings_class

_Base = service_settings_class("commerce", 8002)


class CommerceSettings(_Base):  # type: ignore[valid-type,misc]
    """commerce's own knobs (``COMMERCE_*``), on top of the shared ones."""
