"""Which worker runs a job: the one place that decides.

A job that reads or writes a host's disks or its snapshot tier runs on that host's worker
(`manage.py worker --host <name>`, on the host itself) when the host has `dedicated_worker`;
every other job runs on the default worker, which alone also runs the periodic tasks.

The host a job touches, per operation (`host_of`):

- backup: the host of the item's VM (reads its disks, writes its snapshot tier);
- transfer: the host of the recovery point's VM (reads the snapshot tier there);
- restore: the target host (writes the disks there; a restore from the snapshot tier of
  another host then reads that host's snapshot tier over whatever path the target reaches it);
- cleanup, garbage collection, purge, delete backup data and key update: the host of the
  vault's snapshot stores when they are all on one host; a vault whose items live on several
  hosts has its vault-wide jobs run by the default worker, which must then reach every one of
  those snapshot roots (a job is never split per host);
- verify: none (it reads the vault store only); drill: the RP's host when it drills the
  snapshot tier, else none; replicate: none (vault store to secondary);
  extend locks: none (object stores only: the vault store and the secondary); test storage
  target: none (object storage, opened with the credentials the default worker reads);
- configure backup, disable backup, undelete: none (recorded in the catalog, never delivered).

Queues are django-q2 cluster names: `host-<host name>` for a dedicated host, else
`DEFAULT_QUEUE` (the cluster's own name).
"""

from collections.abc import Callable

from django.conf import settings

from inventory.models import Host
from jobs.models import Job, Operation, Param, RestoreTier

DEFAULT_QUEUE = str(settings.Q_CLUSTER["name"])


def host_queue(host_name: str) -> str:
    """The queue of a host's worker."""
    return f"host-{host_name}"


def host_name_of(queue: str) -> str | None:
    """The host whose queue `queue` is, or None (the default queue)."""
    return queue.removeprefix("host-") if queue.startswith("host-") else None


def _vm_host(job: Job) -> Host | None:
    item = job.protected_item
    return item.vm.host if item is not None else None


def _rp_host(job: Job) -> Host | None:
    rp = job.recovery_point
    if rp is not None and rp.protected_item is not None:
        return rp.protected_item.vm.host
    return _vm_host(job)


def _target_host(job: Job) -> Host | None:
    host_id = job.params.get(Param.HOST)
    if not isinstance(host_id, int):
        return None
    return Host.objects.filter(pk=host_id).first()


def _vault_snapshot_host(job: Job) -> Host | None:
    """The one host holding the vault's snapshot stores (as `jobs.lifecycle.open_stores`
    finds them), or None when there are none or several."""
    if job.vault_id is None:
        return None
    hosts = list(Host.objects.filter(vms__protections__vault_id=job.vault_id).distinct()[:2])
    return hosts[0] if len(hosts) == 1 else None


def _drill_host(job: Job) -> Host | None:
    """A drill of the snapshot tier reads the RP's host's snapshot store; of the vault tier,
    the vault store only."""
    return _rp_host(job) if job.params.get(Param.TIER) == RestoreTier.SNAPSHOT else None


def _nowhere(job: Job) -> Host | None:
    return None


# Every operation is decided here (a test checks that none is missing).
HOST_OF: dict[str, Callable[[Job], Host | None]] = {
    Operation.BACKUP: _vm_host,
    Operation.TRANSFER: _rp_host,
    Operation.RESTORE: _target_host,
    Operation.CLEANUP: _vault_snapshot_host,
    Operation.GARBAGE_COLLECT: _vault_snapshot_host,
    Operation.PURGE: _vault_snapshot_host,
    Operation.DELETE_BACKUP_DATA: _vault_snapshot_host,
    Operation.UPDATE_KEY: _vault_snapshot_host,
    Operation.VERIFY: _nowhere,
    Operation.DRILL: _drill_host,
    Operation.EXTEND_LOCKS: _nowhere,
    Operation.REPLICATE: _nowhere,
    Operation.TEST_TARGET: _nowhere,
    Operation.CONFIGURE_BACKUP: _nowhere,
    Operation.DISABLE_BACKUP: _nowhere,
    Operation.UNDELETE: _nowhere,
}


def host_of(job: Job) -> Host | None:
    """The host whose disks or snapshot tier `job` reads or writes, if it is one host."""
    return HOST_OF[job.operation](job)


def queue_of(job: Job) -> str:
    """The queue `job` is delivered to: its host's when that host has a dedicated worker."""
    host = host_of(job)
    if host is not None and host.dedicated_worker:
        return host_queue(host.name)
    return DEFAULT_QUEUE


def queues_of(job_ids: list[int]) -> dict[int, str]:
    """`queue_of` for many jobs, their items' hosts read in one query (the dispatcher's
    batches are all backups)."""
    jobs = Job.objects.filter(pk__in=job_ids).select_related(
        "protected_item__vm__host", "recovery_point__protected_item__vm__host"
    )
    return {job.pk: queue_of(job) for job in jobs}
