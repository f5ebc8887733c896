"""Cancelling backups, and a worker process that dies in the middle of one."""

import os
import signal
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

import engine
from jobs import runner
from jobs.models import Job, Status
from tests.backups.conftest import (
    World,
    lifeboat_env,
    needs_e2fsprogs,
    run,
    write_script,
)
from tests.conftest import wait_until
from vaults.models import RecoveryPoint

pytestmark = needs_e2fsprogs


@pytest.mark.django_db(transaction=True)
def test_a_queued_backup_is_cancelled_at_once(tmp_path):
    w = World(tmp_path)
    job = w.backup_now()
    assert runner.request_cancel(job) is True
    assert (job.status, job.ended_at is not None) == (Status.CANCELLED, True)
    # A late delivery finds nothing to claim.
    assert runner.run_job(job.pk) == "not claimed"
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert not RecoveryPoint.objects.exists()
    assert runner.request_cancel(job) is False  # finished jobs stay as they are


@pytest.mark.django_db(transaction=True)
def test_a_running_backup_is_cancelled_while_the_snapshot_is_taken(tmp_path, hooks_dir):
    started, undone = tmp_path / "pre-started", tmp_path / "post-ran"
    w = World(
        tmp_path,
        pre_script=str(write_script(hooks_dir, "pre.sh", f"touch {started}\nsleep 2\n")),
        post_script=str(write_script(hooks_dir, "post.sh", f"touch {undone}\n")),
        freeze_command="true",
        thaw_command="true",
    )
    job = w.backup_now()

    def work():
        try:
            runner.run_job(job.pk)
        finally:
            connection.close()

    t = threading.Thread(target=work)
    t.start()
    try:
        wait_until(started.exists, 20, step=0.05, what="pre-script started")
        assert runner.request_cancel(job) is True
        assert job.status == Status.CANCELLING
    finally:
        t.join(30)
    job.refresh_from_db()
    assert job.status == Status.CANCELLED, (job.error_code, job.error_message)
    assert undone.exists()  # the post-script undid the pre-script
    assert not RecoveryPoint.objects.exists()
    assert engine.list_recovery_points(w.snapshot_store()) == []
    assert list(job.subtasks.values_list("status", flat=True)) == ["cancelled", "cancelled"]
    w.item.refresh_from_db()
    assert w.item.last_backup_status == Status.CANCELLED
    # Nothing was left behind in the host's work directory.
    work_dir = tmp_path / "host" / "snapshots" / ".work" / f"job-{job.pk}"
    assert not work_dir.exists() or not any(work_dir.iterdir())


def test_worker_killed_mid_backup(shared_db, start_worker, tmp_path, hooks_dir):
    pid_file = tmp_path / "pre.pid"
    pre = write_script(hooks_dir, "pre.sh", f"echo $$ > {pid_file}\nexec sleep 60\n")
    w = World(tmp_path, pre_script=str(pre), freeze_command="true", thaw_command="true")
    worker = start_worker(["qcluster"], lifeboat_env())
    job = w.backup_now()
    try:
        wait_until(pid_file.exists, 60, step=0.1, what="the worker started the backup")
        job.refresh_from_db()
        assert job.status == Status.IN_PROGRESS
        worker.kill(signal.SIGKILL)
    finally:
        if pid_file.exists():  # the hook runs in its own session: end it too
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    # Nothing notices at once; the reaper does once the heartbeat is overdue.
    assert runner.reap(now=timezone.now()) == 0
    assert runner.reap(now=timezone.now() + runner.HEARTBEAT_TIMEOUT + timedelta(seconds=30)) == 1
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "worker_lost")
    assert job.subtasks.get(name="Take snapshot").status == Status.FAILED
    assert not RecoveryPoint.objects.exists()
    assert engine.list_recovery_points(w.snapshot_store()) == []

    # The next backup succeeds (in this process, without the slow pre-script).
    type(w.vm).objects.filter(pk=w.vm.pk).update(pre_script="")
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    assert [r.rp_id for r in engine.list_recovery_points(w.snapshot_store())] == [
        str(job.recovery_point_id)
    ]
    assert Job.objects.filter(status=Status.IN_PROGRESS).count() == 0
