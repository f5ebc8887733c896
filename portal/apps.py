from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"

    def ready(self) -> None:
        # Connects the receiver that revokes API tokens when a password changes.
        from portal.api import tokens  # noqa: F401
