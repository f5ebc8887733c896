from django.apps import AppConfig
from django.db.backends.signals import connection_created

from portal.private import private_sqlite_files


class PortalConfig(AppConfig):
    name = "portal"

    def ready(self) -> None:
        connection_created.connect(private_sqlite_files, dispatch_uid="portal-private-sqlite")
        # Connects the receiver that revokes API tokens when a password changes; imported
        # here because it imports models, which exist only once the app registry is ready.
        from portal import tokens  # noqa: F401
