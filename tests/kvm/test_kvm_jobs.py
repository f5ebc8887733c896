"""libvirt VMs through the product: discover a domain, back it up with jobs (a full, then an
incremental that reads only the dirty extents), restore its disks as qcow2, create a new
domain from the recovery point and replace the disks of the shut-off domain — each restored
disk compared with `qemu-img compare` to the domain's disk as it was backed up."""

import subprocess
from pathlib import Path

import pytest

from inventory.models import Connector, VirtualMachine
from inventory.services import discover_host
from jobs.backup_queue import backup_now
from jobs.models import Job, RestoreKind, RestoreTier, Status
from jobs.restore import request_restore
from tests import factories as f
from tests.backups.conftest import run
from tests.kvm.conftest import qemu_io, virsh
from vaults.models import RecoveryPoint
from vaults.protection import protect_vm

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1 << 20


def same_disk(a: Path, b: Path, fmt_a: str = "qcow2", fmt_b: str = "qcow2") -> bool:
    r = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
        capture_output=True,
        text=True,
    )
    return r.returncode == 0


def copy_of(disk: Path, label: str) -> Path:
    """The domain's disk as it is now (read with -U while QEMU runs)."""
    out = disk.with_name(f"{disk.stem}.{label}.qcow2")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", str(disk), str(out)], check=True)
    return out


@pytest.fixture
def kvm_world(libvirt_uri, make_domain, tmp_path, quiet_heartbeat):
    admin = f.make_user("kvm-admin", superuser=True)
    vault = f.make_vault(owner=admin)
    host = f.make_host(
        tmp_path / "host", "kvm-t", connector=Connector.LIBVIRT, libvirt_uri=libvirt_uri
    )
    vault.linked_hosts.add(host)
    domain = make_domain([("vda", "qcow2", 64)])
    # The test's disks live in tmp_path, inside no allowed root until this one is added.
    host.allowed_roots = [*host.allowed_roots, str(tmp_path)]
    host.save(update_fields=["allowed_roots"])
    result = discover_host(host, by=admin)
    vm = VirtualMachine.objects.get(domain_uuid=domain.uuid)
    assert vm in [e.vm for e in result.new] and vm.disks.get().target == "vda"
    item = protect_vm(vault, by=admin, vm=vm, policy=vault.policies.get())
    return admin, vault, host, domain, vm, item


def back_up(item, admin) -> Job:
    job = run(backup_now(item, by=admin))
    assert job.status in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS), (
        job.error_code,
        job.error_message,
    )
    return job


def test_a_libvirt_vm_backs_up_incrementally_and_restores_in_every_way(kvm_world, tmp_path):
    admin, vault, host, domain, vm, item = kvm_world
    disk = domain.disks["vda"]
    qemu_io(domain, 0xAB, 1 * MIB, 256 << 10)
    qemu_io(domain, 0xCD, 40 * MIB, 64 << 10)
    full = back_up(item, admin)
    first = copy_of(disk, "first")
    d = full.result["disks"][0]
    assert d["change_detection"] == "full" and d["target"] == "vda"
    rp1 = RecoveryPoint.objects.get(pk=full.result["recovery_point"])
    assert rp1.hypervisor["checkpoint"] == f"lifeboat-{rp1.pk}"
    assert "<domain" in rp1.hypervisor["domain_xml"]

    # 2 x 64 KiB written: the incremental reads only the 1 MiB chunks holding them.
    qemu_io(domain, 0x11, 10 * MIB, 64 << 10)
    qemu_io(domain, 0x22, 50 * MIB + 4096, 4096)
    inc = back_up(item, admin)
    second = copy_of(disk, "second")
    d = inc.result["disks"][0]
    assert d["change_detection"] == "dirty_bitmap" and d["change_reason"] == ""
    assert d["bytes_read"] <= 2 * MIB
    rp2 = RecoveryPoint.objects.get(pk=inc.result["recovery_point"])
    assert rp2.parent_id == rp1.pk
    # The chain's checkpoints: the parent's (pruned at the next backup) and the new one.
    assert sorted(domain.checkpoints()) == sorted([f"lifeboat-{rp1.pk}", f"lifeboat-{rp2.pk}"])

    # Restore disks (qcow2) of the first RP from the vault tier.
    out = tmp_path / "host" / "restores"
    job = run(
        request_restore(
            rp1,
            by=admin,
            kind=RestoreKind.RESTORE_DISKS,
            tier=RestoreTier.VAULT,
            target={"host": host.pk, "path": str(out)},
        )
    )
    assert job.status == Status.COMPLETED, (job.error_code, job.error_message)
    restored = Path(job.result["targets"]["-1"])
    assert restored.suffix == ".qcow2" and same_disk(restored, first)

    # Create a new domain from the second RP (snapshot tier) and start it.
    job = run(
        request_restore(
            rp2,
            by=admin,
            kind=RestoreKind.CREATE_VM,
            tier=RestoreTier.SNAPSHOT,
            target={"host": host.pk, "path": str(out), "name": "t-virt-restored", "start": True},
        )
    )
    try:
        assert job.status == Status.COMPLETED, (job.error_code, job.error_message)
        new_vm = VirtualMachine.objects.get(pk=job.result["new_vm"])
        assert new_vm.domain_uuid and new_vm.domain_uuid != domain.uuid
        assert virsh("domstate", "t-virt-restored").stdout.strip() == "running"
        new_disk = Path(new_vm.disks.get().path)
        assert new_vm.disks.get().format == "qcow2" and same_disk(new_disk, second)
    finally:
        virsh("destroy", "t-virt-restored", check=False)
        virsh("undefine", "t-virt-restored", "--checkpoints-metadata", check=False)

    # Replace the disks of the shut-off domain with the first RP; its checkpoints go, and
    # the next backup reads in full and compares hashes.
    domain.destroy()
    job = run(
        request_restore(rp1, by=admin, kind=RestoreKind.REPLACE_DISKS, tier=RestoreTier.VAULT)
    )
    assert job.status == Status.COMPLETED, (job.error_code, job.error_message)
    assert same_disk(disk, first)
    assert domain.checkpoints() == []
    # The safety RP holds what the guest saw before (read through qemu-nbd, not the file).
    safety = RecoveryPoint.objects.get(pk=job.result["safety_recovery_point"])
    job = run(
        request_restore(
            safety,
            by=admin,
            kind=RestoreKind.RESTORE_DISKS,
            target={"host": host.pk, "path": str(out)},
        )
    )
    assert job.status == Status.COMPLETED, (job.error_code, job.error_message)
    assert same_disk(Path(job.result["targets"]["-1"]), second)
    domain.start()
    after = back_up(item, admin)
    d = after.result["disks"][0]
    assert d["change_detection"] == "full_read" and d["change_reason"] == "domain_restored"
