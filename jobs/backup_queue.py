"""Queueing backups and transfers: what is backed up when (the running is `jobs.backup`).

- "Backup now" (`backup_now`): an on-demand backup of one item, for the pages and the API.
- The dispatcher's tick (`enqueue_due_backups`): one backup job per item whose policy slot came.
- Transfer retries (`enqueue_pending_transfers`): a snapshot whose copy to the vault tier failed
  gets a `transfer` job once its backoff has passed, until the recovery point expires.
- Replication (`queue_replication`, retried by `enqueue_pending_replications`): once an RP is
  in the vault tier of a vault with a secondary location, a `replicate` job copies it there;
  a failed one is retried with the same backoff while the RP lives.

Whether an item may be backed up now is one rule (`backup_refusal`, and `items_to_back_up` for
the dispatcher's bulk query): it is being protected, and no backup of it is queued or running.
"""

from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from jobs import queue
from jobs.models import UNFINISHED, Job, Operation, Param, SubTask
from jobs.runner import create_job, lock_rows
from policies import retention, schedule
from policies.models import BackupPolicy
from vaults import access, audit
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, Replication

# A backup job's sub-tasks, created with the job.
TAKE_SNAPSHOT = "Take snapshot"
TRANSFER = "Transfer data to vault"
# A replicate job's one sub-task.
REPLICATE = "Copy to the secondary location"
# The states of an item that is being protected: backed up on schedule and on demand.
SCHEDULABLE = [ItemState.INITIAL_BACKUP_PENDING, ItemState.PROTECTED, ItemState.PROTECTION_ERROR]
ON_DEMAND_DEFAULT_DAYS = 30


# -- may this item be backed up now ----------------------------------------------------------------


class BackupBusy(ValidationError):
    """A backup of the item is already queued or running (one backup of a VM at a time).

    A ValidationError, so pages show it like any refusal; the API answers 409 Conflict."""


def unfinished_backups() -> QuerySet[Job]:
    return Job.objects.filter(operation=Operation.BACKUP, status__in=UNFINISHED)


def backup_refusal(
    item: ProtectedVM, unfinished: Iterable[Job] | None = None
) -> ValidationError | None:
    """Why `item` may not be backed up now, or None when it may: it must be in a state that is
    protected (SCHEDULABLE), and no backup of it may be queued or running (`BackupBusy`).

    `unfinished`: the item's unfinished jobs when the caller has them at hand (the item page);
    read here otherwise."""
    if item.state not in SCHEDULABLE:
        return ValidationError(
            {
                "detail": f"{item.vm.name} is {item.get_state_display().lower()}; resume "
                "protection before backing it up."
            }
        )
    jobs = unfinished_backups().filter(protected_item=item) if unfinished is None else unfinished
    running = next((j for j in jobs if j.operation == Operation.BACKUP), None)
    if running is not None:
        return BackupBusy(
            {
                "detail": f"A backup of {item.vm.name} is already "
                f"{running.status.replace('_', ' ')} (job {running.pk})."
            }
        )
    return None


def items_to_back_up() -> QuerySet[ProtectedVM]:
    """`backup_refusal`'s rule as one query over every item (the dispatcher's)."""
    busy = unfinished_backups().filter(protected_item=OuterRef("pk"))
    return ProtectedVM.objects.filter(state__in=SCHEDULABLE).filter(~Exists(busy))


# -- backup now ------------------------------------------------------------------------------------


def _on_demand_expiry(
    now: datetime, retain_until: date | datetime | None, time_zone: str
) -> datetime:
    """A picked day keeps the backup through that whole day in the policy's time zone, the
    zone its pages show dates in."""
    if retain_until is None:
        retain_until = now + timedelta(days=ON_DEMAND_DEFAULT_DAYS)
    try:
        return retention.expiry_for_on_demand(now, retain_until, timezone=time_zone)
    except ValueError as e:
        raise ValidationError({"retain_until": str(e)}) from None


def backup_now(
    item: ProtectedVM,
    *,
    by: User,
    request: HttpRequest | None = None,
    retain_until: date | datetime | None = None,
) -> Job:
    """ "Backup now": an on-demand backup kept until `retain_until` (default 30 days)."""
    access.require(by, item.vault, "backup_now")
    expires = _on_demand_expiry(timezone.now(), retain_until, item.policy.timezone)
    with transaction.atomic():
        # Lock the item so two clicks cannot both pass the one-backup-at-a-time check.
        ProtectedVM.objects.select_for_update().filter(pk=item.pk).first()
        refusal = backup_refusal(item)
        if refusal is not None:
            raise refusal
        job = create_job(
            operation=Operation.BACKUP,
            vault=item.vault,
            item=item,
            by=by,
            params={Param.ON_DEMAND: True, Param.RETAIN_UNTIL: expires.isoformat()},
            subtasks=[TAKE_SNAPSHOT, TRANSFER],
        )
        audit.record(
            "backup.now",
            actor=by,
            request=request,
            vault=item.vault,
            obj=item,
            after={"job": job.pk, "retain_until": expires.isoformat()},
        )
    return job


# -- the dispatcher --------------------------------------------------------------------------------


def enqueue_due_backups(now: datetime) -> int:
    """The dispatcher's tick: one backup job per due item, in bulk.

    Queries do not grow with the number of items that are not due: one for the items that may
    be backed up, one for their policies; then a bulk insert of jobs and sub-tasks, one UPDATE
    per distinct slot, and one django-q2 message per due job.
    """
    rows = list(
        items_to_back_up().values_list(
            "pk", "vault_id", "policy_id", "last_scheduled_slot", "created_at", "vm__name"
        )
    )
    if not rows:
        return 0
    policy_ids = {r[2] for r in rows}
    reps = {p.pk: p.representation() for p in BackupPolicy.objects.filter(pk__in=policy_ids)}
    # Every item of a policy shares its latest slot, so it is computed once per policy.
    latest = {pid: schedule.previous_run(rep, now) for pid, rep in reps.items()}
    due: list[tuple[int, int, datetime, str]] = []
    for pk, vault_id, policy_id, last_slot, created_at, vm_name in rows:
        slot = latest[policy_id]
        # A new protection waits for its first slot after it was enabled.
        if slot > (last_slot or created_at):
            due.append((pk, vault_id, slot, vm_name))
    if not due:
        return 0
    with transaction.atomic():
        due = _still_due(due)
        if not due:
            return 0
        jobs = Job.objects.bulk_create(
            Job(
                operation=Operation.BACKUP,
                vault_id=vault_id,
                protected_item_id=pk,
                vm_name=vm_name,
                params={Param.SLOT: slot.isoformat()},
            )
            for pk, vault_id, slot, vm_name in due
        )
        SubTask.objects.bulk_create(
            SubTask(job=job, order=i, name=name)
            for job in jobs
            for i, name in enumerate((TAKE_SNAPSHOT, TRANSFER))
        )
        by_slot: dict[datetime, list[int]] = {}
        for pk, _, slot, _ in due:
            by_slot.setdefault(slot, []).append(pk)
        for slot, pks in by_slot.items():
            ProtectedVM.objects.filter(pk__in=pks).update(last_scheduled_slot=slot)
        queue.deliver_many([job.pk for job in jobs])
    return len(jobs)


def _still_due(
    due: list[tuple[int, int, datetime, str]],
) -> list[tuple[int, int, datetime, str]]:
    """Those of `due` that are still due once their rows are locked (inside the caller's
    transaction).

    Every default worker runs the schedule's messages, so two dispatches can run at once, and
    "backup now" can run beside one: both read the same due items before either commits, and
    each VM got two backups of one slot. Locking the rows (in id order, so two dispatchers
    never deadlock) waits for the other to commit; the read after the lock is a new statement,
    so it sees that other's jobs and slots. `backup_now` locks the row the same way.
    """
    pks = [pk for pk, _, _, _ in due]
    lock_rows(ProtectedVM, pks)
    fresh = dict(items_to_back_up().filter(pk__in=pks).values_list("pk", "last_scheduled_slot"))
    still = []
    for row in due:
        pk, _, slot, _ = row
        if pk not in fresh:
            continue  # busy now: "backup now" or another dispatch queued one
        last = fresh[pk]
        if last is None or slot > last:
            still.append(row)
    return still


# -- transfer retries ------------------------------------------------------------------------------


def _transfer_backoff(attempts: int) -> timedelta:
    """5 min, 10, 20, … at most 4 h between retries of a failed transfer."""
    return timedelta(minutes=min(5 * 2 ** max(attempts - 1, 0), 240))


def pending_transfers(now: datetime, vault_id: int | None = None) -> QuerySet[RecoveryPoint]:
    """Live RPs whose copy to the vault tier is owed and that no job is moving now."""
    pending = RecoveryPoint.objects.filter(
        transfer_due=True, in_vault_tier=False, in_snapshot_tier=True, soft_deleted_at=None
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    if vault_id is not None:
        pending = pending.filter(vault_id=vault_id)
    # One subquery, so that both conditions hold for the same job (an exclude() across a
    # multi-valued relation would match them on different jobs).
    moving = Job.objects.filter(
        operation__in=[Operation.TRANSFER, Operation.BACKUP],
        status__in=UNFINISHED,
        recovery_point__isnull=False,
    ).values("recovery_point")
    return pending.exclude(pk__in=moving)


def _transfer_waits(rp: RecoveryPoint, now: datetime) -> bool:
    return bool(
        rp.last_transfer_at and now - rp.last_transfer_at < _transfer_backoff(rp.transfer_attempts)
    )


def enqueue_pending_transfers(now: datetime, vault_id: int | None = None) -> int:
    """Retry transfers that failed: one `transfer` job per RP whose backoff has passed.

    Two dispatches can run at once: the RPs are locked, then read again (`lock_rows`)."""
    return _queue_rp_jobs(
        lambda: pending_transfers(now, vault_id),
        lambda rp: _transfer_waits(rp, now),
        Operation.TRANSFER,
        TRANSFER,
    )


def _queue_rp_jobs(
    candidates: Callable[[], QuerySet[RecoveryPoint]],
    waits: Callable[[RecoveryPoint], bool],
    operation: str,
    subtask: str,
) -> int:
    """One `operation` job per RP of `candidates()` that does not wait. Two dispatches can run
    at once (every default worker runs the schedule): the RPs are locked in id order, then read
    again, so only one of them queues each RP's job."""
    due = [rp.pk for rp in candidates() if not waits(rp)]
    if not due:
        return 0
    created = 0
    with transaction.atomic():
        lock_rows(RecoveryPoint, due)
        fresh = candidates().filter(pk__in=due)
        for rp in fresh.select_related("vault", "protected_item__vm"):
            if waits(rp):
                continue
            create_job(
                operation=operation,
                vault=rp.vault,
                item=rp.protected_item,
                recovery_point=rp,
                params={Param.RP: str(rp.pk)},
                subtasks=[subtask],
            )
            created += 1
    return created


# -- replication to the secondary location ---------------------------------------------------------


def queue_replication(rp: RecoveryPoint) -> Job | None:
    """Mark an RP that just reached the vault tier as owed to the vault's secondary location
    and queue its `replicate` job (delivered on commit); None when the vault has none."""
    if not rp.vault.has_secondary:
        return None
    with transaction.atomic():
        RecoveryPoint.objects.filter(pk=rp.pk).update(
            replication=Replication.PENDING, replication_error=""
        )
        return create_job(
            operation=Operation.REPLICATE,
            vault=rp.vault,
            item=rp.protected_item,
            recovery_point=rp,
            params={Param.RP: str(rp.pk)},
            subtasks=[REPLICATE],
        )


def owed_replications() -> QuerySet[RecoveryPoint]:
    """Live RPs in the vault tier whose second copy is pending or failed."""
    return RecoveryPoint.objects.live().filter(
        in_vault_tier=True, replication__in=[Replication.PENDING, Replication.FAILED]
    )


def replications_to_queue(vault_id: int | None = None) -> QuerySet[RecoveryPoint]:
    """Owed RPs of vaults with a secondary location that have no `replicate` job queued or
    running."""
    busy = Job.objects.filter(
        operation=Operation.REPLICATE, status__in=UNFINISHED, recovery_point__isnull=False
    ).values("recovery_point")
    owed = owed_replications().filter(vault__secondary_location__gt="").exclude(pk__in=busy)
    if vault_id is not None:
        owed = owed.filter(vault_id=vault_id)
    return owed


def _replication_waits(rp: RecoveryPoint, now: datetime) -> bool:
    return bool(
        rp.replication == Replication.FAILED
        and rp.last_replication_at
        and now - rp.last_replication_at < _transfer_backoff(rp.replication_attempts)
    )


def enqueue_pending_replications(now: datetime, vault_id: int | None = None) -> int:
    """One `replicate` job per owed RP that has none queued or running: failed ones once their
    backoff has passed, pending ones (their job was lost) at once.

    Two dispatches can run at once: the RPs are locked, then read again (`lock_rows`).
    `queue_replication` writes the RP's row before it queues its job, so it waits for this
    lock, and this read after the lock sees its job."""
    return _queue_rp_jobs(
        lambda: replications_to_queue(vault_id),
        lambda rp: _replication_waits(rp, now),
        Operation.REPLICATE,
        REPLICATE,
    )
