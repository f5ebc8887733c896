from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"
    verbose_name = "Identity: directories, group mappings"

    def ready(self) -> None:
        # Start-up order: the receivers use the audit log's models, loaded once all apps are.
        from identity import login_audit  # noqa: F401
