"""Fixtures for the demo-lab tests: real ext4 images, real writer processes.

Everything that needs e2fsprogs skips with a reason when it is missing (CI turns skips into
failures, and installs it).
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from inventory.lab import images
from inventory.lab.control import Lab, terminate
from inventory.lab.ring import check_ring

MISSING = images.missing_tools()
needs_e2fsprogs = pytest.mark.skipif(
    bool(MISSING), reason=f"e2fsprogs tools missing: {', '.join(MISSING)}"
)
SMALL_MIB = 24  # images in tests: 16-32 MiB
FAST_RATE = 5000.0  # records/s per image: the 4096-slot ring laps in under a second


def highest(image: Path) -> int:
    return check_ring(image).highest_seq or 0


def fsck_clean(image: Path) -> None:
    ok, out = images.fsck(image)
    assert ok, out


def ls(image: Path, directory: str) -> str:
    return subprocess.run(
        [images.find_tool("debugfs"), "-R", f"ls -l {directory}", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def writers():
    """Start writers with ``start(lab, vm, images, rate=...)``; all stopped at teardown."""
    started: list[subprocess.Popen] = []

    def start(lab: Lab, vm: str, paths, rate: float = FAST_RATE) -> int:
        proc = lab.spawn_writer(vm, paths, rate=rate, detach=False)
        started.append(proc)
        return lab.wait_for_writer(vm, proc)

    yield start
    for proc in started:
        if proc.poll() is not None:  # exited (and reaped): its pid may belong to another
            continue
        with contextlib.suppress(Exception):
            terminate(proc.pid, timeout=3)
        with contextlib.suppress(Exception):
            proc.wait(timeout=3)


@pytest.fixture
def lab_root(tmp_path) -> Lab:
    lab = Lab(tmp_path / "lab")
    lab.make_dirs()
    return lab


@pytest.fixture
def image(lab_root) -> Path:
    """One small lab image with real files and a blank ring."""
    path = lab_root.disks / "t-os.img"
    images.make_image(path, 16, "t-os", {"/etc/hostname": b"t\n", "/data/a.bin": b"x" * 100_000})
    return path
