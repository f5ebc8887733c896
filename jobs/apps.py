from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        # Start-up order: the job kinds register with jobs.runner when their modules are
        # imported, and those modules use every app's models, so they load once all apps are.
        from jobs import (  # noqa: F401
            backup,
            drill,
            lifecycle,
            locks,
            purge,
            replicate,
            restore,
            target_test,
        )
