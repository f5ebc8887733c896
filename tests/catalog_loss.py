"""The Lifeboat server lost: what an operator re-registers after a fresh install (hosts, VMs
and their disks), kept aside before the database is dropped, and registered again after."""

from inventory.models import Disk, Host, VirtualMachine
from tests import factories as f


def inventory_of(vm: VirtualMachine) -> dict:
    """The VM, its host and its disks, as plain values that outlive the database."""
    host = vm.host
    return {
        "host": {
            "name": host.name,
            "snapshot_root": host.snapshot_root,
            "allowed_roots": host.allowed_roots,
        },
        "vm": vm.name,
        "disks": [(d.lun, d.path, d.size) for d in vm.disks.all()],
    }


def reregister(kept: dict):
    """A new site administrator and the inventory of `inventory_of` registered again."""
    admin = f.make_user("admin2", superuser=True)
    host = Host.objects.create(**kept["host"])
    vm = VirtualMachine.objects.create(name=kept["vm"], host=host, power_state="stopped")
    for lun, path, size in kept["disks"]:
        Disk.objects.create(vm=vm, lun=lun, path=path, size=size)
    return admin, host
