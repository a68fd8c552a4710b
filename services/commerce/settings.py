from shared.settings import service_settings_class

CommerceSettings = service_settings_class("commerce", 8002)
