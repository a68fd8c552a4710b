from shared.settings import service_settings_class

NotifySettings = service_settings_class("notify", 8003)
