"""The real guest the KVM tests back up: it boots under TCG, its agent answers, freezes its
ext4, runs the hook scripts with their exit codes and changes its disk on request."""

from __future__ import annotations

import json
import subprocess

import pytest

from inventory.lab import kvm_guest
from tests.kvm.guests import LIBVIRT_URI

pytestmark = pytest.mark.slow


def virsh(*args: str) -> str:
    r = subprocess.run(["virsh", "-c", LIBVIRT_URI, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_guest_boots_mounts_its_data_disk_and_the_agent_answers(running_guest):
    g = running_guest(files={"hello.txt": b"hello\n", "dir/two.txt": b"2"})
    text = g.console_text()
    assert kvm_guest.MOUNTED_MARK in text and kvm_guest.READY_MARK in text
    assert g.agent("guest-ping") == {}
    r = g.exec("/bin/cat", "/mnt/data/hello.txt", "/mnt/data/dir/two.txt")
    assert (r.exitcode, r.stdout) == (0, b"hello\n2")
    assert virsh("domstate", g.name) == "running"


def test_fsfreeze_and_thaw_the_data_disk(running_guest):
    g = running_guest()
    assert virsh("domfsfreeze", g.name) == "Froze 1 filesystem(s)"
    try:
        assert g.agent("guest-fsfreeze-status") == "frozen"
    finally:
        thawed = virsh("domfsthaw", g.name)
    assert thawed == "Thawed 1 filesystem(s)"
    assert g.agent("guest-fsfreeze-status") == "thawed"


def test_hook_scripts_give_their_exit_codes(running_guest):
    g = running_guest()
    ok = g.exec("/usr/local/bin/pre-ok.sh")
    assert ok.exitcode == 0
    fail = g.exec("/usr/local/bin/pre-fail.sh")
    assert fail.exitcode == 3
    assert b"pre-fail" in fail.stderr
    # slow.sh outlives a short wait: the agent reports it as still running.
    pid = g.agent("guest-exec", {"path": "/usr/local/bin/slow.sh"})["pid"]
    assert g.agent("guest-exec-status", {"pid": pid})["exited"] is False


def test_write_data_changes_the_disk(running_guest, tmp_path):
    g = running_guest()
    r = g.exec("/usr/local/bin/write-data.sh", "2")
    assert (r.exitcode, r.stdout) == (0, b"/mnt/data/file-1\n")
    r = g.exec("/usr/local/bin/write-data.sh", "1")
    assert r.stdout == b"/mnt/data/file-2\n"
    # The written data reached the disk image. Read it shared (-U) while frozen: the freeze
    # checkpoints ext4's journal, so debugfs (which does not replay it) sees the new sizes.
    raw = tmp_path / "copy.raw"
    virsh("domfsfreeze", g.name)
    try:
        subprocess.run(
            ["qemu-img", "convert", "-U", "-f", g.fmt, "-O", "raw", str(g.disk), str(raw)],
            check=True,
        )
    finally:
        virsh("domfsthaw", g.name)
    listing = subprocess.run(
        ["debugfs", "-R", "ls -l /", str(raw)], capture_output=True, text=True, check=True
    ).stdout
    sizes = {
        parts[-1]: int(parts[-4])
        for parts in (line.split() for line in listing.splitlines())
        if parts and parts[-1].startswith("file-")
    }
    assert sizes == {"file-1": 2 << 20, "file-2": 1 << 20}
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(g.disk)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
