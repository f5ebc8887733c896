"""Restoring a disk as qcow2: the image qemu-img reads back equals the backed-up disk."""

import os
import subprocess

import pytest

import engine
from engine.tests.tools import require_tool


def test_a_disk_restored_as_qcow2_reads_back_identical(tmp_path, store):
    qemu_img = require_tool("qemu-img")
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
        f.seek(1 << 20)
        f.write(os.urandom(300_000))
        f.seek(6 << 20)
        f.write(b"tail" * 1000)
    rp = engine.backup(
        engine.BackupRequest(store=store, disks=[engine.DiskSource(-1, str(disk))], vm_name="v")
    ).rp_id
    out = tmp_path / "out"
    out.mkdir()
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        target = engine.RestoreTarget(dir_fd, "vm.qcow2", format="qcow2")
        engine.restore(store, rp, {-1: target}, marker="job7")
    finally:
        os.close(dir_fd)
    info = subprocess.run([qemu_img, "info", str(out / "vm.qcow2")], capture_output=True, text=True)
    assert "file format: qcow2" in info.stdout
    same = subprocess.run(
        [qemu_img, "compare", "-f", "raw", "-F", "qcow2", str(disk), str(out / "vm.qcow2")],
        capture_output=True,
        text=True,
    )
    assert same.returncode == 0, same.stdout + same.stderr
    assert sorted(os.listdir(out)) == ["vm.qcow2"]  # no temp file left


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="restore format"):
        engine.RestoreTarget(0, "x", format="vmdk")
