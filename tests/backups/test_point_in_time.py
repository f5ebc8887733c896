"""Point in time: while the lab's writer keeps writing ring records into the running VM's
disk, the restored disk of a frozen (application-consistent) backup holds a consistent ring.

Negative control: the same backup without a freeze, with the capture paused midway by a test
hook while the writer goes on, and the same check finds the inconsistency.
"""

import importlib
import os
import time

import pytest

from inventory.lab import scripts
from inventory.lab.control import Lab
from inventory.lab.ring import check_ring, ring_extents
from jobs.models import Status
from tests.backups.conftest import World, needs_e2fsprogs, run
from tests.conftest import wait_until

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]

RATE = 5000.0  # records/s: the 4096-slot ring laps in under a second
PAUSE = 1.5  # seconds the capture stalls: longer than one lap of the writer


class _PausingOs:
    """`os` for the engine's backup module: the one read that covers `offset` first sleeps.

    It stands for a slow disk read in the middle of a capture; everything is still really
    read, just later."""

    def __init__(self, offset: int):
        self.offset = offset
        self.paused = False

    def __getattr__(self, name):
        return getattr(os, name)

    def pread(self, fd, length, offset):
        if not self.paused and offset <= self.offset < offset + length:
            self.paused = True
            time.sleep(PAUSE)
        return os.pread(fd, length, offset)


@pytest.fixture
def lab_vm(tmp_path):
    lab = Lab(tmp_path / "lab")
    paths, _ = scripts.write_scripts(lab)
    procs = []

    def make(*, frozen: bool):
        name = "ringvm"
        fields = (
            {
                "pre_script": str(paths["pre-ok.sh"]),
                "pre_script_params": [name],
                "post_script": str(paths["post-ok.sh"]),
                "post_script_params": [name],
                "freeze_command": scripts.command(paths["freeze.sh"], name),
                "thaw_command": scripts.command(paths["thaw.sh"], name),
            }
            if frozen
            else {"freeze_enabled": False}
        )
        w = World(tmp_path, name=name, disks=((-1, 24),), **fields)
        image = w.images[-1]
        proc = lab.spawn_writer(name, [image], rate=RATE, detach=True)
        procs.append(proc)
        lab.wait_for_writer(name, proc)
        extents = ring_extents(image)
        slots = sum(length for _, length in extents) // 512
        # Let the writer lap the ring, so every slot holds a record.
        wait_until(lambda: (check_ring(image, extents).highest_seq or 0) > 2 * slots, 20, step=0.05)
        return w, image, extents

    yield make
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def backup_with_paused_capture(monkeypatch, w, extents):
    last_off, last_len = extents[-1]
    hook = _PausingOs(last_off + last_len - 1)  # the ring's end: its start is already read
    monkeypatch.setattr(importlib.import_module("engine.backup"), "os", hook)
    job = run(w.backup_now())
    monkeypatch.undo()
    assert hook.paused
    return job


def test_frozen_backup_restores_a_consistent_ring(tmp_path, lab_vm, monkeypatch):
    w, image, extents = lab_vm(frozen=True)
    job = backup_with_paused_capture(monkeypatch, w, extents)
    assert (job.status, job.warnings) == (Status.COMPLETED, []), (job.error_message, job.warnings)
    assert job.result["snapshot_method"] == "frozen_read"
    rp = job.recovery_point
    assert rp.consistency == "application"
    assert job.result["freeze_seconds"] >= PAUSE
    restored = w.restore(w.vault_store(), rp.pk, -1)
    report = check_ring(restored, extents)
    assert report.ok, report.summary()
    assert report.records == report.slots and report.empty == 0
    # The writer went on after the thaw: the live ring is ahead of the restored one.
    wait_until(lambda: check_ring(image, extents).highest_seq > report.highest_seq, 10, step=0.05)


def test_unfrozen_paused_capture_is_caught_by_the_ring_check(tmp_path, lab_vm, monkeypatch):
    w, image, extents = lab_vm(frozen=False)
    job = backup_with_paused_capture(monkeypatch, w, extents)
    assert job.status == Status.COMPLETED_WITH_WARNINGS
    assert [x["code"] for x in job.warnings] == ["live_read"]
    assert job.recovery_point.consistency == "crash"
    restored = w.restore(w.vault_store(), job.recovery_point_id, -1)
    report = check_ring(restored, extents)
    assert not report.ok, report.summary()
    assert report.gaps >= 1
