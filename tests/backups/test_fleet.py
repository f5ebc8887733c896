"""A fleet of workers sharing one PostgreSQL broker: every job runs once, the vault's transfer
slots hold across workers, and a worker killed mid-job strands nothing.

Real `manage.py qcluster` processes on django-q2's ORM broker, real ext4 images, real stores.
PostgreSQL only: on SQLite every writer waits for the one lock, which hides the races these
tests look for (CI runs the suite on PostgreSQL; locally set DATABASE_URL to a scratch
PostgreSQL database).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from jobs import runner, tasks
from jobs.backup_queue import TRANSFER
from jobs.models import Job, Operation, Status, SubTask
from tests.backups.conftest import Worker, lifeboat_env, make_ext4, needs_e2fsprogs
from tests.conftest import wait_until
from vaults.models import ItemState, ProtectedVM, RecoveryPoint

pytestmark = needs_e2fsprogs

MIB = 1 << 20
# The default TRANSFERS_PER_VAULT: the workers run with the shipped settings.
SLOTS = 2
# How long a cluster may hold a message it took: short, so that a killed worker's messages
# are taken by the other worker within seconds (jobs.queue).
RETRY = 4
DONE = (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS)


@pytest.fixture
def postgres(shared_db):
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: on SQLite the workers serialise on one write lock, which hides "
            "the races checked here (set DATABASE_URL=postgres://...)"
        )
    return shared_db


class Fleet:
    """One vault and one host with `n` protected VMs on small real ext4 images, all due now."""

    def __init__(self, root: Path, n: int, mib: int = 10) -> None:
        from inventory.models import Disk, VirtualMachine
        from tests import factories as f
        from vaults.protection import protect_vm

        self.admin = f.make_user("fleet-admin", superuser=True)
        self.vault = f.make_vault("fleet", owner=self.admin)
        self.host = f.make_host(root / "host")
        self.vault.linked_hosts.add(self.host)
        policy = self.vault.policies.get()
        disks = Path(self.host.allowed_roots[0])
        self.items: list[ProtectedVM] = []
        for i in range(n):
            vm = VirtualMachine.objects.create(
                name=f"fleet-{i:02d}", host=self.host, power_state="running"
            )
            image = make_ext4(disks / f"{vm.name}.img", mib, files=self._files(vm.name))
            Disk.objects.create(vm=vm, lun=-1, path=str(image), size=image.stat().st_size)
            self.items.append(protect_vm(self.vault, by=self.admin, vm=vm, policy=policy))
        # Protected two days ago, so the policy's latest daily slot is due for every item.
        ProtectedVM.objects.filter(vault=self.vault).update(
            created_at=timezone.now() - timedelta(days=2)
        )

    @staticmethod
    def _files(name: str) -> dict[str, bytes]:
        seed = name.encode()
        return {
            "/etc/hostname": seed + b"\n",
            # Distinct bytes per VM, so no backup is deduplicated into nothing.
            "/data/a.bin": (seed * (MIB // len(seed) + 1))[:MIB] + os.urandom(2 * MIB),
        }

    def backups(self) -> list[Job]:
        return list(Job.objects.filter(vault=self.vault, operation=Operation.BACKUP))


def group_of(pid: int) -> int | None:
    """The process group of a running process (each Worker is its own group)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def pid_of(job: Job) -> int:
    # runner.claim names the claimer "<queue> on <machine> pid <n>".
    return int(job.worker.rsplit(" pid ", 1)[1])


def transfers_running(vault_id: int) -> int:
    return SubTask.objects.filter(
        job__vault_id=vault_id, name=TRANSFER, status=Status.IN_PROGRESS
    ).count()


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of the intervals that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = peak = 0
    for _, step in events:  # at a tie, an end (-1) sorts before a start (+1)
        now += step
        peak = max(peak, now)
    return peak


def transfer_intervals(vault_id: int) -> list[tuple[datetime, datetime]]:
    return [
        (s.started_at, s.ended_at)
        for s in SubTask.objects.filter(job__vault_id=vault_id, name=TRANSFER)
        if s.started_at is not None and s.ended_at is not None
    ]


def start(tmp_path: Path, name: str, env: dict[str, str], started: list[Worker]) -> Worker:
    w = Worker(["qcluster"], env, tmp_path / f"{name}.log")
    started.append(w)
    return w


@pytest.fixture
def workers():
    """Worker processes started by a test; every group is killed after it."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.kill()


def test_two_workers_share_the_due_backups_and_each_runs_once(postgres, tmp_path, workers):
    fleet = Fleet(tmp_path, 20)
    # Two job processes per worker: four at once, so the vault's two slots are contended.
    env = lifeboat_env({"LIFEBOAT_WORKERS": "2"})
    pool = [start(tmp_path, f"worker-{i}", env, workers) for i in range(2)]

    assert tasks.dispatch(now=timezone.now()) == {"backups": 20, "transfers": 0, "replications": 0}
    assert tasks.dispatch(now=timezone.now()) == {"backups": 0, "transfers": 0, "replications": 0}
    seen = {"transfers": 0}
    pids: set[int] = set()

    def all_done() -> bool:
        # Sample the slots while the fleet works (the intervals below check every instant).
        seen["transfers"] = max(seen["transfers"], transfers_running(fleet.vault.pk))
        jobs = fleet.backups()
        pids.update(pid_of(j) for j in jobs if j.worker)
        return all(j.status in (*DONE, Status.FAILED) for j in jobs)

    try:
        wait_until(all_done, 50, step=0.05, what="the 20 backups finished")
    except AssertionError:
        raise AssertionError("\n".join(w.output() for w in pool)) from None
    # Which worker each job process belonged to, read while they still run.
    groups = {pid: group_of(pid) for pid in pids}

    jobs = fleet.backups()
    assert len(jobs) == 20
    assert [(j.vm_name, j.error_message) for j in jobs if j.status not in DONE] == []
    # One job per item, each claimed by one process, each with one recovery point.
    assert Counter(j.protected_item_id for j in jobs) == {it.pk: 1 for it in fleet.items}
    rps = Counter(RecoveryPoint.objects.filter(vault=fleet.vault).values_list("protected_item"))
    assert rps == {(it.pk,): 1 for it in fleet.items}
    assert all(j.started_at and j.ended_at for j in jobs)
    assert set(ProtectedVM.objects.filter(vault=fleet.vault).values_list("state", flat=True)) == {
        ItemState.PROTECTED
    }
    # Both workers did some of the work.
    by_worker = Counter(groups[pid_of(j)] for j in jobs)
    assert set(by_worker) == {w.proc.pid for w in pool}, (by_worker, [w.proc.pid for w in pool])
    # Never more transfers of the vault at once than its slots, at any instant.
    intervals = transfer_intervals(fleet.vault.pk)
    assert len(intervals) == 20
    assert seen["transfers"] <= SLOTS
    assert most_at_once(intervals) <= SLOTS
    # The second dispatch found nothing due: the next one neither, now that all ran.
    assert tasks.dispatch(now=timezone.now()) == {"backups": 0, "transfers": 0, "replications": 0}


def test_a_worker_killed_mid_job_is_reaped_and_the_other_finishes(postgres, tmp_path, workers):
    fleet = Fleet(tmp_path, 6)
    env = lifeboat_env({"LIFEBOAT_QUEUE_RETRY_SECONDS": str(RETRY)})
    # The doomed worker reads slowly, so it is surely in the middle of a job when killed.
    doomed = start(tmp_path, "doomed", {**env, "LIFEBOAT_THROTTLE_MIBPS": "0.5"}, workers)
    wait_until(lambda: len(Path(doomed.log).read_bytes()) > 0, 30, what="the first worker up")
    assert tasks.dispatch(now=timezone.now())["backups"] == 6

    def doomed_job() -> Job | None:
        for job in fleet.backups():
            if job.status == Status.IN_PROGRESS and job.bytes_done > 0:
                if group_of(pid_of(job)) == doomed.proc.pid:
                    return job
        return None

    killed = wait_until(doomed_job, 40, step=0.05, what="the first worker mid-backup")
    survivor = start(tmp_path, "survivor", env, workers)
    doomed.kill(signal.SIGKILL)  # the whole group: cluster, sentinel, job processes

    # The survivor runs every other job, those the killed worker had taken ahead included
    # (their messages' lock runs out after RETRY seconds).
    def others_done() -> bool:
        return all(j.status in DONE for j in fleet.backups() if j.pk != killed.pk)

    try:
        wait_until(others_done, 50, step=0.2, what="the survivor ran the other backups")
    except AssertionError:
        raise AssertionError(survivor.output()) from None
    killed.refresh_from_db()
    assert killed.status == Status.IN_PROGRESS  # nobody else ran it

    # The reaper, as its schedule would once the heartbeat is old: the killed job fails, and
    # no queued job is left to re-send.
    later = timezone.now() + runner.HEARTBEAT_TIMEOUT + timedelta(seconds=30)
    assert tasks.reap(now=later) == {
        "worker_lost": 1,
        "redelivered": 0,
        "not_delivered": 0,
        "rerouted": 0,
        "waiting": 0,
    }
    killed.refresh_from_db()
    assert (killed.status, killed.error_code) == (Status.FAILED, "worker_lost")
    assert set(killed.subtasks.values_list("status", flat=True)) == {Status.FAILED}
    item = ProtectedVM.objects.get(pk=killed.protected_item_id)
    assert item.state == ItemState.PROTECTION_ERROR
    rps = Counter(RecoveryPoint.objects.filter(vault=fleet.vault).values_list("protected_item"))
    assert rps == {(it.pk,): 1 for it in fleet.items if it.pk != item.pk}
    jobs = fleet.backups()
    assert Counter(j.protected_item_id for j in jobs) == {it.pk: 1 for it in fleet.items}
    # The same slot is not backed up again (the killed backup's item waits for its next slot,
    # as the lost job's message says) ...
    assert tasks.dispatch(now=later) == {"backups": 0, "transfers": 0, "replications": 0}
    # ... and at that slot the item is backed up once, with the others.
    tomorrow = later + timedelta(days=1)
    assert tasks.dispatch(now=tomorrow)["backups"] == 6
    wait_until(
        lambda: all(
            j.status in (*DONE, Status.FAILED) for j in fleet.backups() if j.pk != killed.pk
        ),
        50,
        step=0.2,
        what="the next slot's backups",
    )
    assert [j.error_message for j in fleet.backups() if j.status == Status.FAILED] == [
        killed.error_message
    ]
    rps = Counter(RecoveryPoint.objects.filter(vault=fleet.vault).values_list("protected_item"))
    assert rps == {(it.pk,): 1 if it.pk == item.pk else 2 for it in fleet.items}
    item.refresh_from_db()
    assert item.state == ItemState.PROTECTED


def test_two_dispatchers_at_once_queue_one_backup_per_item(postgres, tmp_path):
    """Every default worker runs the schedule's messages, so two dispatches can run at once
    (two minutes' messages waiting behind busy workers, taken by two workers together)."""
    from django.db import connections

    from tests import factories as f

    admin = f.make_user("fleet-admin", superuser=True)
    vault = f.make_vault("fleet", owner=admin)
    host = f.make_host(tmp_path / "host")
    items = [f.make_protected_item(vault, f.make_vm(host, name=f"vm{i:03d}")) for i in range(100)]
    ProtectedVM.objects.update(created_at=timezone.now() - timedelta(days=2))
    now = timezone.now()
    together = threading.Barrier(2)
    created: list[int] = []

    def dispatcher() -> None:
        try:
            together.wait()
            created.append(tasks.dispatch(now=now)["backups"])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = Counter(Job.objects.filter(operation=Operation.BACKUP).values_list("protected_item"))
    assert jobs == {(it.pk,): 1 for it in items}
    assert sorted(created) == [0, 100]
