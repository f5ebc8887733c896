"""A real guest (kernel + initramfs + qemu-ga, tests.kvm.guests): freeze and thaw through the
agent, in-guest pre/post scripts with their codes, an agent that does not answer, and an ext4
written in the guest that is clean after restore."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import restore
from engine.connectors import HookFailed
from tests.kvm import guests
from tests.kvm.conftest import Domain, virsh

pytestmark = pytest.mark.slow


@pytest.fixture
def guest(running_guest: Callable[..., Any], libvirt_uri: str) -> Domain:
    g = running_guest(prefix="t-virt-")
    return Domain(g.name, g.uuid, {"vda": g.disk}, {"vda": g.fmt})


def _agent(dom: Domain, command: str) -> Any:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        return guests.kvm_guest.agent_command(conn.lookupByName(dom.name), command)
    finally:
        conn.close()


def _guest_exec(dom: Domain, *argv: str) -> None:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        r = guests.kvm_guest.guest_exec(conn.lookupByName(dom.name), argv[0], argv[1:])
    finally:
        conn.close()
    assert r.exitcode == 0, r.stderr


def _restored_ext4(p: Any, b: Any, tmp: Path) -> Path:
    out = tmp / f"restored-{b.rp_id[:8]}.raw"
    restore(p.store, b.rp_id, {b.view().lun: out})
    r = subprocess.run(["e2fsck", "-fn", str(out)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_freeze_and_thaw_give_file_system_consistency(guest: Domain, protect, tmp_path: Path):
    p = protect(guest)
    _guest_exec(guest, "/usr/local/bin/write-data.sh", "2")
    b = p.back_up()
    o = b.outcome
    assert (o.consistency, o.method, o.warnings) == ("file_system", "backup_job", [])
    assert 0 < o.freeze_seconds < 60
    assert any(line.startswith("[freeze] domainFSFreeze: 1") for line in o.hook_log)
    assert any(line.startswith("[thaw] domainFSThaw: 1") for line in o.hook_log)
    assert _agent(guest, "guest-fsfreeze-status") == "thawed"
    out = _restored_ext4(p, b, tmp_path)
    listing = subprocess.run(
        ["debugfs", "-R", "ls -l /", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "file-1" in listing and "hello.txt" in listing
    # The next backup of the guest is incremental and restores clean too.
    _guest_exec(guest, "/usr/local/bin/write-data.sh", "1")
    inc = p.back_up()
    assert inc.view().change_detection == "dirty_bitmap"
    assert (
        "file-2"
        in subprocess.run(
            ["debugfs", "-R", "ls -l /", str(_restored_ext4(p, inc, tmp_path))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_pre_script_in_the_guest_gives_application(guest: Domain, protect) -> None:
    p = protect(guest)
    b = p.back_up(
        pre_script="/usr/local/bin/pre-ok.sh",
        pre_script_params=["--db", "all"],
        post_script="/usr/local/bin/pre-ok.sh",
    )
    o = b.outcome
    assert (o.consistency, o.warnings) == ("application", [])
    assert any(line.startswith("[pre] /usr/local/bin/pre-ok.sh: exit 0") for line in o.hook_log)
    assert "[pre stdout] pre-ok" in o.hook_log
    assert any(line.startswith("[post] ") for line in o.hook_log)


def test_failing_pre_script_stops_or_warns(guest: Domain, protect, tmp_path: Path) -> None:
    p = protect(guest)
    with pytest.raises(HookFailed) as e:
        p.back_up(pre_script="/usr/local/bin/pre-fail.sh", continue_on_failure=False)
    assert e.value.code == "pre_script_failed"
    assert "exited with 3" in e.value.message and "refusing on purpose" in e.value.message
    assert any("[pre stderr] pre-fail" in line for line in e.value.hook_log)
    assert "Job type:         None" in virsh("domjobinfo", guest.name).stdout
    assert guest.checkpoints() == []

    b = p.back_up(pre_script="/usr/local/bin/pre-fail.sh", script_retries=1)
    o = b.outcome
    assert [w[0] for w in o.warnings] == ["pre_script_failed"]
    assert "on all 2 attempts" in o.warnings[0][1]
    assert o.consistency == "file_system"  # the freeze still held

    slow = p.back_up(pre_script="/usr/local/bin/slow.sh", script_timeout=1)
    assert [w[0] for w in slow.outcome.warnings] == ["pre_script_timeout"]


def test_agent_that_does_not_answer_gives_crash(guest: Domain, protect, tmp_path: Path):
    p = protect(guest)
    virsh("suspend", guest.name)  # QEMU runs, the guest does not: the agent cannot answer
    try:
        b = p.back_up(agent_timeout=2)
    finally:
        virsh("resume", guest.name)
    o = b.outcome
    assert (o.consistency, o.power_state) == ("crash", "running")
    assert [w[0] for w in o.warnings] == ["agent_unavailable"]
    assert o.freeze_seconds == 0.0
    # Not frozen: the restored ext4 may need its journal replayed, so only restore it.
    restore(p.store, b.rp_id, {b.view().lun: tmp_path / "crash.raw"})
    assert _agent(guest, "guest-ping") == {}
