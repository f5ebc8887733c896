"""A real vault for the lifecycle tests: ext4 images (`mkfs.ext4 -d`), backups run in-process,
real chunk stores. Each rule is exercised through the API and through the domain functions;
`ops` gives both the same vocabulary so a test asserts one outcome for both ways in.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from inventory.models import Disk, VirtualMachine
from jobs.backup_queue import TAKE_SNAPSHOT, TRANSFER, backup_now
from jobs.models import Operation
from jobs.runner import create_job
from tests import factories as f
from tests.api.clients import persona_client as client
from tests.backups.conftest import churn, make_ext4, needs_e2fsprogs, run
from vaults import lifecycle, stores
from vaults.models import Role
from vaults.protection import protect_vm, resume_protection, stop_protection, undelete, update_item
from vaults.rules import RuleBlocked
from vaults.services.policies import update_policy
from vaults.services.vaults import update_vault

__all__ = ["needs_e2fsprogs", "run", "churn", "client"]


@pytest.fixture(autouse=True)
def _quiet(settings, quiet_heartbeat):
    """Jobs run in this process; GC without a grace window."""
    settings.LIFEBOAT = {**settings.LIFEBOAT, "GC_GRACE_SECONDS": 0}


class Lab:
    """Vault `lc` (site admin owner; contributor, operator, reader), one host, VMs with ext4
    disks protected under `policy` (daily, 30 days)."""

    def __init__(self, root: Path):
        self.root = root
        self.admin = f.make_user("lc-admin", superuser=True)
        self.contributor = f.make_user("lc-contributor")
        self.operator = f.make_user("lc-operator")
        self.reader = f.make_user("lc-reader")
        self.vault = f.make_vault("lc", owner=self.admin)
        f.add_member(self.vault, self.contributor, Role.CONTRIBUTOR)
        f.add_member(self.vault, self.operator, Role.OPERATOR)
        f.add_member(self.vault, self.reader, Role.READER)
        self.host = f.make_host(root / "host", name="lc-host")
        self.vault.linked_hosts.add(self.host)
        self.policy = f.make_policy(self.vault, "Daily30", retention={"daily": {"days": 30}})
        self.items = {}

    def vm(self, name: str, *, copy_of: Path | None = None, mib: int = 16):
        vm = VirtualMachine.objects.create(name=name, host=self.host, power_state="stopped")
        path = Path(self.host.allowed_roots[0]) / f"{name}-lun-1.img"
        if copy_of is not None:
            shutil.copyfile(copy_of, path)
        else:
            make_ext4(path, mib)
        Disk.objects.create(vm=vm, lun=-1, path=str(path), size=path.stat().st_size)
        return vm

    def protect(self, name: str, *, copy_of: Path | None = None, policy=None):
        vm = self.vm(name, copy_of=copy_of)
        item = protect_vm(self.vault, by=self.admin, vm=vm, policy=policy or self.policy)
        self.items[name] = item
        return item

    def image(self, item) -> Path:
        return Path(item.vm.disks.get(lun=-1).path)

    def backup(self, item):
        """An on-demand backup (retain until +30 days), run to completion; the RP."""
        job = run(backup_now(item, by=self.admin))
        assert job.status == "completed", (job.error_code, job.error_message, job.warnings)
        return job.recovery_point

    def scheduled_backup(self, item, slot: datetime):
        """A scheduled backup of `slot` (retention judges the slot's day), run to completion."""
        job = create_job(
            operation=Operation.BACKUP,
            vault=item.vault,
            item=item,
            params={"slot": slot.isoformat()},
            subtasks=[TAKE_SNAPSHOT, TRANSFER],
        )
        job = run(job)
        assert job.status == "completed", (job.error_code, job.error_message, job.warnings)
        return job.recovery_point

    def vault_store(self):
        return stores.open_or_create_vault_store(self.vault)

    def snapshot_store(self):
        return stores.open_or_create_snapshot_store(self.vault, self.host)

    def chunk_files(self) -> int:
        return sum(1 for p in (Path(self.vault.store_path) / "chunks").rglob("*") if p.is_file())


@pytest.fixture
def lab(transactional_db, tmp_path):
    return Lab(tmp_path)


def item_url(name: str, item, action: str | None = None) -> str:
    vm = item.vm.name
    if action is None:
        return reverse("api-protected-item-detail", args=[item.vault.name, vm])
    return reverse(f"api-protected-item-{action}", args=[item.vault.name, vm])


class Outcome(tuple):
    """("ok",) | ("blocked", rule) | ("forbidden",) | ("invalid",)"""


def _api_outcome(r) -> tuple:
    if r.status_code in (200, 201, 202):
        return ("ok",)
    if r.status_code == 409:
        assert r.data["detail"] and r.data["rule"], r.data
        return ("blocked", r.data["rule"])
    if r.status_code == 403:
        return ("forbidden",)
    assert r.status_code == 400, (r.status_code, r.data)
    return ("invalid",)


def _domain_outcome(call) -> tuple:
    from django.core.exceptions import ValidationError

    try:
        call()
    except RuleBlocked as e:
        assert e.text and e.rule
        return ("blocked", e.rule)
    except PermissionDenied:
        return ("forbidden",)
    except ValidationError:
        return ("invalid",)
    return ("ok",)


class ApiOps:
    name = "api"

    def stop(self, item, user, mode):
        return _api_outcome(client(user).post(item_url("", item, "stop"), {"mode": mode}))

    def resume(self, item, user, policy=None):
        body = {"policy": policy.name} if policy is not None else {}
        return _api_outcome(client(user).post(item_url("", item, "resume"), body))

    def undelete(self, item, user):
        return _api_outcome(client(user).post(item_url("", item, "undelete"), {}))

    def purge_now(self, item, user):
        return _api_outcome(client(user).post(item_url("", item, "purge"), {}))

    def move(self, item, user, policy):
        return _api_outcome(client(user).patch(item_url("", item), {"policy": policy.name}))

    def edit_policy(self, policy, user, retention):
        url = reverse("api-policy-detail", args=[policy.vault.name, policy.name])
        return _api_outcome(client(user).patch(url, {"retention": retention}))

    def settings(self, vault, user, **changes):
        url = reverse("api-vault-detail", args=[vault.name])
        return _api_outcome(client(user).patch(url, changes))


class DomainOps:
    name = "domain"

    @staticmethod
    def _fresh(item):
        return type(item).objects.select_related("vault", "vm", "policy").get(pk=item.pk)

    def stop(self, item, user, mode):
        return _domain_outcome(lambda: stop_protection(self._fresh(item), by=user, mode=mode))

    def resume(self, item, user, policy=None):
        return _domain_outcome(lambda: resume_protection(self._fresh(item), by=user, policy=policy))

    def undelete(self, item, user):
        return _domain_outcome(lambda: undelete(self._fresh(item), by=user))

    def purge_now(self, item, user):
        return _domain_outcome(lambda: lifecycle.purge_now(self._fresh(item), by=user))

    def move(self, item, user, policy):
        return _domain_outcome(lambda: update_item(self._fresh(item), by=user, policy=policy))

    def edit_policy(self, policy, user, retention):
        from policies.models import BackupPolicy

        def call():
            fresh = BackupPolicy.objects.get(pk=policy.pk)
            update_policy(fresh, {**fresh.representation(), "retention": retention}, by=user)

        return _domain_outcome(call)

    def settings(self, vault, user, **changes):
        from vaults.models import Vault

        return _domain_outcome(
            lambda: update_vault(Vault.objects.get(pk=vault.pk), by=user, **changes)
        )


@pytest.fixture(params=["api", "domain"])
def ops(request):
    """The same operations through the REST API and through the domain functions."""
    return ApiOps() if request.param == "api" else DomainOps()
