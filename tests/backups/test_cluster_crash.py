"""A whole django-q2 cluster killed with kill -9 strands nothing: the jobs it had taken but not
run, run once a cluster is back; `manage.py worker` brings it back and stops it in bounded time.

Real `manage.py qcluster` / `manage.py worker` processes. The queue's `retry` (how long a cluster
may hold a message it took) is a few seconds here instead of minutes, so the tests take seconds.
"""

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

from django.utils import timezone
from django_q.models import OrmQ

from jobs import runner
from jobs.models import Job, Status
from tests.backups.conftest import World, lifeboat_env, needs_e2fsprogs, write_script
from tests.conftest import wait_until

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


def processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid, pgid = stat.rsplit(")", 1)[1].split()[:3]
            found.append((int(entry.name), state, int(ppid), int(pgid)))
    return found


def cluster_of(supervisor_pid: int) -> int | None:
    """The pid of the cluster `manage.py worker` runs (its child)."""
    return next((pid for pid, _, ppid, _ in processes() if ppid == supervisor_pid), None)


def running_in_group(pgid: int) -> list[int]:
    """Processes of the group that still run (a killed one may stay a zombie a moment)."""
    return [pid for pid, state, _, group in processes() if group == pgid and state != "Z"]


def test_the_worker_command_restarts_a_killed_cluster_and_stops_in_bounded_time(
    shared_db, start_worker, tmp_path, hooks_dir
):
    env = lifeboat_env({"LIFEBOAT_QUEUE_RETRY_SECONDS": str(RETRY)})
    hanging, pid_file = hanging_world(tmp_path / "hang", hooks_dir)
    quick = World(tmp_path / "quick")
    supervisor = start_worker(["worker", "--grace", "2"], env)
    try:
        first = wait_until(lambda: cluster_of(supervisor.proc.pid), 30, what="a cluster started")
        job = hanging.backup_now()
        wait_until(pid_file.exists, 60, step=0.1, what="the cluster started the backup")
        os.killpg(first, signal.SIGKILL)  # kill -9 of the whole cluster tree
        end_hook(pid_file)
        pid_file.unlink()

        # The supervisor starts a new cluster, which runs the next backup.
        second = wait_until(
            lambda: (pid := cluster_of(supervisor.proc.pid)) != first and pid,
            30,
            what="a new cluster",
        )
        assert run_to_end(quick.backup_now()) in DONE
        runner.reap(timezone.now() + runner.HEARTBEAT_TIMEOUT + timedelta(seconds=30))
        job.refresh_from_db()
        assert job.error_code == "worker_lost"

        # Stopping while a job hangs takes the grace period, not the job's time; nothing of
        # the cluster is left running.
        hanging.backup_now()
        wait_until(pid_file.exists, 60, step=0.1, what="the new cluster started a backup")
        began = time.monotonic()
        supervisor.proc.send_signal(signal.SIGTERM)
        supervisor.proc.wait(timeout=20)
        assert time.monotonic() - began < 10
        assert running_in_group(second) == []
    finally:
        end_hook(pid_file)


def run_to_end(job) -> str:
    wait_until(lambda: Job.objects.get(pk=job.pk).status in (*DONE, Status.FAILED), 90, step=0.2)
    job.refresh_from_db()
    assert job.status in DONE, job.error_message
    return job.status


def test_a_cluster_dies_with_its_supervisor_even_by_sigkill(shared_db, start_worker):
    """`kill -9` of `manage.py worker` cannot be caught to stop its cluster: the kernel sends
    the cluster SIGTERM (PR_SET_PDEATHSIG), so no cluster outlives its supervisor."""
    supervisor = start_worker(["worker", "--grace", "2"], lifeboat_env())
    cluster = wait_until(lambda: cluster_of(supervisor.proc.pid), 30, what="a cluster started")
    os.kill(supervisor.proc.pid, signal.SIGKILL)  # the supervisor alone, not its group
    supervisor.proc.wait(timeout=10)
    wait_until(lambda: running_in_group(cluster) == [], 30, step=0.2, what="the cluster gone")
