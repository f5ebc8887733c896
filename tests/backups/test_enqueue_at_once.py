"""Two scheduled messages at once queue one job per thing: every default worker runs the
schedule's messages, so two dispatches (or two cleanups, two purges) can run together, and
each must see the other's jobs before it queues its own.

PostgreSQL only: on SQLite every writer waits for the one lock, which hides the race (CI runs
the suite on PostgreSQL; locally set DATABASE_URL to a scratch PostgreSQL database).
"""

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from jobs import backup_queue, tasks
from jobs.models import Job, Operation
from jobs.purge import enqueue_due_purges
from tests import factories as f
from vaults.models import RecoveryPoint, Replication

pytestmark = pytest.mark.django_db(transaction=True)

RPS = 60
VAULTS = 30


@pytest.fixture
def postgres(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: on SQLite the writers serialise on one write lock, which hides "
            "the race checked here (set DATABASE_URL=postgres://...)"
        )


def at_once(run: Callable[[], int], n: int = 2) -> list[int]:
    """`run` in `n` threads released together (each with its own connection); their results."""
    together = threading.Barrier(n)
    results: list[int] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            together.wait()
            results.append(run())
        except BaseException as e:  # re-raised in the test's thread
            errors.append(e)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def rps(tmp_path, n: int = RPS, **fields) -> list[RecoveryPoint]:
    """`n` recovery points of a new vault, one item each."""
    vault = f.make_vault()
    host = f.make_host(tmp_path / "host")
    out = []
    for i in range(n):
        item = f.make_protected_item(vault, f.make_vm(host, name=f"{vault.name}-vm{i:03d}"))
        out.append(f.make_rp(item, **fields))
    return out


def jobs_per_rp(operation: str) -> Counter:
    return Counter(
        Job.objects.filter(operation=operation).values_list("recovery_point_id", flat=True)
    )


def jobs_per_vault(operation: str) -> Counter:
    return Counter(Job.objects.filter(operation=operation).values_list("vault_id", flat=True))


def test_two_dispatches_queue_one_transfer_per_recovery_point(postgres, tmp_path):
    owed = rps(tmp_path, transfer_due=True, in_snapshot_tier=True, in_vault_tier=False)
    now = timezone.now()
    created = at_once(lambda: backup_queue.enqueue_pending_transfers(now))
    assert jobs_per_rp(Operation.TRANSFER) == {rp.pk: 1 for rp in owed}
    assert sum(created) == RPS
    assert backup_queue.enqueue_pending_transfers(now) == 0


def test_two_dispatches_queue_one_replication_per_recovery_point(postgres, tmp_path):
    owed = rps(tmp_path, in_vault_tier=True, replication=Replication.PENDING)
    vault = owed[0].vault
    vault.secondary_location = str(tmp_path / "copy")
    vault.save(update_fields=["secondary_location"])
    now = timezone.now()
    created = at_once(lambda: backup_queue.enqueue_pending_replications(now))
    assert jobs_per_rp(Operation.REPLICATE) == {rp.pk: 1 for rp in owed}
    assert sum(created) == RPS
    assert backup_queue.enqueue_pending_replications(now) == 0


def test_two_cleanups_queue_one_cleanup_job_per_vault(postgres):
    vaults = [f.make_vault() for _ in range(VAULTS)]
    for vault in vaults:
        f.make_job(vault)  # a backup ran: the vault holds data to clean up
    created = at_once(tasks.cleanup)
    assert jobs_per_vault(Operation.CLEANUP) == {v.pk: 1 for v in vaults}
    assert sum(created) == VAULTS
    assert tasks.cleanup() == 0


def test_two_purges_queue_one_purge_job_per_vault(postgres, tmp_path):
    now = timezone.now()
    binned = {"soft_deleted_at": now - timedelta(days=2), "purge_at": now - timedelta(hours=1)}
    vaults = []
    for i in range(VAULTS):
        (rp,) = rps(tmp_path / f"v{i}", n=1, **binned)
        vaults.append(rp.vault)
    created = at_once(enqueue_due_purges)
    assert jobs_per_vault(Operation.PURGE) == {v.pk: 1 for v in vaults}
    assert sum(created) == VAULTS
    assert enqueue_due_purges() == 0
