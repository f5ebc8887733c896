from django.apps import AppConfig


class SecurityConfig(AppConfig):
    name = "security"
    verbose_name = "Security: MUA, keys, alerts, login"

    def ready(self) -> None:
        # Signal receivers only; nothing here touches the database.
        from security import alerts, lockout  # noqa: F401
