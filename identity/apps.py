from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"
    verbose_name = "Identity: directories, group mappings"

    def ready(self) -> None:
        # Start-up order: the receivers use the audit log's and vaults' models, loaded once all
        # apps are. login_audit records sign-ins; receivers applies mappings to new vaults.
        from identity import login_audit, receivers  # noqa: F401
