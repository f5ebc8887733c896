"""Chain breaks: each backup after one still restores the domain's disk exactly, says why it
read in full, and the chain after it is incremental again.

The libvirtd restart is safe here because every test that talks to libvirtd runs on one
xdist worker (the root conftest groups them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine.connectors import ConnectorError, SnapshotCancelled
from tests.kvm.conftest import REPO, MakeDomain, granules, qemu_io, virsh

MiB = 1 << 20


def _full(p, dom) -> None:
    qemu_io(dom, 0xAB, 1 * MiB, 64 << 10)
    first = p.back_up()
    assert first.view().change_detection == "full"


def test_destroy_and_start_keeps_the_chain(make_domain: MakeDomain, protect, tmp_path: Path):
    dom = make_domain()
    p = protect(dom)
    _full(p, dom)
    qemu_io(dom, 0x11, 5 * MiB, 64 << 10)
    dom.destroy()  # SIGTERM: QEMU stores the persistent bitmaps in the qcow2
    dom.start()
    qemu_io(dom, 0x22, 20 * MiB, 128 << 10)
    b = p.back_up()
    v = b.view()
    assert v.change_detection == "dirty_bitmap"
    assert granules(list(v.changed_extents)) == granules(
        [(5 * MiB, 64 << 10), (20 * MiB, 128 << 10)]
    )
    p.restore_and_compare(b, tmp_path)


def test_qemu_killed_starts_a_new_chain(make_domain: MakeDomain, protect, tmp_path: Path):
    dom = make_domain()
    p = protect(dom)
    _full(p, dom)
    old = p.parent_checkpoint
    qemu_io(dom, 0x33, 7 * MiB, 64 << 10)
    dom.kill_qemu()
    dom.start()
    b = p.back_up()
    v = b.view()
    assert v.change_reason in ("bitmap_inconsistent", "incremental_refused")
    assert v.change_detection == "full_read" and v.changed_extents is None
    assert b.disk().change_detection == "full-read"
    assert dom.checkpoints() == [b.outcome.checkpoint] and old not in dom.checkpoints()
    assert any("[chain]" in line for line in b.outcome.hook_log)
    p.restore_and_compare(b, tmp_path)
    qemu_io(dom, 0x44, 9 * MiB, 4096)
    again = p.back_up()
    assert again.view().change_detection == "dirty_bitmap"
    assert granules(list(again.view().changed_extents)) == granules([(9 * MiB, 4096)])
    p.restore_and_compare(again, tmp_path)


def test_checkpoint_deleted_behind_our_back(make_domain: MakeDomain, protect, tmp_path: Path):
    dom = make_domain()
    p = protect(dom)
    _full(p, dom)
    virsh("checkpoint-delete", dom.name, p.parent_checkpoint)
    qemu_io(dom, 0x55, 3 * MiB, 64 << 10)
    b = p.back_up()
    assert (b.view().change_detection, b.view().change_reason) == (
        "full_read",
        "checkpoint_missing",
    )
    p.restore_and_compare(b, tmp_path)
    qemu_io(dom, 0x56, 4 * MiB, 64 << 10)
    assert p.back_up().view().change_detection == "dirty_bitmap"


def test_disk_resized(make_domain: MakeDomain, protect, tmp_path: Path):
    dom = make_domain()
    p = protect(dom)
    _full(p, dom)
    virsh("blockresize", dom.name, "vda", "96M")
    qemu_io(dom, 0x66, 90 * MiB, 64 << 10)
    b = p.back_up()
    v = b.view()
    assert (v.change_detection, v.change_reason, v.size) == ("full_read", "disk_resized", 96 * MiB)
    p.restore_and_compare(b, tmp_path)
    assert p.back_up().view().change_detection == "dirty_bitmap"


def test_raw_disks_are_read_in_full(make_domain: MakeDomain, protect, tmp_path: Path):
    dom = make_domain([("vda", "qcow2", 64), ("vdb", "raw", 64)])
    p = protect(dom)
    qemu_io(dom, 0x77, 2 * MiB, 64 << 10, disk=1)
    first = p.back_up()
    assert first.view("vdb").change_reason == "raw_format"
    qemu_io(dom, 0x78, 6 * MiB, 64 << 10, disk=1)
    qemu_io(dom, 0x79, 6 * MiB, 64 << 10, disk=0)
    b = p.back_up()
    assert (b.view("vdb").change_detection, b.view("vdb").change_reason) == (
        "full_read",
        "raw_format",
    )
    assert b.view("vda").change_detection == "dirty_bitmap"
    p.restore_and_compare(b, tmp_path)


def test_domain_with_only_raw_disks_makes_no_checkpoint(
    make_domain: MakeDomain, protect, tmp_path: Path
):
    dom = make_domain([("vda", "raw", 64)])
    p = protect(dom)
    qemu_io(dom, 0x7A, 2 * MiB, 64 << 10)
    b = p.back_up()
    assert b.outcome.checkpoint is None and dom.checkpoints() == []
    assert (b.view().change_detection, b.view().change_reason) == ("full", "raw_format")
    p.restore_and_compare(b, tmp_path)


def test_shut_off_domain_is_read_offline_and_keeps_the_checkpoint(
    make_domain: MakeDomain, protect, tmp_path: Path
):
    dom = make_domain()
    p = protect(dom)
    _full(p, dom)
    cp = p.parent_checkpoint
    qemu_io(dom, 0x88, 11 * MiB, 64 << 10)
    dom.destroy()
    off = p.back_up()
    o = off.outcome
    assert (o.consistency, o.method, o.power_state, o.checkpoint) == (
        "crash",
        "stopped",
        "stopped",
        cp,
    )
    assert (off.view().change_detection, off.view().change_reason) == ("full_read", "offline")
    assert any("offline" in line for line in o.hook_log)
    p.restore_and_compare(off, tmp_path)
    dom.start()
    qemu_io(dom, 0x99, 12 * MiB, 64 << 10)
    b = p.back_up()
    # The bitmap still covers every write since the checkpoint, the offline one included.
    assert b.view().change_detection == "dirty_bitmap"
    assert granules(list(b.view().changed_extents)) == granules(
        [(11 * MiB, 64 << 10), (12 * MiB, 64 << 10)]
    )
    p.restore_and_compare(b, tmp_path)


def test_cancel_ends_the_backup_job(make_domain: MakeDomain, protect, tmp_path: Path):
    from engine.connectors import LibvirtConnector

    dom = make_domain()
    p = protect(dom)
    steps: list[str] = []

    def cancel() -> bool:
        steps.append("x")
        return len(steps) >= 4  # start, chain, freeze: then cancel before the job or capture

    with pytest.raises(SnapshotCancelled):
        LibvirtConnector().take_snapshot(
            p.vm("00000000-0000-0000-0000-000000000001"),
            crash_only=True,
            workdir=tmp_path / "work",
            capture=lambda views: pytest.fail("capture after cancel"),
            cancel=cancel,
        )
    assert "Job type:         None" in virsh("domjobinfo", dom.name).stdout
    assert not list((tmp_path / "work").iterdir())
    # A capture that fails ends the job too.
    with pytest.raises(ConnectorError, match="boom"):

        def boom(views):
            raise ConnectorError("boom", "capture failed")

        LibvirtConnector().take_snapshot(
            p.vm("00000000-0000-0000-0000-000000000002"),
            crash_only=True,
            workdir=tmp_path / "work",
            capture=boom,
        )
    assert "Job type:         None" in virsh("domjobinfo", dom.name).stdout
    assert not list((tmp_path / "work").iterdir())


def test_checkpoint_of_a_failed_backup_is_pruned(make_domain: MakeDomain, protect, tmp_path):
    from engine.connectors import LibvirtConnector

    dom = make_domain()
    p = protect(dom)
    _full(p, dom)
    good = p.parent_checkpoint
    qemu_io(dom, 0x5A, 8 * MiB, 64 << 10)

    def fail(views):
        raise RuntimeError("store unreachable")

    with pytest.raises(RuntimeError):
        LibvirtConnector().take_snapshot(
            p.vm("00000000-0000-0000-0000-000000000004"),
            crash_only=True,
            workdir=tmp_path / "work",
            capture=fail,
        )
    assert len(dom.checkpoints()) == 2  # the failed backup's checkpoint is left behind
    qemu_io(dom, 0x5B, 9 * MiB, 64 << 10)
    b = p.back_up()
    assert sorted(dom.checkpoints()) == sorted([good, b.outcome.checkpoint])
    assert b.view().change_detection == "dirty_bitmap"
    assert granules(list(b.view().changed_extents)) == granules(
        [(8 * MiB, 64 << 10), (9 * MiB, 64 << 10)]
    )
    p.restore_and_compare(b, tmp_path)


def _restart_libvirtd() -> None:
    """Stop libvirtd and start it again (scripts/kvm-host); running domains carry on."""
    script = REPO / "scripts" / "kvm-host"
    for step in ("stop", "start"):
        r = subprocess.run([str(script), step], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
    assert virsh("version").returncode == 0


def test_libvirtd_restarted_keeps_the_chain(make_domain: MakeDomain, protect, tmp_path: Path):
    if not (Path("/var/lib/lifeboat-kvm/libvirtd.pid")).exists():
        pytest.skip("libvirtd was not started by scripts/kvm-host, so it cannot restart it")
    dom = make_domain()
    p = protect(dom)
    _full(p, dom)
    qemu_io(dom, 0x55, 3 * MiB, 64 << 10)
    before = Path("/var/lib/lifeboat-kvm/libvirtd.pid").read_text()
    _restart_libvirtd()
    assert Path("/var/lib/lifeboat-kvm/libvirtd.pid").read_text() != before
    qemu_io(dom, 0x66, 30 * MiB, 64 << 10)
    b = p.back_up()
    v = b.view()
    assert v.change_detection == "dirty_bitmap", v.change_reason
    assert granules(list(v.changed_extents)) == granules(
        [(3 * MiB, 64 << 10), (30 * MiB, 64 << 10)]
    )
    p.restore_and_compare(b, tmp_path)


def test_a_backup_job_left_behind_is_ended(make_domain: MakeDomain, protect, tmp_path: Path):
    """A worker killed mid-backup leaves QEMU's pull-mode job running: the next backup ends
    it (ours: its socket is an nbd.sock in an nbd- folder) and goes on with the chain."""
    dom = make_domain()
    p = protect(dom)
    _full(p, dom)
    left = tmp_path / "nbd-left"
    left.mkdir()
    xml = tmp_path / "left.xml"
    xml.write_text(
        f"<domainbackup mode='pull'><server transport='unix' socket='{left}/nbd.sock'/>"
        f"<disks><disk name='vda' backup='yes' type='file'>"
        f"<scratch file='{left}/vda.scratch.qcow2'/></disk></disks></domainbackup>"
    )
    virsh("backup-begin", dom.name, str(xml))
    qemu_io(dom, 0x77, 12 * MiB, 64 << 10)
    b = p.back_up()
    assert any("ended a backup job left behind" in line for line in b.outcome.hook_log)
    assert b.view().change_detection == "dirty_bitmap"
    p.restore_and_compare(b, tmp_path)


def test_another_tools_backup_job_is_left_alone(make_domain: MakeDomain, protect, tmp_path):
    dom = make_domain()
    p = protect(dom)
    xml = tmp_path / "other.xml"
    xml.write_text(
        f"<domainbackup mode='pull'><server transport='unix' socket='{tmp_path}/other.sock'/>"
        f"<disks><disk name='vda' backup='yes' type='file'>"
        f"<scratch file='{tmp_path}/vda.scratch.qcow2'/></disk></disks></domainbackup>"
    )
    virsh("backup-begin", dom.name, str(xml))
    try:
        with pytest.raises(ConnectorError, match="another backup job"):
            p.back_up()
    finally:
        virsh("domjobabort", dom.name, check=False)
