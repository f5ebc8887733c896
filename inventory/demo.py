"""The demo lab: a host, a vault and three protected VMs whose disks are real ext4 images.

``ensure_demo_lab()`` runs on every start (``manage.py bootstrap``) and is idempotent: it makes
what is missing and leaves everything else alone.

* Files under ``settings.LIFEBOAT["DEMO_ROOT"]``: ``disks/`` (images made with ``mkfs.ext4 -d``,
  each holding real files and the ring ``/lab/ring.dat``), ``restores/``, ``snapshots/``,
  ``scripts/`` (the hook scripts, 0700), ``run/`` (pid/power/lock files), ``logs/``.
  Missing images are remade; scripts are refreshed when their text changes.
* Rows: host ``demo-host`` (allowed roots: disks and restores), vault ``demo-vault`` (created
  by the first site administrator, linked to the host) with ``DefaultPolicy`` plus an
  enhanced ``Every4h`` and a standard ``WeeklySunday`` policy; VMs ``demo-app-01``,
  ``demo-db-01`` and ``demo-old-01`` (see ``inventory.lab.layout``), each protected in
  demo-vault with DefaultPolicy when it has never been protected anywhere.  Rows that exist
  are not changed, so an administrator's edits survive restarts (a vault that was deleted is
  made again, as is a lab VM).

The writers that make the running VMs "run" are started by ``manage.py lab writers``.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from inventory.lab import images, layout, scripts
from inventory.lab.control import Lab
from inventory.models import Disk, Host, VirtualMachine
from inventory.services import VmFields
from policies.models import BackupPolicy
from vaults.models import ProtectedVM, Vault
from vaults.protection import protect_vm
from vaults.services.hosts import link_host
from vaults.services.policies import create_policy
from vaults.services.vaults import create_vault

EXTRA_POLICIES = (
    {
        "name": "Every4h",
        "kind": "enhanced",
        "timezone": "UTC",
        "consistency": "default",
        "schedule": {
            "frequency": "hourly",
            "interval_hours": 4,
            "window_start": "08:00",
            "window_hours": 12,
        },
        "instant_restore_days": 7,
        "retention": {"daily": {"days": 30}, "weekly": {"weeks": 12, "weekdays": ["sun"]}},
    },
    {
        "name": "WeeklySunday",
        "kind": "standard",
        "timezone": "UTC",
        "consistency": "default",
        "schedule": {"frequency": "weekly", "time": "03:00", "weekdays": ["sun"]},
        "instant_restore_days": 5,
        "retention": {
            "weekly": {"weeks": 12, "weekdays": ["sun"]},
            "monthly": {"months": 12, "weeks": ["first"], "weekdays": ["sun"]},
        },
    },
)


class DemoLabError(RuntimeError):
    pass


def demo_root() -> Path:
    return Path(settings.LIFEBOAT["DEMO_ROOT"]).resolve()


def lab() -> Lab:
    return Lab(demo_root())


def image_path(lab_: Lab, vm: layout.LabVM, disk: layout.LabDisk) -> Path:
    return lab_.disks / vm.image_name(disk)


def _site_admin() -> User:
    admin = (
        get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    )
    if admin is None:
        raise DemoLabError(
            "the demo lab is seeded by a site administrator: create one first "
            "(manage.py bootstrap does)"
        )
    return admin


def _vm_fields(lab_: Lab, spec: layout.LabVM, paths: dict[str, Path]) -> VmFields:
    return {
        "os_type": "linux",
        "power_state": spec.power,
        "power_probe_command": scripts.command(paths["probe.sh"], spec.name),
        "pre_script": str(paths[spec.pre_script]),
        "pre_script_params": [spec.name],
        "post_script": str(paths[spec.post_script]),
        "post_script_params": [spec.name],
        "script_timeout": 30,
        "script_retries": 0,
        "continue_on_failure": True,
        "freeze_enabled": True,
        "freeze_command": scripts.command(paths["freeze.sh"], spec.name),
        "thaw_command": scripts.command(paths["thaw.sh"], spec.name),
        "freeze_timeout": 60,
    }


def ensure_demo_lab(*, disk_mib: int | None = None) -> list[str]:
    """Create whatever of the demo lab is missing; return lines to print (none if nothing).

    ``disk_mib`` caps every image's size (tests use small images).  Raises
    ``images.LabToolMissing`` when e2fsprogs (mkfs.ext4, debugfs, e2fsck) is not installed
    and ``DemoLabError`` when there is no site administrator yet.
    """
    images.require_tools()
    admin = _site_admin()
    lab_ = lab()
    lab_.make_dirs()
    paths, changed_scripts = scripts.write_scripts(lab_)
    made_images = _make_images(lab_, disk_mib)
    created: list[str] = []
    with transaction.atomic():
        host = _ensure_host(lab_, created)
        vault = _ensure_vault(admin, host, created)
        protected = _ensure_vms(lab_, paths, admin, host, vault, created)
    lines: list[str] = []
    if created or protected:
        lines = _summary(lab_, vault, created, protected)
    elif made_images:
        lines.append(f"Demo lab: remade missing disk image(s) {', '.join(made_images)}")
    if changed_scripts and not created:
        lines.append(f"Demo lab: refreshed hook scripts {', '.join(changed_scripts)}")
    return lines


def _make_images(lab_: Lab, disk_mib: int | None) -> list[str]:
    """Make the disk images that are missing; return their file names."""
    made = []
    for spec in layout.LAB_VMS:
        for disk in spec.disks:
            path = image_path(lab_, spec, disk)
            if not path.exists():
                size = min(disk.size_mib, disk_mib) if disk_mib else disk.size_mib
                images.make_image(
                    path, size, f"{spec.name[:11]}-{disk.tag}"[:16], layout.disk_files(spec, disk)
                )
                made.append(path.name)
    return made


def _ensure_host(lab_: Lab, created: list[str]) -> Host:
    host, host_created = Host.objects.get_or_create(
        name=layout.HOST,
        defaults={
            "snapshot_root": str(lab_.snapshots),
            "allowed_roots": [str(lab_.disks), str(lab_.restores)],
        },
    )
    if host_created:
        created.append(f"host {host.name}")
    return host


def _ensure_vault(admin: User, host: Host, created: list[str]) -> Vault:
    """The demo vault, linked to the host, with the extra policies."""
    vault = Vault.objects.filter(name=layout.VAULT).first()
    if vault is None:
        # Drilled daily, so the lab shows "verified <date>" on its latest recovery points.
        vault = create_vault(by=admin, name=layout.VAULT, drill_every_days=1)
        created.append(f"vault {vault.name}")
    if not vault.linked_hosts.filter(pk=host.pk).exists():
        link_host(vault, host, by=admin)
    for rep in EXTRA_POLICIES:
        if not vault.policies.filter(name=rep["name"]).exists():
            create_policy(vault, rep, by=admin)
            created.append(f"policy {rep['name']}")
    return vault


def _ensure_vms(
    lab_: Lab, paths: dict[str, Path], admin: User, host: Host, vault: Vault, created: list[str]
) -> list[str]:
    """The lab VMs with their disks, each protected with the default policy unless it ever
    was protected; return the names of those protected now."""
    default_policy = vault.policies.get(name=BackupPolicy.DEFAULT_NAME)
    protected = []
    for spec in layout.LAB_VMS:
        vm, vm_created = VirtualMachine.objects.get_or_create(
            name=spec.name, defaults={"host": host, **_vm_fields(lab_, spec, paths)}
        )
        if vm_created:
            created.append(f"VM {vm.name}")
            for disk in spec.disks:
                path = image_path(lab_, spec, disk)
                Disk.objects.create(vm=vm, lun=disk.lun, path=str(path), size=path.stat().st_size)
        if vm.host_id == host.pk and not ProtectedVM.objects.filter(vm=vm).exists():
            protect_vm(vault, by=admin, vm=vm, policy=default_policy)
            protected.append(vm.name)
        if lab_.power(vm.name) is None:
            lab_.set_power(vm.name, vm.power_state if vm.power_state != "unknown" else "running")
    return protected


def _summary(lab_: Lab, vault: Vault, created: list[str], protected: list[str]) -> list[str]:
    lines = [
        f"Demo lab under {lab_.root}: "
        + ", ".join(created or ["nothing new"])
        + (
            f"; protected {', '.join(protected)} in {vault.name} ({BackupPolicy.DEFAULT_NAME})"
            if protected
            else ""
        )
    ]
    for spec in layout.LAB_VMS:
        lines.append(f"  {spec.name:<12} {spec.power:<8} {len(spec.disks)} disk(s)  {spec.role}")
    lines.append(
        "  Running VMs write into their disks while `manage.py lab writers` runs; "
        "`manage.py lab churn|stop|start|status` drive the lab."
    )
    return lines
