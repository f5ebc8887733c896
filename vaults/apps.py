from django.apps import AppConfig


class VaultsConfig(AppConfig):
    name = "vaults"

    def ready(self) -> None:
        # The gated operations register their MUA re-runs when their modules load; they load
        # here, once every model is ready, so `mua.approve` never meets an operation that a
        # process has not imported yet (a worker, a shell, a management command).
        # Space accounting follows every job that changes a store (the receiver imports the
        # engine and the job models, so it connects here, once the apps are loaded).
        from jobs.signals import job_finished
        from vaults import (
            accounting,
            protection,  # noqa: F401
        )
        from vaults.services import policies, vaults  # noqa: F401

        job_finished.connect(
            accounting.on_job_finished, dispatch_uid="vaults.accounting.job_finished"
        )
