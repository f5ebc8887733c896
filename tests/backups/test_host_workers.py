"""A worker per host: jobs that read or write a host's disks run on that host's worker.

Routing (`jobs.routing`) is checked per operation; then real `manage.py worker` processes, two
with `--host` and the default one, run real backups of image-connector VMs: each host's jobs
run on its own worker only, a job for a host whose worker is stopped waits (saying so) and
runs when the worker is back, and the reaper leaves it alone meanwhile.
"""

import signal
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import OrmQ

from jobs import queue, routing, runner, tasks, workers
from jobs.api.serializers import JobSerializer
from jobs.models import RUNNING, Job, Operation, Param, Status, Worker
from tests import factories as f
from tests.backups.conftest import World, lifeboat_env, needs_e2fsprogs
from tests.conftest import wait_until

DONE = (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS)


# -- routing -----------------------------------------------------------------------------------


@pytest.fixture
def two_hosts(tmp_path):
    """A vault with one item on a dedicated host and one on a shared host, and an RP of each."""
    dedicated = f.make_host(tmp_path / "d", "lab-d", dedicated_worker=True)
    shared = f.make_host(tmp_path / "s", "lab-s")
    vault = f.make_vault()
    items = {}
    for host in (dedicated, shared):
        vault.linked_hosts.add(host)
        items[host.name] = f.make_protected_item(vault, f.make_vm(host))
    rps = {name: f.make_rp(item) for name, item in items.items()}
    return vault, dedicated, shared, items, rps


def job_for(vault, operation, item=None, **fields):
    return f.make_job(vault, item, operation=operation, status=Status.QUEUED, **fields)


@pytest.mark.django_db
def test_every_operation_has_a_routing_rule():
    assert set(routing.HOST_OF) == set(Operation)


@pytest.mark.django_db
def test_jobs_touching_a_dedicated_host_go_to_its_queue(two_hosts):
    vault, dedicated, shared, items, rps = two_hosts
    default = routing.DEFAULT_QUEUE
    on_d, on_s = items["lab-d"], items["lab-s"]

    def queue_of(operation, item=None, **fields):
        return routing.queue_of(job_for(vault, operation, item, **fields))

    assert queue_of(Operation.BACKUP, on_d) == "host-lab-d"
    assert queue_of(Operation.BACKUP, on_s) == default
    # A transfer reads the snapshot tier on the host of its RP's VM.
    assert queue_of(Operation.TRANSFER, on_d, recovery_point=rps["lab-d"]) == "host-lab-d"
    assert queue_of(Operation.TRANSFER, on_s, recovery_point=rps["lab-s"]) == default
    # A restore runs where it writes: the target host, whichever host the RP came from.
    restore = {"recovery_point": rps["lab-s"]}
    assert queue_of(Operation.RESTORE, on_s, params={Param.HOST: dedicated.pk}, **restore) == (
        "host-lab-d"
    )
    restore = {"recovery_point": rps["lab-d"]}
    assert queue_of(Operation.RESTORE, on_d, params={Param.HOST: shared.pk}, **restore) == default
    # Vault-wide jobs touch the snapshot stores on every host of the vault: two hosts here,
    # so the default worker runs them.
    vault_wide = [
        Operation.CLEANUP,
        Operation.GARBAGE_COLLECT,
        Operation.PURGE,
        Operation.DELETE_BACKUP_DATA,
        Operation.UPDATE_KEY,
    ]
    for operation in vault_wide:
        assert queue_of(operation) == default, operation
    # ... while a vault whose items are all on the dedicated host has them run there.
    solo = f.make_vault()
    f.make_protected_item(solo, f.make_vm(dedicated))
    for operation in vault_wide:
        assert routing.queue_of(job_for(solo, operation)) == "host-lab-d", operation
    for operation in (Operation.VERIFY, Operation.CONFIGURE_BACKUP, Operation.UNDELETE):
        assert queue_of(operation, on_d) == default, operation
    assert queue_of(Operation.DISABLE_BACKUP, on_d) == default


@pytest.mark.django_db(transaction=True)
def test_delivery_puts_the_message_on_the_hosts_queue_and_says_the_worker_is_offline(
    two_hosts, django_capture_on_commit_callbacks
):
    vault, dedicated, _, items, _ = two_hosts
    job = runner.create_job(operation=Operation.BACKUP, vault=vault, item=items["lab-d"])
    other = runner.create_job(operation=Operation.BACKUP, vault=vault, item=items["lab-s"])
    keys = {m.task["name"]: m.key for m in OrmQ.objects.all()}
    assert keys == {f"job-{job.pk}": "host-lab-d", f"job-{other.pk}": routing.DEFAULT_QUEUE}
    assert queue.with_message([job.pk, other.pk]) == {
        job.pk: "host-lab-d",
        other.pk: routing.DEFAULT_QUEUE,
    }
    job.refresh_from_db()
    other.refresh_from_db()
    assert job.queue == "host-lab-d" and other.queue == routing.DEFAULT_QUEUE
    assert job.waiting_message == (
        "Waiting for the worker on host lab-d (never started: run "
        "`manage.py worker --host lab-d` on that host)."
    )
    assert other.waiting_message == ""

    # The worker comes: the message goes; it stops on request: offline at once, since then.
    now = timezone.now()
    row = Worker.objects.create(
        queue="host-lab-d", host=dedicated, hostname="h", pid=1, started_at=now, seen_at=now
    )
    assert workers.note_waiting() == 1
    job.refresh_from_db()
    assert job.waiting_message == ""
    assert workers.status_of(dedicated).online
    Worker.objects.filter(pk=row.pk).update(stopped_at=timezone.now())
    assert workers.note_waiting() == 1
    job.refresh_from_db()
    assert job.waiting_message.startswith("Waiting for the worker on host lab-d (offline since ")
    assert JobSerializer(job).data["waiting_message"] == job.waiting_message
    status = workers.status_of(dedicated)
    assert (status.online, status.last_seen) == (False, now)
    assert status.describe().startswith("offline (last seen ")

    # Claimed: the message is cleared and the job names who took it.
    claimed = runner.claim(job.pk)
    assert claimed.waiting_message == ""
    assert claimed.worker.startswith(f"{routing.DEFAULT_QUEUE} on ")


@pytest.mark.django_db(transaction=True)
def test_a_waiting_message_follows_its_host_s_dedicated_worker_setting(
    two_hosts, django_capture_on_commit_callbacks
):
    vault, dedicated, _, items, _ = two_hosts
    job = runner.create_job(operation=Operation.BACKUP, vault=vault, item=items["lab-d"])
    later = timezone.now() + timedelta(minutes=10)
    # Still routed there: left waiting (no storm of re-sends).
    assert runner.redeliver(later) == {"redelivered": 0, "not_delivered": 0, "rerouted": 0}
    # The host's worker is given up: the message moves to the default queue.
    dedicated.dedicated_worker = False
    dedicated.save(update_fields=["dedicated_worker"])
    assert runner.redeliver(later) == {"redelivered": 0, "not_delivered": 0, "rerouted": 1}
    job.refresh_from_db()
    assert (job.queue, job.waiting_message, job.deliveries) == (routing.DEFAULT_QUEUE, "", 1)
    assert queue.with_message([job.pk]) == {job.pk: routing.DEFAULT_QUEUE}
    assert OrmQ.objects.count() == 1
    # A message a cluster has taken is its own: never moved.
    dedicated.dedicated_worker = True
    dedicated.save(update_fields=["dedicated_worker"])
    OrmQ.objects.update(lock=timezone.now() + timedelta(minutes=5))
    assert runner.redeliver(later)["rerouted"] == 0
    OrmQ.objects.update(lock=timezone.now())
    assert runner.redeliver(later)["rerouted"] == 1
    job.refresh_from_db()
    assert job.queue == "host-lab-d" and job.waiting_message.startswith("Waiting for the worker")


@pytest.mark.django_db
def test_the_worker_command_refuses_an_unknown_host(tmp_path):
    f.make_host(tmp_path, "known-host")
    with pytest.raises(CommandError, match="No host is named 'nope' \\(hosts: known-host\\)"):
        call_command("worker", "--host", "nope")


# -- real workers ------------------------------------------------------------------------------


def online(queue_name: str) -> bool:
    return Worker.objects.filter(queue=queue_name).online(timezone.now()).exists()


def finished(job: Job, timeout: float = 120) -> Job:
    wait_until(
        lambda: Job.objects.get(pk=job.pk).status not in (Status.QUEUED, *RUNNING),
        timeout,
        step=0.2,
        what=f"job {job.pk} finished",
    )
    job.refresh_from_db()
    assert job.status in DONE, (job.status, job.error_code, job.error_message)
    return job


@needs_e2fsprogs
def test_each_host_s_jobs_run_on_its_own_worker_and_wait_for_it(shared_db, start_worker, tmp_path):
    env = lifeboat_env()
    a, b, plain = (World(tmp_path / name) for name in ("a", "b", "plain"))
    for world in (a, b):
        world.host.dedicated_worker = True
        world.host.save(update_fields=["dedicated_worker"])
    qa, qb = routing.host_queue(a.host.name), routing.host_queue(b.host.name)

    worker_a = start_worker(["worker", "--host", a.host.name, "--grace", "5"], env)
    start_worker(["worker", "--host", b.host.name, "--grace", "5"], env)
    start_worker(["worker", "--grace", "5"], env)
    for name in (qa, qb, routing.DEFAULT_QUEUE):
        wait_until(lambda q=name: online(q), 60, step=0.2, what=f"the worker of {name} is online")

    jobs = {world: world.backup_now() for world in (a, b, plain)}
    ran_on = {world: finished(job).worker.split(" on ")[0] for world, job in jobs.items()}
    assert ran_on == {a: qa, b: qb, plain: routing.DEFAULT_QUEUE}

    # Host a's worker stops: a's next backup waits on its queue, saying why; the other
    # workers do not take it.
    worker_a.kill(signal.SIGTERM)
    assert not online(qa)
    waiting = a.backup_now()
    waiting.refresh_from_db()
    assert waiting.waiting_message.startswith(
        f"Waiting for the worker on host {a.host.name} (offline since "
    )
    assert finished(b.backup_now()).worker.startswith(f"{qb} on ")  # b's worker keeps going
    waiting.refresh_from_db()
    assert (waiting.status, waiting.queue) == (Status.QUEUED, qa)
    # The reaper, long after, neither re-sends nor fails it: its message is on a's queue.
    later = timezone.now() + timedelta(hours=2)
    assert tasks.reap(later) == {
        "worker_lost": 0,
        "redelivered": 0,
        "not_delivered": 0,
        "rerouted": 0,
        "waiting": 0,
    }
    assert queue.with_message([waiting.pk]) == {waiting.pk: qa}
    waiting.refresh_from_db()
    assert (waiting.status, waiting.deliveries) == (Status.QUEUED, 1)

    # The worker is back: the job runs there, and no longer says it waits.
    start_worker(["worker", "--host", a.host.name, "--grace", "5"], env)
    done = finished(waiting)
    assert done.worker.startswith(f"{qa} on ")
    assert done.waiting_message == ""
