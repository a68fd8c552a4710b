from shared.settings import service_settings_class

IdentitySettings = service_settings_class("identity", 8001)
