"""A real writer process in a real ext4 image: the file system stays valid, a paused copy is
consistent, a copy read in two moments is not, and the freeze/thaw scripts pause it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from inventory.lab import images, scripts
from inventory.lab.control import proc_state, wait_stopped
from inventory.lab.ring import check_bytes, check_ring, read_ring, ring_extents
from tests.conftest import wait_until
from tests.lab.conftest import fsck_clean, highest, ls, needs_e2fsprogs

pytestmark = needs_e2fsprogs


def test_writer_keeps_the_file_system_valid_and_resumes(lab_root, image, writers):
    pid = writers(lab_root, "t", [image])
    assert lab_root.writer_pid("t") == pid
    slots = check_ring(image).slots
    wait_until(lambda: highest(image) > slots + 100)  # lapped the ring at least once
    fsck_clean(image)  # e2fsck -fn while the writer keeps writing
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: lab_root.writer_pid("t") is None)
    assert not lab_root.pid_file("t").exists()
    after_stop = check_ring(image)
    assert after_stop.ok and after_stop.records == slots
    fsck_clean(image)
    # A new writer resumes after the highest record: the ring stays one unbroken run.
    writers(lab_root, "t", [image])
    wait_until(lambda: highest(image) > after_stop.highest_seq + 50)
    with lab_root.paused("t"):
        report = check_ring(image)
    assert report.ok, report.problems


def test_second_writer_for_the_same_vm_refuses(lab_root, image, writers):
    pid = writers(lab_root, "t", [image])
    proc = lab_root.spawn_writer("t", [image], detach=False)
    assert proc.wait(timeout=10) == 3
    assert lab_root.writer_pid("t") == pid


def test_paused_copy_is_consistent_and_a_two_moment_copy_is_not(lab_root, image, writers, tmp_path):
    pid = writers(lab_root, "t", [image])
    extents = ring_extents(image)
    slots = check_ring(image).slots
    wait_until(lambda: highest(image) > slots)

    # Positive: SIGSTOP, copy, SIGCONT.
    os.kill(pid, signal.SIGSTOP)
    wait_stopped(pid)
    copy = tmp_path / "paused.img"
    shutil.copyfile(image, copy)
    os.kill(pid, signal.SIGCONT)
    report = check_ring(copy)
    assert report.ok and report.records == slots, report.problems
    fsck_clean(copy)

    # Negative control: the first half of the image (cut in the middle of the ring), then,
    # after the writer has lapped the ring once more, the second half.
    ring_bytes = sum(length for _, length in extents)
    middle, left = None, ring_bytes // 2
    for off, length in extents:
        if left < length:
            middle = off + left
            break
        left -= length
    with open(image, "rb") as f:
        first = f.read(middle)
        seen = check_bytes(read_ring(f, extents)).highest_seq
        wait_until(lambda: highest(image) > seen + slots)
        f.seek(middle)
        second = f.read()
    mixed = first + second
    assert len(mixed) == image.stat().st_size
    report = check_ring(mixed, extents)
    assert not report.ok and report.gaps >= 1, report
    # The check is what fails, not the file system: e2fsck cannot see the difference.
    torn_copy = tmp_path / "mixed.img"
    torn_copy.write_bytes(mixed)
    fsck_clean(torn_copy)


def test_freeze_and_thaw_scripts_pause_the_writer(lab_root, image, writers):
    paths, _ = scripts.write_scripts(lab_root)
    pid = writers(lab_root, "t", [image])

    def run(name):
        return subprocess.run(
            [str(paths[name]), "t"], capture_output=True, text=True, timeout=10, env={}
        )

    r = run("freeze.sh")
    assert r.returncode == 0 and f"writer {pid} paused" in r.stdout, r.stderr
    assert proc_state(pid) == "T"
    assert lab_root.frozen("t")
    seq = highest(image)
    time.sleep(0.2)
    assert highest(image) == seq  # nothing moves while frozen
    r = run("thaw.sh")
    assert r.returncode == 0 and "resumed" in r.stdout
    assert not lab_root.frozen("t")
    wait_until(lambda: highest(image) > seq)
    assert run("probe.sh").stdout.strip() == "running"  # no power file: the live writer
    lab_root.set_power("t", "stopped")
    assert run("probe.sh").stdout.strip() == "stopped"


def test_freeze_without_a_writer_succeeds_with_nothing_to_pause(lab_root):
    paths, _ = scripts.write_scripts(lab_root)
    for name in ("freeze.sh", "thaw.sh"):
        r = subprocess.run([str(paths[name]), "idle"], capture_output=True, text=True)
        assert r.returncode == 0 and "nothing to" in r.stdout
    r = subprocess.run([str(paths["probe.sh"]), "idle"], capture_output=True, text=True)
    assert r.stdout.strip() == "stopped"
    r = subprocess.run([str(paths["pre-fail.sh"]), "idle"], capture_output=True, text=True)
    assert r.returncode == 1 and "refused" in r.stderr
    log = (lab_root.logs / "hooks.log").read_text()
    assert "freeze idle: no writer running" in log and "FAILED" in log


def test_churn_while_writer_paused(lab_root, image, writers):
    writers(lab_root, "t", [image])
    with lab_root.paused("t") as pid:
        assert pid is not None and proc_state(pid) == "T"
        result = images.churn_image(image, 0.6)
    assert len(result.written) == 3 and result.bytes_written == int(0.6 * (1 << 20))
    listing = ls(image, "/churn")
    for name in result.written:
        assert name.rsplit("/", 1)[1] in listing
    wait_until(lambda: highest(image) > 100)
    fsck_clean(image)
    with lab_root.paused("t"):
        assert check_ring(image).ok


def test_churn_makes_room_by_removing_old_churn_files(lab_root, image):
    free = images.free_bytes(image)
    rounds = int((free - image.stat().st_size // 4) / (1 << 20)) + 2
    removed = []
    for i in range(rounds):
        removed += images.churn_image(image, 1, tag=f"r{i:02d}").removed
    assert removed and removed[0].startswith("/churn/r00-")
    fsck_clean(image)


@pytest.mark.parametrize("bad", ["/lab/missing.dat"])
def test_ring_extents_name_a_missing_file(image, bad):
    from inventory.lab.ring import RingError

    with pytest.raises(RingError, match="not found"):
        ring_extents(image, bad)
