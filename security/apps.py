from django.apps import AppConfig

from jobs.signals import job_finished


class SecurityConfig(AppConfig):
    name = "security"
    verbose_name = "Security: MUA, keys, alerts, login"

    def ready(self) -> None:
        # Start-up order: these modules use every app's models, so they load once all apps
        # are. alerts and lockout connect signal receivers; keys registers the update_key job.
        # logins audits sign-ins from a signal; second_factor asks approvers for a fresh code.
        from security import alerts, keys, lockout, logins, mua, second_factor  # noqa: F401

        mua.check_approvers_with("second_factor", second_factor.fresh_code_for_approval)
        job_finished.connect(alerts.on_job_finished, dispatch_uid="security.alerts.job_finished")
