from django.apps import AppConfig
from django.db.backends.signals import connection_created


class PortalConfig(AppConfig):
    name = "portal"

    def ready(self) -> None:
        from portal.private import private_sqlite_files

        connection_created.connect(private_sqlite_files, dispatch_uid="portal-private-sqlite")
        # Connects the receiver that revokes API tokens when a password changes.
        from portal.api import tokens  # noqa: F401
