"""The backup flow (DESIGN §3): schedule → extension → take snapshot → transfer to vault.

A backup job has two sub-tasks. "Take snapshot" runs the VM's consistency hooks around a
point-in-time capture of every selected disk into the host's snapshot-tier store; the recovery
point exists (type *Snapshot*) the moment the engine commits its manifest. "Transfer data to
vault" copies the chunks the vault store lacks; a failure there leaves a good snapshot, so the
job completes with warnings and later `transfer` jobs retry until the RP expires.
"""

import logging
import shutil
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import engine
from engine.connectors import (
    ConnectorError,
    DiskSpec,
    HookConfig,
    SnapshotCancelled,
    VMSpec,
    connector_for,
)
from engine.connectors.hooks import clean_env, describe, run_process
from inventory.models import ExtensionState
from jobs import queue
from jobs.hook_details import THAW_AFTER_WORKER_LOST
from jobs.models import Job, Operation, Status, SubTask
from jobs.reconcile import lock_running_job, work_dir
from jobs.runner import (
    JobCancelled,
    JobContext,
    JobError,
    create_job,
    full_disk,
    full_disk_reason,
    no_space,
)
from policies import retention, schedule
from policies.models import BackupPolicy, Consistency
from security.kek import kek_for
from vaults import access, audit
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, Vault
from vaults.stores import (
    SNAPSHOT,
    open_or_create_snapshot_store,
    open_or_create_vault_store,
    rp_store,
)

log = logging.getLogger(__name__)

TAKE_SNAPSHOT = "Take snapshot"
TRANSFER = "Transfer data to vault"
ACTIVE = [Status.QUEUED, Status.IN_PROGRESS, Status.CANCELLING]
SCHEDULABLE = [ItemState.INITIAL_BACKUP_PENDING, ItemState.PROTECTED, ItemState.PROTECTION_ERROR]
ON_DEMAND_DEFAULT_DAYS = 30


def _option(name: str, default):
    return settings.LIFEBOAT.get(name, default)


# -- enqueueing ------------------------------------------------------------------------------------


class BackupBusy(ValidationError):
    """A backup of the item is already queued or running (one backup of a VM at a time).

    A ValidationError, so pages show it like any refusal; the API answers 409 Conflict."""


def _active_backup(item: ProtectedVM) -> Job | None:
    return Job.objects.filter(
        protected_item=item, operation=Operation.BACKUP, status__in=ACTIVE
    ).first()


def backup_now(item: ProtectedVM, *, by, request=None, retain_until=None) -> Job:
    """ "Backup now": an on-demand backup kept until `retain_until` (default 30 days)."""
    access.require(by, item.vault, "backup_now")
    if item.state not in SCHEDULABLE:
        raise ValidationError(
            {
                "detail": f"{item.vm.name} is {item.get_state_display().lower()}; resume "
                "protection before backing it up."
            }
        )
    now = timezone.now()
    if retain_until is None:
        retain_until = now + timedelta(days=ON_DEMAND_DEFAULT_DAYS)
    try:
        expires = retention.expiry_for_on_demand(now, retain_until)
    except ValueError as e:
        raise ValidationError({"retain_until": str(e)}) from None
    with transaction.atomic():
        # Lock the item so two clicks cannot both pass the one-backup-at-a-time check.
        ProtectedVM.objects.select_for_update().filter(pk=item.pk).first()
        running = _active_backup(item)
        if running is not None:
            raise BackupBusy(
                {
                    "detail": f"A backup of {item.vm.name} is already {running.status.replace('_', ' ')} "
                    f"(job {running.pk})."
                }
            )
        job = create_job(
            operation=Operation.BACKUP,
            vault=item.vault,
            item=item,
            by=by,
            params={"on_demand": True, "retain_until": expires.isoformat()},
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


def enqueue_due_backups(now: datetime) -> int:
    """The dispatcher's tick: one backup job per due item, in bulk.

    Queries do not grow with the number of items that are not due: one for the items, one for
    their policies, one for items already busy; then a bulk insert of jobs and sub-tasks, one
    UPDATE per distinct slot, and one django-q2 message per due job.
    """
    rows = list(
        ProtectedVM.objects.filter(state__in=SCHEDULABLE).values_list(
            "pk", "vault_id", "policy_id", "last_scheduled_slot", "created_at", "vm__name"
        )
    )
    if not rows:
        return 0
    policy_ids = {r[2] for r in rows}
    reps = {p.pk: p.representation() for p in BackupPolicy.objects.filter(pk__in=policy_ids)}
    # Every item of a policy shares its latest slot, so it is computed once per policy.
    latest = {pid: schedule.previous_run(rep, now) for pid, rep in reps.items()}
    busy = set(
        Job.objects.filter(operation=Operation.BACKUP, status__in=ACTIVE).values_list(
            "protected_item_id", flat=True
        )
    )
    due: list[tuple[int, int, datetime, str]] = []
    for pk, vault_id, policy_id, last_slot, created_at, vm_name in rows:
        slot = latest[policy_id]
        # A new protection waits for its first slot after it was enabled.
        if slot > (last_slot or created_at) and pk not in busy:
            due.append((pk, vault_id, slot, vm_name))
    if not due:
        return 0
    with transaction.atomic():
        jobs = Job.objects.bulk_create(
            Job(
                operation=Operation.BACKUP,
                vault_id=vault_id,
                protected_item_id=pk,
                vm_name=vm_name,
                params={"slot": slot.isoformat()},
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


def _transfer_backoff(attempts: int) -> timedelta:
    """5 min, 10, 20, … at most 4 h between retries of a failed transfer."""
    return timedelta(minutes=min(5 * 2 ** max(attempts - 1, 0), 240))


def enqueue_pending_transfers(now: datetime, vault_id: int | None = None) -> int:
    """Retry transfers that failed: one `transfer` job per RP whose backoff has passed."""
    pending = RecoveryPoint.objects.filter(
        transfer_due=True, in_vault_tier=False, in_snapshot_tier=True, soft_deleted_at=None
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    if vault_id is not None:
        pending = pending.filter(vault_id=vault_id)
    # One subquery, so that both conditions hold for the same job (an exclude() across a
    # multi-valued relation would match them on different jobs).
    moving = Job.objects.filter(
        operation__in=[Operation.TRANSFER, Operation.BACKUP],
        status__in=ACTIVE,
        recovery_point__isnull=False,
    ).values("recovery_point")
    pending = pending.exclude(pk__in=moving).select_related("protected_item__vm")
    created = 0
    for rp in pending:
        if rp.last_transfer_at and now - rp.last_transfer_at < _transfer_backoff(
            rp.transfer_attempts
        ):
            continue
        create_job(
            operation=Operation.TRANSFER,
            vault_id=rp.vault_id,
            item=rp.protected_item,
            recovery_point=rp,
            params={"rp": str(rp.pk)},
            subtasks=[TRANSFER],
        )
        created += 1
    return created


# -- running ---------------------------------------------------------------------------------------


def vm_spec(vm, luns: list[int]) -> VMSpec:
    return VMSpec(
        name=vm.name,
        declared_power_state=vm.power_state,
        probe_command=vm.power_probe_command,
        disks=tuple(DiskSpec(d.lun, Path(d.path)) for d in vm.disks.all() if d.lun in luns),
        hooks=HookConfig(
            pre_script=vm.pre_script,
            pre_script_params=tuple(vm.pre_script_params or ()),
            post_script=vm.post_script,
            post_script_params=tuple(vm.post_script_params or ()),
            script_timeout=vm.script_timeout,
            script_retries=vm.script_retries,
            continue_on_failure=vm.continue_on_failure,
            freeze_enabled=vm.freeze_enabled,
            freeze_command=vm.freeze_command,
            thaw_command=vm.thaw_command,
            freeze_timeout=vm.freeze_timeout,
        ),
    )


class EngineProgress:
    """Engine progress → job bytes and per-disk progress, written at most twice a second."""

    def __init__(self, ctx: JobContext, phase: str, sizes: dict[int, int]):
        self.ctx, self.phase = ctx, phase
        self.disks = {lun: {"done": 0, "total": size} for lun, size in sizes.items()}
        self.done = 0
        self.last_write = 0.0
        self.started = time.monotonic()
        limit = float(_option("THROTTLE_MIBPS", 0) or 0)
        self.throttle = limit * (1 << 20)

    def __call__(self, p: engine.Progress) -> None:
        if self.throttle:  # keep bytes_done / elapsed at most the limit (tests, drills)
            time.sleep(max(0.0, p.bytes_done / self.throttle - (time.monotonic() - self.started)))
        delta, self.done = p.bytes_done - self.done, p.bytes_done
        if p.lun is not None and p.lun in self.disks:
            disk = self.disks[p.lun]
            disk["done"] = min(disk["total"], disk["done"] + max(delta, 0))
        now = time.monotonic()
        finished = p.bytes_done >= p.bytes_total
        if finished:
            for disk in self.disks.values():
                disk["done"] = disk["total"]
        if finished or now - self.last_write >= 0.5:
            self.last_write = now
            self.ctx.progress(
                p.bytes_done,
                p.bytes_total,
                force=True,
                progress={"phase": self.phase, "disks": self._json()},
            )

    def _json(self) -> list[dict]:
        return [{"lun": lun, **v} for lun, v in sorted(self.disks.items())]


def engine_error(e: engine.EngineError, where: str = "A disk this job writes to") -> JobError:
    """The job error for an engine failure; `where` names the disk the job writes to, for when
    that disk is full."""
    if full_disk(e) is not None:
        return no_space(e, where)
    if isinstance(e, engine.SourceUnreadable) and isinstance(e.__cause__, FileNotFoundError):
        return JobError("disk_not_found", f"A disk image is missing: {e}")
    if isinstance(e, engine.KeyUnavailable):
        return JobError("key_unavailable", f"The vault's encryption key is unavailable: {e}")
    if isinstance(e, engine.SourceUnreadable):
        return JobError("source_unreadable", f"A disk could not be read: {e}")
    if isinstance(e, engine.CorruptionError):
        return JobError("corruption", f"Stored data is damaged: {e}")
    return JobError(type(e).__name__.lower(), str(e))


def _slot_is_days_last(rep: dict, slot: datetime) -> bool:
    return schedule.slot_day(rep, schedule.next_run(rep, slot)) != schedule.slot_day(rep, slot)


def _plan_retention(item: ProtectedVM, job: Job, now: datetime) -> dict:
    """Tags, expiry and whether this backup goes to the vault tier."""
    policy = item.policy
    rep = policy.representation()
    snapshot_until = now + timedelta(days=policy.instant_restore_days)
    if job.params.get("on_demand"):
        expires = datetime.fromisoformat(job.params["retain_until"])
        return {
            "tags": ["on_demand"],
            "expires_at": expires,
            "retain_until": expires,
            "snapshot_expires_at": min(snapshot_until, expires),
            "transfer": True,
        }
    slot = datetime.fromisoformat(job.params["slot"]) if "slot" in job.params else now
    transfer = True
    if rep["schedule"]["frequency"] == "hourly":
        # Only the day's last backup goes to the vault; if that one failed, the next day's first.
        # A backup belongs to its slot's day, not to the day it ran (retention's rule), so the
        # earlier backups are placed by the slot their job ran for (on-demand ones by time).
        day = schedule.slot_day(rep, slot)
        rows = item.recovery_points.filter(
            time__gte=min(slot, now) - timedelta(days=3),
            soft_deleted_at=None,
            jobs__operation=Operation.BACKUP,
        ).values_list("jobs__params__slot", "time", "transfer_due", "in_vault_tier")
        recent = [(datetime.fromisoformat(s) if s else t, due, sent) for s, t, due, sent in rows]
        first_of_day = not any(schedule.slot_day(rep, t) == day for t, _, _ in recent)
        yesterday_sent = any(
            schedule.slot_day(rep, t) == day - timedelta(days=1) and (due or sent)
            for t, due, sent in recent
        )
        transfer = _slot_is_days_last(rep, slot) or (first_of_day and not yesterday_sent)
    tags, expires = retention.tags_and_expiry(rep, slot, is_daily_last=transfer)
    return {
        "tags": tags,
        "expires_at": expires,
        "retain_until": None,
        "snapshot_expires_at": min(snapshot_until, expires),
        "transfer": transfer,
    }


def _set_item_status(item: ProtectedVM, status: str) -> None:
    """Record the last backup's outcome; a failure puts an active item in protection error."""
    fields = {"last_backup_at": timezone.now(), "last_backup_status": status}
    if status in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS):
        fields["state"] = ItemState.PROTECTED
    elif status == Status.FAILED:
        fields["state"] = ItemState.PROTECTION_ERROR
    ProtectedVM.objects.filter(pk=item.pk, state__in=SCHEDULABLE).update(**fields)


def _check_extension(ctx: JobContext, vm, spec: VMSpec, connector) -> None:
    """Install/validate the backup extension on a running VM's first backup (and after a
    failure, so a repaired configuration heals on the next run)."""
    if connector.probe_power_state(spec) == "stopped":
        return
    if vm.extension_state == ExtensionState.INSTALLED and not ctx.job.params.get("repair"):
        return
    status = connector.validate_extension(spec)
    vm.extension_state = ExtensionState.INSTALLED if status.ok else ExtensionState.FAILED
    vm.extension_code = "" if status.ok else status.code
    vm.extension_message = "" if status.ok else status.message
    vm.save(update_fields=["extension_state", "extension_code", "extension_message"])
    if not status.ok and not vm.continue_on_failure:
        raise JobError(status.code, status.message)


def run_backup(ctx: JobContext) -> None:
    job = ctx.job
    item = ProtectedVM.objects.select_related("vm__host", "policy", "vault").get(
        pk=job.protected_item_id
    )
    try:
        _backup(ctx, item)
    except Exception as e:
        status = Status.CANCELLED if isinstance(e, JobCancelled) else Status.FAILED
        _set_item_status(item, status)
        raise
    _set_item_status(item, Status.COMPLETED_WITH_WARNINGS if ctx.warnings else Status.COMPLETED)


def _backup(ctx: JobContext, item: ProtectedVM) -> None:
    job, vm, vault, policy = ctx.job, item.vm, item.vault, item.policy
    host = vm.host
    all_luns = [d.lun for d in vm.disks.all()]
    luns = item.selected_luns(all_luns)
    spec = vm_spec(vm, luns)
    connector = connector_for(host.connector)
    _check_extension(ctx, vm, spec, connector)

    # 1. Take snapshot ----------------------------------------------------------------------------
    sub = ctx.start_subtask(TAKE_SNAPSHOT)
    try:
        kek = kek_for(vault)
        snap = open_or_create_snapshot_store(vault, host, kek)
    except engine.EngineError as e:
        raise engine_error(e) from e
    now = timezone.now()
    plan = _plan_retention(item, job, now)
    parent = (
        item.recovery_points.filter(in_snapshot_tier=True, soft_deleted_at=None)
        .order_by("-time")
        .values_list("pk", flat=True)
        .first()
    )
    if parent is not None and not snap.has_manifest(str(parent)):
        parent = None  # e.g. removed by tiering meanwhile: a full read, still deduplicated
    rp_id = str(uuid.uuid4())
    snapshot_disk = f"The snapshot disk of host {host.name} ({host.snapshot_root})"

    def capture(views) -> engine.BackupResult:
        # Sized here, from the views: the connector has checked that every disk exists.
        progress = EngineProgress(ctx, "snapshot", {v.lun: v.path.stat().st_size for v in views})
        return engine.backup(
            engine.BackupRequest(
                store=snap,
                disks=[engine.DiskSource(v.lun, str(v.path)) for v in views],
                vm_name=vm.name,
                parent=str(parent) if parent else None,
                # Provisional and conservative; raised below once the hooks' outcome is known.
                consistency="crash",
                tags=plan["tags"],
                retain_until=plan["expires_at"],
                labels={"vault": vault.name, "job": str(job.pk)},
                rp_id=rp_id,
            ),
            progress=progress,
            cancel=ctx.cancelled,
        )

    workdir = work_dir(host, job.pk)
    try:
        outcome = connector.take_snapshot(
            spec,
            crash_only=policy.consistency == Consistency.CRASH_ONLY,
            workdir=workdir,
            capture=capture,
            cancel=ctx.cancelled,
        )
    except engine.Cancelled as e:
        raise JobCancelled() from e
    except SnapshotCancelled as e:
        raise JobCancelled() from e
    except ConnectorError as e:
        for code, message in getattr(e, "warnings", []):
            ctx.warn(code, message)
        raise JobError(e.code, e.message) from e
    except engine.EngineError as e:
        raise engine_error(e, snapshot_disk) from e
    except OSError as e:
        if full_disk(e) is None:
            raise
        raise no_space(e, snapshot_disk) from e
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the connector removed its clones, not this
    result: engine.BackupResult = outcome.result
    if outcome.consistency != "crash":
        engine.update_manifest_metadata(snap, rp_id, consistency=outcome.consistency)
    for code, message in outcome.warnings:
        ctx.warn(code, message)

    disks = [
        {
            "lun": d.lun,
            "size": d.size,
            "bytes_read": d.bytes_read,
            "bytes_changed": d.bytes_changed,
            "bytes_stored": d.bytes_stored,
            "change_detection": d.change_detection,
        }
        for d in result.disks
    ]
    with transaction.atomic():
        lock_running_job(job.pk)
        rp = RecoveryPoint.objects.create(
            id=rp_id,
            vault=vault,
            protected_item=item,
            parent_id=parent,
            time=now,
            consistency=outcome.consistency,
            in_snapshot_tier=True,
            in_vault_tier=False,
            snapshot_expires_at=plan["snapshot_expires_at"],
            tags=plan["tags"],
            expires_at=plan["expires_at"],
            retain_until=plan["retain_until"],
            disks=disks,
            included_luns=luns,
            excluded_luns=[lun for lun in all_luns if lun not in luns],
            size_bytes=sum(d["size"] for d in disks),
            transfer_due=plan["transfer"],
        )
        Job.objects.filter(pk=job.pk).update(recovery_point=rp)
    ctx.set_result(
        recovery_point=rp_id,
        consistency=outcome.consistency,
        snapshot_method=outcome.method,
        freeze_seconds=round(outcome.freeze_seconds, 3),
        hook_log=outcome.hook_log[-40:],
        bytes_read=result.bytes_read,
        bytes_changed=result.bytes_changed,
        bytes_stored=result.bytes_stored,
        disks=disks,
        snapshot_seconds=round(result.duration, 3),
    )
    ctx.end_subtask(
        sub,
        Status.COMPLETED,
        f"{outcome.consistency.replace('_', '-')}-consistent ({outcome.method}); "
        f"frozen {outcome.freeze_seconds:.2f} s; {mib(result.bytes_changed)} changed, "
        f"{mib(result.bytes_stored)} stored",
    )

    # 2. Transfer data to vault ------------------------------------------------------------------
    sub = ctx.subtask(TRANSFER)
    if not plan["transfer"]:
        ctx.end_subtask(
            sub,
            Status.COMPLETED,
            "Not needed: only the day's last backup of an hourly policy goes to the vault tier.",
        )
        return
    transfer_rp(ctx, rp, sub)


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _acquire_transfer_slot(ctx: JobContext, vault: Vault, sub: SubTask) -> None:
    """Wait until fewer than TRANSFERS_PER_VAULT transfers of this vault are running."""
    limit = int(_option("TRANSFERS_PER_VAULT", 2))
    while True:
        with transaction.atomic():
            Vault.objects.select_for_update().filter(pk=vault.pk).first()
            running = SubTask.objects.filter(
                job__vault=vault, name=TRANSFER, status=Status.IN_PROGRESS
            ).count()
            if running < limit:
                sub.status, sub.started_at = Status.IN_PROGRESS, timezone.now()
                sub.message = ""
                sub.save(update_fields=["status", "started_at", "message"])
                return
        if sub.message == "":
            sub.message = "Waiting for a transfer slot of this vault."
            sub.save(update_fields=["message"])
        ctx.check_cancel()
        time.sleep(1.0)


def transfer_rp(ctx: JobContext, rp: RecoveryPoint, sub: SubTask) -> bool:
    """Copy one RP from its snapshot store to the vault store. False (with a warning) on failure:
    the snapshot stays, and a later transfer job retries."""
    vault = rp.vault
    _acquire_transfer_slot(ctx, vault, sub)
    sizes = {d["lun"]: d["size"] for d in rp.disks}
    try:
        kek = kek_for(vault)
        src = rp_store(rp, SNAPSHOT, kek)
        dst = open_or_create_vault_store(vault, kek)
        if _option("FAIL_TRANSFERS", False):  # operators' switch for drills and tests
            raise engine.EngineError("transfers are disabled by LIFEBOAT['FAIL_TRANSFERS']")
        result = engine.transfer(
            src,
            dst,
            str(rp.pk),
            progress=EngineProgress(ctx, "transfer", sizes),
            cancel=ctx.cancelled,
        )
    except engine.Cancelled as e:
        raise JobCancelled() from e
    except (engine.EngineError, OSError) as e:
        RecoveryPoint.objects.filter(pk=rp.pk).update(
            transfer_attempts=rp.transfer_attempts + 1, last_transfer_at=timezone.now()
        )
        code, why = "transfer_failed", str(e)
        if full_disk(e) is not None:
            code, why = "no_space", full_disk_reason(e, f"the vault disk ({vault.store_path})")
        ctx.warn(
            code,
            f"Transfer to the vault tier failed: {why}. The snapshot is kept and the transfer "
            "will be retried.",
        )
        ctx.end_subtask(sub, Status.FAILED, why)
        return False
    RecoveryPoint.objects.filter(pk=rp.pk).update(
        in_vault_tier=True,
        transfer_due=False,
        transfer_attempts=rp.transfer_attempts + 1,
        last_transfer_at=timezone.now(),
    )
    ctx.set_result(
        transfer={
            "chunks_copied": result.chunks_copied,
            "bytes_copied": result.bytes_copied,
            "chunks_present": result.chunks_present,
            "seconds": round(result.duration, 3),
        }
    )
    ctx.end_subtask(
        sub,
        Status.COMPLETED,
        f"{result.chunks_copied} chunks ({mib(result.bytes_copied)}) copied, "
        f"{result.chunks_present} already in the vault",
    )
    return True


def run_transfer(ctx: JobContext) -> None:
    """A retried transfer of one RP (operation `transfer`)."""
    rp = RecoveryPoint.objects.select_related("vault", "protected_item__vm__host").get(
        pk=ctx.job.params["rp"]
    )
    sub = ctx.subtask(TRANSFER)
    if rp.in_vault_tier or not rp.transfer_due:
        ctx.end_subtask(sub, Status.COMPLETED, "Already in the vault tier.")
        return
    if not transfer_rp(ctx, rp, sub):
        # The job itself failed its one purpose; the RP keeps waiting for the next retry.
        raise JobError(ctx.warnings[-1]["code"], ctx.warnings[-1]["message"])


def after_backup_lost(job: Job) -> None:
    """A backup failed without its worker (worker lost, or never delivered): record the
    failure on the item. A lost worker's freeze watchdog died with it, so thaw the VM now (a
    thaw of a VM that is not frozen is harmless), and drop its work dir."""
    item = job.protected_item
    if item is None:
        return
    vm = item.vm
    if job.error_code == "worker_lost" and vm.freeze_enabled and vm.thaw_command:
        result = run_process(
            ["/bin/sh", "-c", vm.thaw_command],
            timeout=max(vm.freeze_timeout, 10),
            env=clean_env(vm.name, "thaw"),
        )
        message = (
            "Thawed after the worker was lost."
            if result.ok
            else ("THAW FAILED after the worker was lost: " + " ".join(describe("thaw", result)))
        )
        Job.objects.filter(pk=job.pk).update(
            warnings=[*job.warnings, {"code": THAW_AFTER_WORKER_LOST, "message": message}]
        )
    _set_item_status(item, Status.FAILED)
    shutil.rmtree(work_dir(vm.host, job.pk), ignore_errors=True)
