from django.apps import AppConfig


class VaultsConfig(AppConfig):
    name = "vaults"

    def ready(self) -> None:
        # The gated operations register their MUA re-runs when their modules load; they load
        # here, once every model is ready, so `mua.approve` never meets an operation that a
        # process has not imported yet (a worker, a shell, a management command).
        from vaults import protection  # noqa: F401
        from vaults.services import policies, vaults  # noqa: F401
