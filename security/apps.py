from django.apps import AppConfig

from jobs.signals import job_finished


class SecurityConfig(AppConfig):
    name = "security"
    verbose_name = "Security: MUA, keys, alerts, login"

    def ready(self) -> None:
        # Start-up order: these modules use every app's models, so they load once all apps
        # are. alerts and lockout connect signal receivers; keys registers the update_key job.
        from security import alerts, keys, lockout  # noqa: F401

        job_finished.connect(alerts.on_job_finished, dispatch_uid="security.alerts.job_finished")
