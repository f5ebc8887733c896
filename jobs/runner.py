"""Running one job: claim it, keep its heartbeat, record progress, finish it honestly.

1. Claim: a conditional UPDATE from queued to in_progress; zero rows means a duplicate delivery
   or a job cancelled while queued, and the worker walks away.
2. Run the operation's handler with a `JobContext` (progress, sub-tasks, warnings, cancel).
3. Finish: completed, completed with warnings, cancelled or failed, with the error's code.
A heartbeat thread writes `heartbeat_at` while the handler runs; `reap` fails jobs whose
heartbeat stopped (the worker died), so nothing stays "in progress" forever.

The runner knows no job kind: each registers its handler (and what to do when its worker is
lost) with `@handles(operation)` where it is defined, and apps that react to finished jobs
(alerts) receive `jobs.signals.job_finished`. So the runner imports nothing that runs jobs.
"""

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import close_old_connections, connection, models, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from jobs import queue
from jobs.models import RUNNING, UNFINISHED, Job, Operation, Status, SubTask
from jobs.signals import job_finished
from portal.options import option
from vaults import access, audit
from vaults.models import ProtectedVM, RecoveryPoint, Vault

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
# A job whose heartbeat is older than this is declared dead by the reaper.
HEARTBEAT_TIMEOUT = timedelta(minutes=2)


class JobCancelled(Exception):
    pass


class JobError(Exception):
    """A failure with a code and a message meant for the person reading the job."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# A write that failed for want of space: the disk (or the user's quota on it) is full.
_FULL_DISK = {errno.ENOSPC, errno.EDQUOT}


def full_disk(e: BaseException) -> OSError | None:
    """The OSError saying a disk is full, if that is why `e` happened (it or any cause)."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _FULL_DISK:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def full_disk_reason(e: BaseException, where: str) -> str:
    """ "<where> is full (<why>)", where names the disk, e.g. "The snapshot disk of host h1"."""
    full = full_disk(e) or e
    return f"{where} is full ({getattr(full, 'strerror', None) or full})"


def no_space(e: BaseException, where: str) -> JobError:
    return JobError("no_space", f"{full_disk_reason(e, where)}. Free space there, then try again.")


class JobContext:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.warnings: list[dict[str, str]] = list(job.warnings)
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    @property
    def vault(self) -> Vault:
        """The vault the job works on (every kind but a site-wide one has one)."""
        if self.job.vault is None:
            raise JobError("internal_error", f"This {self.job.operation} job has no vault.")
        return self.job.vault

    # -- sub-tasks -------------------------------------------------------------------------------
    def subtask(self, name: str) -> SubTask:
        sub, _ = SubTask.objects.get_or_create(
            job=self.job, name=name, defaults={"order": self.job.subtasks.count()}
        )
        return sub

    def start_subtask(self, name: str) -> SubTask:
        sub = self.subtask(name)
        sub.status, sub.started_at = Status.IN_PROGRESS, timezone.now()
        sub.save(update_fields=["status", "started_at"])
        return sub

    def end_subtask(self, sub: SubTask, status: str, message: str = "") -> None:
        sub.status, sub.ended_at, sub.message = status, timezone.now(), message
        sub.save(update_fields=["status", "ended_at", "message"])

    # -- progress --------------------------------------------------------------------------------
    def progress(
        self, done: int, total: int | None = None, *, force: bool = False, **result: object
    ) -> None:
        """Record bytes done (and any `result` keys) in one UPDATE, at most twice a second
        unless forced."""
        now = time.monotonic()
        self.job.bytes_done = done
        if total is not None:
            self.job.bytes_total = total
        self.job.result.update(result)
        if force or now - self._last_progress >= 0.5:
            self._last_progress = now
            fields: dict[str, Any] = {
                "bytes_done": self.job.bytes_done,
                "bytes_total": self.job.bytes_total,
            }
            if result:
                fields["result"] = self.job.result
            Job.objects.filter(pk=self.job.pk).update(**fields)

    def warn(self, code: str, message: str) -> None:
        self.warnings.append({"code": code, "message": message})
        Job.objects.filter(pk=self.job.pk).update(warnings=self.warnings)

    def set_result(self, **values: object) -> None:
        self.job.result.update(values)
        Job.objects.filter(pk=self.job.pk).update(result=self.job.result)

    # -- cancel ----------------------------------------------------------------------------------
    def cancelled(self) -> bool:
        """True once somebody asked to cancel; reads the database at most once a second."""
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            status = Job.objects.filter(pk=self.job.pk).values_list("status", flat=True).first()
            self._cancelled = status == Status.CANCELLING
        return self._cancelled

    def check_cancel(self) -> None:
        if self.cancelled():
            raise JobCancelled()


class _Heartbeat(threading.Thread):
    def __init__(self, job_id: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id = job_id
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.wait(HEARTBEAT_SECONDS):
                Job.objects.filter(pk=self.job_id).update(heartbeat_at=timezone.now())
        finally:
            connection.close()


# -- the registry of job kinds ---------------------------------------------------------------------

Handler = Callable[[JobContext], None]
WorkerLostHook = Callable[[Job], None]


@dataclass(frozen=True)
class JobKind:
    """How jobs of one operation run: the handler a worker calls, and what happens after such
    a job failed without its worker (lost while it ran, or its message never arrived)."""

    handler: Handler
    on_worker_lost: WorkerLostHook | None = None


# Filled when the modules that run jobs are imported (each app's AppConfig.ready imports them).
REGISTRY: dict[str, JobKind] = {}


def handles(
    operation: Operation, *, on_worker_lost: WorkerLostHook | None = None
) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of `operation` jobs."""

    def register(handler: Handler) -> Handler:
        kind = JobKind(handler, on_worker_lost)
        if REGISTRY.setdefault(operation, kind) != kind:
            raise ValueError(f"{operation} jobs already have a handler: {REGISTRY[operation]}")
        return handler

    return register


def job_kind(operation: str) -> JobKind:
    """The registered kind of `operation`; a job nobody registered fails loudly, naming it."""
    kind = REGISTRY.get(operation)
    if kind is None:
        log.error("no handler is registered for %s jobs", operation)
        raise JobError("internal_error", f"No handler is registered for {operation} jobs.")
    return kind


def claim(job_id: int) -> Job | None:
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.IN_PROGRESS,
        started_at=now,
        heartbeat_at=now,
        worker=queue.identity(),
        waiting_message="",
    )
    if not claimed:
        return None
    return Job.objects.get(pk=job_id)


def finish(
    job: Job,
    status: str,
    *,
    code: str = "",
    message: str = "",
    warnings: list[dict[str, str]] | None = None,
) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {"status": status, "ended_at": now, "heartbeat_at": now}
    if code or message:
        fields.update(error_code=code, error_message=message)
    if warnings is not None:
        fields["warnings"] = warnings
    # Only a job still running may be finished, so a reaped job is not resurrected.
    Job.objects.filter(pk=job.pk, status__in=RUNNING).update(**fields)
    if status in (Status.FAILED, Status.CANCELLED):
        SubTask.objects.filter(job=job, status__in=UNFINISHED).update(status=status, ended_at=now)
    for key, value in fields.items():
        setattr(job, key, value)
    _announce_finished(job)


def _announce_finished(job: Job) -> None:
    """Send `job_finished` (alerts subscribe to it); a receiver that fails never fails the job."""
    for receiver, outcome in job_finished.send_robust(sender=Job, job=job):
        if isinstance(outcome, Exception):
            log.error(
                "%s failed for finished job %s",
                getattr(receiver, "__qualname__", receiver),
                job.pk,
                exc_info=outcome,
            )


def _unexpected(job: Job, e: Exception) -> JobError:
    """A failure no handler named: a full disk says so; anything else is a bug, logged loudly."""
    full = full_disk(e)
    if full is not None:
        where = (
            f"The disk holding {full.filename}" if full.filename else "A disk this job writes to"
        )
        return no_space(e, where)
    log.exception("job %s failed", job.pk)
    return JobError("internal_error", f"{type(e).__name__}: {e}")


def run_job(job_id: int) -> str:
    """Entry point of every django-q2 delivery. Returns the final status (for the q2 log)."""
    close_old_connections()
    job = claim(job_id)
    if job is None:  # delivered again (see jobs.queue): already taken, or cancelled
        return "not claimed"
    heartbeat = _Heartbeat(job.pk)
    heartbeat.start()
    ctx = JobContext(job)
    try:
        job_kind(job.operation).handler(ctx)
    except JobCancelled:
        finish(job, Status.CANCELLED, message="Cancelled on request.", warnings=ctx.warnings)
    except JobError as e:
        finish(job, Status.FAILED, code=e.code, message=e.message, warnings=ctx.warnings)
    except Exception as e:
        error = _unexpected(job, e)
        finish(job, Status.FAILED, code=error.code, message=error.message, warnings=ctx.warnings)
    else:
        status = Status.COMPLETED_WITH_WARNINGS if ctx.warnings else Status.COMPLETED
        finish(job, status, warnings=ctx.warnings)
    finally:
        heartbeat.stop.set()
        heartbeat.join(timeout=5)
    return job.status


def create_job(
    *,
    operation: str,
    vault: Vault | None = None,
    item: ProtectedVM | None = None,
    by: User | None = None,
    params: dict[str, Any] | None = None,
    subtasks: Sequence[str] = (),
    deliver: bool = True,
    recovery_point: RecoveryPoint | None = None,
    reserved_vm_name: str = "",
    status: str = Status.QUEUED,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    result: dict[str, Any] | None = None,
) -> Job:
    """Create a queued job (and its sub-tasks) and deliver it once the transaction commits.

    A catalog-only operation's record is created finished (`status`, `started_at`, `ended_at`,
    `result`) and not delivered."""
    with transaction.atomic():
        job = Job.objects.create(
            operation=operation,
            vault=vault,
            protected_item=item,
            recovery_point=recovery_point,
            vm_name=item.vm.name if item is not None else "",
            created_by=by,
            params=params or {},
            reserved_vm_name=reserved_vm_name,
            status=status,
            started_at=started_at,
            ended_at=ended_at,
            result=result or {},
        )
        for order, name in enumerate(subtasks):
            SubTask.objects.create(job=job, order=order, name=name)
        if deliver:
            queue.deliver(job.pk)
    return job


def lock_rows(model: type[models.Model], pks: Iterable[object]) -> None:
    """Lock rows of `model` until the caller's transaction ends, in id order (two callers
    locking overlapping sets never deadlock).

    For "queue one job per row unless one is queued": every default worker runs the
    schedule's messages, so two dispatches can run at once, both read that no job is queued
    and both queue one. Lock the candidate rows first, then read again: the read after the
    lock is a new statement, so it sees the jobs the other committed while this one waited."""
    list(
        model._default_manager.select_for_update()
        .filter(pk__in=list(pks))
        .order_by("pk")
        .values("pk")
    )


def request_cancel(job: Job) -> bool:
    """Queued jobs are cancelled at once; running ones are asked to stop at the next check."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, ended_at=now, error_message="Cancelled before it started."
    ):
        job.refresh_from_db()
        return True
    changed = Job.objects.filter(pk=job.pk, status=Status.IN_PROGRESS).update(
        status=Status.CANCELLING
    )
    job.refresh_from_db()
    return bool(changed)


class JobFinished(ValidationError):
    """The job has already finished, so there is nothing to cancel (the API answers 409)."""


def cancel_job(job: Job, *, by: User, request: HttpRequest | None = None) -> Job:
    """Cancel a job for a user (operators): checked, then `request_cancel`, then audited. The
    one way pages and the API cancel a job.

    A queued job is cancelled at once, a running one becomes cancelling; a job already
    cancelling is left as it is. A finished job raises `JobFinished`."""
    if job.vault is None:
        raise PermissionDenied("Only the system cancels jobs that belong to no vault.")
    access.require(by, job.vault, "cancel_job")
    before = job.status
    if not request_cancel(job) and job.status != Status.CANCELLING:
        raise JobFinished(
            {"detail": f"Job {job.pk} has already finished ({job.get_status_display().lower()})."}
        )
    if job.status != before:
        audit.record(
            "job.cancel",
            actor=by,
            request=request,
            vault=job.vault,
            obj=job,
            before={"status": before},
            after={"status": job.status},
        )
    return job


# What a job lost with its worker left behind, and what happens next.
AFTER_WORKER_LOST: dict[str, str] = {
    Operation.BACKUP: "Nothing it was writing was committed. The next scheduled backup will "
    "try again.",
    Operation.TRANSFER: "The snapshot is kept and the transfer will be retried.",
    Operation.RESTORE: "A restored disk is put in place only once it is complete, so no target "
    "holds a partial disk. Ask for the restore again.",
    Operation.CLEANUP: "The hourly cleanup runs it again.",
    Operation.PURGE: "The hourly purge finishes it.",
    Operation.DELETE_BACKUP_DATA: "The hourly purge finishes it.",
    Operation.UPDATE_KEY: "Ask for the key update again; it resumes where this one stopped.",
    Operation.DRILL: "A drill never changes the recovery point; its scratch space is removed. "
    "Run the drill again.",
    Operation.EXTEND_LOCKS: "Locks already extended stay; the next retention change that "
    "moves these recovery points later extends the rest.",
}


def worker_lost_message(operation: str) -> str:
    then = AFTER_WORKER_LOST.get(operation, "Start it again if it is still needed.")
    return f"The worker running this job stopped responding. {then}"


def _fail_unfinished(
    job_id: int, statuses: Sequence[str], *, code: str, message: str, why: str, now: datetime
) -> Job | None:
    """Fail a job that no worker will finish (if it is still in one of `statuses`), as `finish`
    would: its sub-tasks end too (`why` in short), its kind's on-worker-lost hook runs and
    `job_finished` is sent. None if it moved on."""
    updated = Job.objects.filter(pk=job_id, status__in=statuses).update(
        status=Status.FAILED, ended_at=now, error_code=code, error_message=message
    )
    if not updated:
        return None
    SubTask.objects.filter(job_id=job_id, status__in=UNFINISHED).update(
        status=Status.FAILED, ended_at=now, message=why
    )
    job = Job.objects.select_related("vault", "protected_item__vm__host").get(pk=job_id)
    kind = REGISTRY.get(job.operation)
    if kind is not None and kind.on_worker_lost is not None:
        try:
            kind.on_worker_lost(job)
        except Exception:
            log.exception("cleaning up after the lost %s job %s failed", job.operation, job_id)
    _announce_finished(job)
    return job


def reap(now: datetime | None = None) -> int:
    """Fail jobs whose worker died (no heartbeat for HEARTBEAT_TIMEOUT)."""
    now = now or timezone.now()
    dead = Job.objects.filter(status__in=RUNNING, heartbeat_at__lt=now - HEARTBEAT_TIMEOUT)
    ids = list(dead.values_list("pk", "operation"))
    for job_id, operation in ids:
        _fail_unfinished(
            job_id,
            RUNNING,
            code="worker_lost",
            message=worker_lost_message(operation),
            why="Worker lost.",
            now=now,
        )
    return len(ids)


def redeliver(now: datetime | None = None) -> dict[str, int]:
    """Re-send the message of queued jobs that no worker will run, or fail them.

    A queued job whose last message went out more than REDELIVER_AFTER_MINUTES ago and that
    has no message in the broker (none waiting, none held by a worker: see `jobs.queue`) was
    lost in delivery; it gets a new message, at most REDELIVERIES times, then fails as
    `not_delivered`. Jobs whose message is still in the broker, on any queue, are left alone:
    they wait for a free worker, for the lock of a cluster that died to run out, or for their
    host's worker to come back (`jobs.workers.note_waiting` says so on the job); a waiting
    message on a queue the job's routing no longer names (the host's `dedicated_worker` changed)
    is moved (`jobs.queue.reroute`). A new message goes where `jobs.routing` sends the job now.
    """
    now = now or timezone.now()
    after = timedelta(minutes=option("REDELIVER_AFTER_MINUTES", 5))
    limit = int(option("REDELIVERIES", 3))
    stale = list(
        Job.objects.filter(status=Status.QUEUED)
        .filter(
            Q(delivered_at__lt=now - after)
            | Q(delivered_at__isnull=True, created_at__lt=now - after)
        )
        .values_list("pk", "deliveries")
    )
    counts = {"redelivered": 0, "not_delivered": 0, "rerouted": 0}
    if not stale:
        return counts
    held = queue.with_message([pk for pk, _ in stale])
    counts["rerouted"] = len(queue.reroute(list(held)))
    for job_id, deliveries in stale:
        if job_id in held:
            continue
        if deliveries > limit:
            counts["not_delivered"] += _not_delivered(job_id, deliveries, now)
        else:
            counts["redelivered"] += _send_again(job_id, deliveries, now)
    if any(counts.values()):
        log.warning("queued jobs whose message was lost or on a stale queue: %s", counts)
    return counts


def _send_again(job_id: int, deliveries: int, now: datetime) -> bool:
    with transaction.atomic():
        # Conditional, so that two reapers at once send one message, not two.
        sent = Job.objects.filter(pk=job_id, status=Status.QUEUED, deliveries=deliveries).update(
            deliveries=deliveries + 1, delivered_at=now
        )
        if sent:
            queue.deliver(job_id)
    return bool(sent)


def _not_delivered(job_id: int, deliveries: int, now: datetime) -> bool:
    message = (
        f"This job never started: its task-queue message was lost {deliveries} times. Check "
        "that the workers (manage.py worker) are running and share the web server's SECRET_KEY "
        "and database."
    )
    failed = _fail_unfinished(
        job_id,
        [Status.QUEUED],
        code="not_delivered",
        message=message,
        why="Never started.",
        now=now,
    )
    return failed is not None
