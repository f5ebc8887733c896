"""A whole django-q2 cluster killed with kill -9 strands nothing: the jobs it had taken but not
run, run once a cluster is back.

Real `manage.py qcluster` processes. The queue's `retry` (how long a cluster
may hold a message it took) is a few seconds here instead of minutes, so the tests take seconds.
"""

import os
import signal
from datetime import timedelta
from pathlib import Path

from django.utils import timezone
from django_q.models import OrmQ

from jobs import runner
from jobs.models import Job, Status
from tests.backups.conftest import World, lifeboat_env, needs_e2fsprogs, wait_until, write_script

pytestmark = needs_e2fsprogs

RETRY = 4
DONE = (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS)


def hanging_world(root: Path, hooks_dir: Path) -> tuple[World, Path]:
    """A VM whose pre-script hangs, so its backup keeps a worker busy; its pid file."""
    pid_file = root.parent / f"{root.name}-pre.pid"
    pre = write_script(hooks_dir, f"{root.name}.sh", f"echo $$ > {pid_file}\nexec sleep 120\n")
    return World(root, pre_script=str(pre), freeze_command="true", thaw_command="true"), pid_file


def end_hook(pid_file: Path) -> None:
    """Hook scripts run in their own session, outside the cluster's process group."""
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass


def taken(jobs) -> bool:
    """A cluster took every job's message (it is locked), and none of the jobs started."""
    names = {f"job-{j.pk}" for j in jobs}
    now = timezone.now()
    locked = {m.task.get("name") for m in OrmQ.objects.all() if m.lock and m.lock > now}
    queued = all(Job.objects.get(pk=j.pk).status == Status.QUEUED for j in jobs)
    return names <= locked and queued


def finished(jobs) -> bool:
    return all(Job.objects.get(pk=j.pk).status in DONE for j in jobs)


def test_jobs_taken_by_a_killed_cluster_run_after_a_restart(
    shared_db, start_worker, tmp_path, hooks_dir
):
    env = lifeboat_env({"LIFEBOAT_QUEUE_RETRY_SECONDS": str(RETRY)})
    busy, pid_file = hanging_world(tmp_path / "busy", hooks_dir)
    waiting = [World(tmp_path / f"vm{i}") for i in range(2)]
    cluster = start_worker(["qcluster"], env)  # one worker (LIFEBOAT_WORKERS=1)
    try:
        first = busy.backup_now()
        wait_until(pid_file.exists, 60, step=0.1, what="the first backup started")
        # The only worker is busy; the cluster takes the next messages ahead of it.
        jobs = [w.backup_now() for w in waiting]
        wait_until(lambda: taken(jobs), 20, step=0.05, what="the cluster took both messages")
        cluster.kill(signal.SIGKILL)  # the whole tree: main process, sentinel, workers
    finally:
        end_hook(pid_file)

    start_worker(["qcluster"], env)
    wait_until(lambda: finished(jobs), 90, step=0.2, what="the taken jobs ran after the restart")
    # The job that was running when the cluster died is failed by the reaper, not run again.
    first.refresh_from_db()
    assert first.status == Status.IN_PROGRESS
    assert runner.reap(timezone.now() + runner.HEARTBEAT_TIMEOUT + timedelta(seconds=30)) == 1
    first.refresh_from_db()
    assert (first.status, first.error_code) == (Status.FAILED, "worker_lost")
    # "Backup now" works again for every VM.
    assert waiting[0].backup_now().status == Status.QUEUED
    assert busy.backup_now().status == Status.QUEUED
