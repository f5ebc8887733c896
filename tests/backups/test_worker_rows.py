"""Worker rows: a worker that starts drops only the rows of its queue on this machine whose
process is gone, so two workers of one queue on one machine are both listed and online.

Real processes stand for the other workers (their pids are alive or really gone); then two
real `manage.py worker` processes of the default queue run side by side.
"""

import os
import socket
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import routing
from jobs.models import WORKER_ONLINE_WITHIN, Worker
from jobs.workers import Heartbeat
from tests.backups.conftest import lifeboat_env
from tests.conftest import wait_until

QUEUE = routing.DEFAULT_QUEUE


@pytest.fixture
def processes():
    """`processes()` starts a real idle process; every one is killed after the test."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "300"])
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


def gone_pid(processes) -> int:
    """The pid of a process that ran and exited (reaped: no such process any more)."""
    p = processes()
    p.kill()
    p.wait()
    return p.pid


def row(pid: int, seen_ago: timedelta = timedelta(0), **fields) -> Worker:
    now = timezone.now()
    fields.setdefault("queue", QUEUE)
    fields.setdefault("hostname", socket.gethostname())
    return Worker.objects.create(
        pid=pid, started_at=now - timedelta(hours=1), seen_at=now - seen_ago, **fields
    )


@pytest.mark.django_db(transaction=True)
def test_a_starting_worker_drops_only_the_rows_of_processes_gone(processes):
    other = row(processes().pid)  # another worker of the queue on this machine, running
    dead = row(gone_pid(processes))
    # Alive pid, but not seen for longer than the online window: dead, its pid reused since.
    stale = row(processes().pid, seen_ago=WORKER_ONLINE_WITHIN + timedelta(seconds=5))
    stopped = row(processes().pid, stopped_at=timezone.now())
    # A predecessor with this very pid (a container's main process has the same one each time).
    same_pid = row(os.getpid())
    # Not this worker's to judge: another machine's, another queue's.
    elsewhere = row(gone_pid(processes), hostname="another-machine")
    other_queue = row(gone_pid(processes), queue="host-lab-x")

    beat = Heartbeat(QUEUE, None, alive=lambda: True, every=0.05)
    beat.start()
    try:
        wait_until(lambda: beat.row is not None, 10, what="the heartbeat's row")
    finally:
        beat.stop()
    assert beat.row is not None
    kept = set(Worker.objects.values_list("pk", flat=True))
    assert kept == {other.pk, elsewhere.pk, other_queue.pk, beat.row.pk}
    assert not kept & {dead.pk, stale.pk, stopped.pk, same_pid.pk}
    # Stopped on request: offline at once, the other worker still online.
    here = Worker.objects.filter(queue=QUEUE, hostname=socket.gethostname())
    assert set(here.online(timezone.now())) == {other}


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_whose_row_was_dropped_writes_it_again():
    """A worker whose cluster was down long enough looks gone to a worker starting beside it;
    once its cluster runs again, its beat puts its row back."""
    up = {"alive": False}
    beat = Heartbeat(QUEUE, None, alive=lambda: up["alive"], every=0.05)
    beat.start()
    try:
        wait_until(lambda: beat.row is not None, 10, what="the heartbeat's row")
        Worker.objects.all().delete()
        up["alive"] = True
        wait_until(
            lambda: Worker.objects.filter(queue=QUEUE).online(timezone.now()).exists(),
            10,
            what="the row written again",
        )
    finally:
        beat.stop()
    (again,) = Worker.objects.all()
    assert (again.pid, again.hostname, again.stopped_at is not None) == (
        os.getpid(),
        socket.gethostname(),
        True,
    )


def test_two_workers_of_one_queue_on_one_machine_are_both_online(shared_db, start_worker):
    env = lifeboat_env()
    first = start_worker(["worker", "--grace", "5"], env)

    def online_pids() -> set[int]:
        rows = Worker.objects.filter(queue=QUEUE, hostname=socket.gethostname())
        return set(rows.online(timezone.now()).values_list("pid", flat=True))

    wait_until(lambda: first.proc.pid in online_pids(), 60, step=0.2, what="the first worker")
    second = start_worker(["worker", "--grace", "5"], env)
    wait_until(lambda: second.proc.pid in online_pids(), 60, step=0.2, what="the second worker")
    # The first one's row survived the second one's start, and it keeps beating.
    assert online_pids() == {first.proc.pid, second.proc.pid}
    assert Worker.objects.filter(queue=QUEUE).count() == 2
