"""ensure_demo_lab and `manage.py lab` against the database, with real images and writers."""

from __future__ import annotations

import os
import shutil
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from engine.connectors.hooks import validate_extension
from engine.connectors.image import probe_power_state, take_snapshot
from engine.connectors.reflink import ReflinkUnsupported
from engine.connectors.spec import DiskSpec, HookConfig, VMSpec
from inventory import demo
from inventory.lab import layout
from inventory.lab.ring import check_ring, ring_extents
from inventory.management.commands.lab import Command as LabCommand
from inventory.models import Disk, Host, VirtualMachine
from policies.models import BackupPolicy
from tests import factories as f
from tests.conftest import wait_until
from tests.lab.conftest import SMALL_MIB, fsck_clean, highest, ls, needs_e2fsprogs
from vaults.models import AuditEvent, ItemState, ProtectedVM, Vault

pytestmark = [needs_e2fsprogs, pytest.mark.django_db]


@pytest.fixture
def site_admin(db):
    return f.make_user("admin", superuser=True)


@pytest.fixture
def lab(site_admin):
    lines = demo.ensure_demo_lab(disk_mib=SMALL_MIB)
    assert lines and "demo-host" in lines[0]
    return demo.lab()


@pytest.fixture
def running_writers(lab, writers):
    """Writers for the running lab VMs, as `lab writers` would start them."""
    pids = {}
    for name in ("demo-app-01", "demo-db-01"):
        vm = VirtualMachine.objects.get(name=name)
        pids[name] = writers(lab, name, [d.path for d in vm.disks.all()])
    return pids


def spec(vm: VirtualMachine) -> VMSpec:
    return VMSpec(
        name=vm.name,
        declared_power_state=vm.power_state,
        probe_command=vm.power_probe_command,
        disks=tuple(DiskSpec(d.lun, Path(d.path)) for d in vm.disks.all()),
        hooks=HookConfig(
            pre_script=vm.pre_script,
            pre_script_params=tuple(vm.pre_script_params),
            post_script=vm.post_script,
            post_script_params=tuple(vm.post_script_params),
            script_timeout=vm.script_timeout,
            script_retries=vm.script_retries,
            continue_on_failure=vm.continue_on_failure,
            freeze_enabled=vm.freeze_enabled,
            freeze_command=vm.freeze_command,
            thaw_command=vm.thaw_command,
            freeze_timeout=vm.freeze_timeout,
        ),
    )


def state() -> dict:
    """Everything ensure_demo_lab may touch, as comparable values."""
    return {
        "hosts": list(Host.objects.values()),
        "vms": list(VirtualMachine.objects.values()),
        "disks": list(Disk.objects.values()),
        "vaults": list(Vault.objects.values()),
        "policies": list(BackupPolicy.objects.values()),
        "items": list(ProtectedVM.objects.values()),
        "links": list(Vault.linked_hosts.through.objects.values()),
        "audit": AuditEvent.objects.count(),
    }


def files(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p): (p.stat().st_mtime_ns, p.stat().st_size, stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_seeds_host_vault_policies_and_three_protected_vms(lab, site_admin):
    host = Host.objects.get(name="demo-host")
    assert sorted(host.allowed_roots) == sorted([str(lab.disks), str(lab.restores)])
    assert host.snapshot_root == str(lab.snapshots)
    vault = Vault.objects.get(name="demo-vault")
    assert vault.linked_hosts.filter(pk=host.pk).exists()
    assert set(vault.policies.values_list("name", flat=True)) == {
        "DefaultPolicy",
        "Every4h",
        "WeeklySunday",
    }
    assert vault.policies.get(name="Every4h").kind == "enhanced"
    vms = {vm.name: vm for vm in VirtualMachine.objects.filter(host=host)}
    assert set(vms) == {"demo-app-01", "demo-db-01", "demo-old-01"}
    assert {n: sorted(d.lun for d in vm.disks.all()) for n, vm in vms.items()} == {
        "demo-app-01": [-1, 0],
        "demo-db-01": [-1, 0, 1],
        "demo-old-01": [-1],
    }
    assert {n: vm.power_state for n, vm in vms.items()} == {
        "demo-app-01": "running",
        "demo-db-01": "running",
        "demo-old-01": "stopped",
    }
    for vm in vms.values():
        item = ProtectedVM.objects.get(vm=vm)
        assert (item.vault, item.policy.name) == (vault, "DefaultPolicy")
        assert item.state == ItemState.INITIAL_BACKUP_PENDING
        status = validate_extension(spec(vm))
        assert status.ok, status.message
        for d in vm.disks.all():
            path = Path(d.path)
            assert host.allows(d.path) and d.size == path.stat().st_size
            assert (SMALL_MIB - 8) << 20 <= d.size <= 32 << 20
            fsck_clean(path)
            assert check_ring(path).ok
    assert "hostname" in ls(Path(vms["demo-app-01"].os_disk.path), "/etc")
    assert "table-0.dat" in ls(Path(vms["demo-db-01"].disks.get(lun=1).path), "/db")
    assert {n: probe_power_state(spec(vm)) for n, vm in vms.items()} == {
        "demo-app-01": "running",
        "demo-db-01": "running",
        "demo-old-01": "stopped",
    }
    for p in lab.scripts.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o700
    assert stat.S_IMODE(lab.scripts.stat().st_mode) == 0o700


def test_second_call_changes_nothing(lab):
    before, before_files = state(), files(lab.root)
    assert demo.ensure_demo_lab(disk_mib=SMALL_MIB) == []
    assert state() == before
    assert files(lab.root) == before_files


def test_respects_changes_and_repairs_what_is_missing(lab, site_admin):
    app = VirtualMachine.objects.get(name="demo-app-01")
    VirtualMachine.objects.filter(pk=app.pk).update(script_timeout=99)
    ProtectedVM.objects.filter(vm=app).update(state=ItemState.PROTECTION_STOPPED)
    image = Path(app.os_disk.path)
    image.unlink()
    (lab.scripts / "freeze.sh").write_text("#!/bin/sh\nexit 1\n")
    lines = demo.ensure_demo_lab(disk_mib=SMALL_MIB)
    assert any(image.name in line for line in lines)
    assert any("freeze.sh" in line for line in lines)
    fsck_clean(image)
    app.refresh_from_db()
    assert app.script_timeout == 99  # an administrator's edit survives
    assert ProtectedVM.objects.get(vm=app).state == ItemState.PROTECTION_STOPPED
    assert "kill -STOP" in (lab.scripts / "freeze.sh").read_text()


def test_needs_a_site_administrator(db):
    with pytest.raises(demo.DemoLabError, match="site administrator"):
        demo.ensure_demo_lab(disk_mib=SMALL_MIB)


def test_snapshots_give_application_file_system_and_crash(lab, running_writers, tmp_path):
    def frozen_read_only(src, dst):
        raise ReflinkUnsupported("test: read the images while frozen")

    outcomes = {}
    for vm in VirtualMachine.objects.filter(name__in=layout.LAB_VM_NAMES):
        if vm.power_state == "running":
            for d in vm.disks.all():
                wait_until(lambda d=d: highest(Path(d.path)) > 50)

        def capture(views):
            return [(v.lun, check_ring(v.path)) for v in views]

        outcomes[vm.name] = take_snapshot(
            spec(vm),
            crash_only=False,
            workdir=tmp_path / vm.name,
            capture=capture,
            clone=frozen_read_only,
        )
    assert {n: o.consistency for n, o in outcomes.items()} == {
        "demo-app-01": "application",
        "demo-db-01": "file_system",
        "demo-old-01": "crash",
    }
    for name, outcome in outcomes.items():
        for lun, report in outcome.result:
            assert report.ok, (name, lun, report.problems)
    app_log = "\n".join(outcomes["demo-app-01"].hook_log)
    assert f"writer {running_writers['demo-app-01']} paused" in app_log
    assert "application quiesced" in app_log and "application resumed" in app_log
    db_codes = [code for code, _ in outcomes["demo-db-01"].warnings]
    assert db_codes == ["pre_script_failed"]
    assert outcomes["demo-old-01"].method == "stopped"
    assert not any(lab.frozen(n) for n in layout.LAB_VM_NAMES)  # thaw cleaned up


def lab_cmd(*args) -> str:
    out = StringIO()
    call_command("lab", *args, stdout=out)
    return out.getvalue()


def test_stop_and_start_toggle_power_and_writer(lab, running_writers):
    pid = running_writers["demo-app-01"]
    out = lab_cmd("stop", "demo-app-01")
    assert f"writer {pid} stopped" in out
    vm = VirtualMachine.objects.get(name="demo-app-01")
    assert vm.power_state == "stopped" and lab.power(vm.name) == "stopped"
    assert lab.writer_pid(vm.name) is None
    assert probe_power_state(spec(vm)) == "stopped"
    assert check_ring(vm.os_disk.path).ok

    out = lab_cmd("start", "demo-app-01")  # no `lab writers` running: a detached writer
    new_pid = lab.writer_pid(vm.name)
    try:
        assert new_pid and new_pid != pid and "detached writer" in out
        vm.refresh_from_db()
        assert vm.power_state == "running" and probe_power_state(spec(vm)) == "running"
        before = highest(Path(vm.os_disk.path))
        wait_until(lambda: highest(Path(vm.os_disk.path)) > before)
        assert "already running" in lab_cmd("start", "demo-app-01")
    finally:
        assert f"writer {new_pid} stopped" in lab_cmd("stop", "demo-app-01")
    assert lab.writer_pid(vm.name) is None
    with pytest.raises(CommandError, match="no VM named"):
        lab_cmd("stop", "nope")


def test_churn_writes_files_with_the_writer_paused(lab, running_writers):
    out = lab_cmd("churn", "demo-db-01", "--mib", "0.5")
    assert f"writer {running_writers['demo-db-01']} paused" in out
    vm = VirtualMachine.objects.get(name="demo-db-01")
    for d in vm.disks.all():
        listing = ls(Path(d.path), "/churn")
        assert listing.count(".bin") == 2
        fsck_clean(Path(d.path))
    with lab.paused(vm.name):
        assert all(check_ring(d.path).ok for d in vm.disks.all())
    out = lab_cmd("churn")  # every lab VM, 1 MiB each
    assert "demo-old-01 (no writer running)" in out and out.count("wrote 4 file(s)") == 6


def test_status_and_check(lab, running_writers, tmp_path):
    out = lab_cmd("status")
    assert "demo-app-01" in out and f"writer {running_writers['demo-app-01']}" in out
    assert "not running" in out  # the supervisor
    assert "NOT" not in out and out.count("ok:") == 6
    app = VirtualMachine.objects.get(name="demo-app-01")
    copy = tmp_path / "copy.img"
    with lab.paused(app.name):
        shutil.copyfile(app.os_disk.path, copy)
    assert "ok:" in lab_cmd("check", str(copy))
    assert lab_cmd("check", "demo-old-01").count("ok:") == 1
    with open(copy, "r+b") as fh:  # tear one record of the ring
        fh.seek(ring_extents(copy)[0][0] + 9)
        fh.write(b"\xff\xff")
    with pytest.raises(CommandError, match="failed the ring check"):
        lab_cmd("check", str(copy))


def test_supervisor_follows_power_state(lab, writers):
    cmd = LabCommand(stdout=StringIO())
    cmd.lab = lab
    children, last_exit = {}, {}
    try:
        cmd._supervise(5000.0, children, last_exit)
        assert set(children) == {"demo-app-01", "demo-db-01"}
        assert all(lab.writer_pid(n) == p.pid for n, p in children.items())
        VirtualMachine.objects.filter(name="demo-app-01").update(power_state="stopped")
        VirtualMachine.objects.filter(name="demo-old-01").update(power_state="running")
        cmd._supervise(5000.0, children, last_exit)
        assert lab.writer_pid("demo-app-01") is None and lab.power("demo-app-01") == "stopped"
        assert lab.writer_pid("demo-old-01") is not None
        assert lab.power("demo-old-01") == "running"
    finally:
        for proc in children.values():
            proc.terminate()
            proc.wait(timeout=5)
    assert not os.path.exists(lab.pid_file("demo-db-01")) or lab.writer_pid("demo-db-01") is None


def test_attack_overwrites_and_renames_files_with_the_writer_paused(lab, running_writers):
    out = lab_cmd("attack", "demo-db-01", "--share", "0.5")
    assert f"writer {running_writers['demo-db-01']} resumed" in out
    assert "overwritten with random bytes and renamed *.locked" in out
    vm = VirtualMachine.objects.get(name="demo-db-01")
    for d in vm.disks.all():
        fsck_clean(Path(d.path))  # an attack leaves a consistent file system, as malware does
    with lab.paused(vm.name):
        assert all(check_ring(d.path).ok for d in vm.disks.all())  # the ring is spared
    data = next(d for d in vm.disks.all() if d.lun >= 0)
    listing = ls(Path(data.path), "/db")
    assert listing.count(".locked") == 3  # half of its six files, spread by path
    with pytest.raises(CommandError, match="--share"):
        lab_cmd("attack", "demo-db-01", "--share", "0")
