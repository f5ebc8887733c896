"""Running backups (DESIGN §3): take snapshot → transfer to vault. Queueing is `jobs.backup_queue`.

A backup job has two sub-tasks. "Take snapshot" runs the VM's consistency hooks around a
point-in-time capture of every selected disk into the host's snapshot-tier store; the recovery
point exists (type *Snapshot*) the moment the engine commits its manifest. "Transfer data to
vault" copies the chunks the vault store lacks; a failure there leaves a good snapshot, so the
job completes with warnings and later `transfer` jobs retry until the RP expires.
"""

import dataclasses
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import engine
from engine.connectors import (
    Connector,
    ConnectorError,
    DiskSpec,
    DiskView,
    HookConfig,
    SnapshotCancelled,
    SnapshotOutcome,
    VMSpec,
    connector_for,
)
from engine.connectors.hooks import clean_env, describe, run_process
from engine.connectors.spec import HypervisorSpec, ParentDisk
from inventory.models import Connector as HostConnector
from inventory.models import ExtensionState, PowerState, VirtualMachine
from jobs import anomaly, hypervisor, progress, runner
from jobs.backup_queue import SCHEDULABLE, TAKE_SNAPSHOT, TRANSFER, queue_replication
from jobs.hook_details import THAW_AFTER_WORKER_LOST
from jobs.locks import lock_new_copy
from jobs.models import Job, Operation, Param, RestoreTier, Status, SubTask
from jobs.progress import BACKUP_PLAN, EngineProgress
from jobs.reconcile import record_recovery_point, work_dir
from jobs.runner import (
    JobCancelled,
    JobContext,
    JobError,
    full_disk,
    full_disk_reason,
    no_space,
)
from policies import retention, schedule
from policies.models import Consistency
from policies.schedule import Policy
from portal.options import option
from portal.words import words
from security.kek import kek_for
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, RPConsistency, Vault
from vaults.stores import (
    open_or_create_snapshot_store,
    open_or_create_vault_store,
    rp_store,
    store_retain_until,
    vault_store_locked,
)

log = logging.getLogger(__name__)


def vm_spec(vm: VirtualMachine, luns: list[int]) -> VMSpec:
    """What the connector needs of a VM: its disks, its hooks and, on a libvirt host, how to
    reach its domain (the change-tracking chain is added by `take_snapshot`)."""
    hypervisor = None
    if vm.host.connector == HostConnector.LIBVIRT:
        hypervisor = HypervisorSpec(uri=vm.host.libvirt_uri, domain=vm.domain_uuid, rp_id="")
    return VMSpec(
        name=vm.name,
        declared_power_state=vm.power_state,
        probe_command=vm.power_probe_command,
        disks=tuple(
            DiskSpec(d.lun, Path(d.path), d.target) for d in vm.disks.all() if d.lun in luns
        ),
        hypervisor=hypervisor,
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


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# -- the retention plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPlan:
    """Tags, expiries and whether this backup goes to the vault tier, decided before the VM is
    touched. `slot`: the schedule slot a scheduled backup ran for (None for on-demand ones)."""

    tags: list[str]
    expires_at: datetime
    retain_until: datetime | None
    snapshot_expires_at: datetime
    transfer: bool
    slot: datetime | None


def _slot_is_days_last(rep: Policy, slot: datetime) -> bool:
    return schedule.slot_day(rep, schedule.next_run(rep, slot)) != schedule.slot_day(rep, slot)


def _goes_to_vault(item: ProtectedVM, rep: Policy, slot: datetime, now: datetime) -> bool:
    """Only the day's last backup of an hourly policy goes to the vault; if that one failed, the
    next day's first. Every backup of the other policies goes.

    A backup belongs to its slot's day, not to the day it ran (retention's rule), so the earlier
    backups are placed by their slot (on-demand ones by time). Only what backups made counts:
    a restore's safety recovery point is no part of the schedule."""
    if rep["schedule"]["frequency"] != "hourly":
        return True
    day = schedule.slot_day(rep, slot)
    rows = item.recovery_points.filter(
        time__gte=min(slot, now) - timedelta(days=3),
        soft_deleted_at=None,
        jobs__operation=Operation.BACKUP,
    ).values_list("slot", "time", "transfer_due", "in_vault_tier")
    recent = [(rp_slot or t, due, sent) for rp_slot, t, due, sent in rows]
    first_of_day = not any(schedule.slot_day(rep, t) == day for t, _, _ in recent)
    yesterday_sent = any(
        schedule.slot_day(rep, t) == day - timedelta(days=1) and (due or sent)
        for t, due, sent in recent
    )
    return _slot_is_days_last(rep, slot) or (first_of_day and not yesterday_sent)


def _plan_retention(item: ProtectedVM, job: Job, now: datetime) -> RetentionPlan:
    policy = item.policy
    snapshot_until = now + timedelta(days=policy.instant_restore_days)
    if job.params.get(Param.ON_DEMAND):
        expires = datetime.fromisoformat(job.params[Param.RETAIN_UNTIL])
        return RetentionPlan(
            tags=[RecoveryPoint.ON_DEMAND],
            expires_at=expires,
            retain_until=expires,
            snapshot_expires_at=min(snapshot_until, expires),
            transfer=True,
            slot=None,
        )
    rep = policy.representation()
    slot = datetime.fromisoformat(job.params[Param.SLOT]) if Param.SLOT in job.params else None
    transfer = _goes_to_vault(item, rep, slot or now, now)
    tags, expires = retention.tags_and_expiry(rep, slot or now, is_daily_last=transfer)
    return RetentionPlan(
        tags=tags,
        expires_at=expires,
        retain_until=None,
        snapshot_expires_at=min(snapshot_until, expires),
        transfer=transfer,
        slot=slot,
    )


# -- the item ------------------------------------------------------------------------------------


def _set_item_status(item: ProtectedVM, status: str) -> None:
    """Record the last backup's outcome; a failure puts an active item in protection error."""
    fields: dict[str, Any] = {"last_backup_at": timezone.now(), "last_backup_status": status}
    if status in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS):
        fields["state"] = ItemState.PROTECTED
    elif status == Status.FAILED:
        fields["state"] = ItemState.PROTECTION_ERROR
    ProtectedVM.objects.filter(pk=item.pk, state__in=SCHEDULABLE).update(**fields)


def _check_extension(
    ctx: JobContext, vm: VirtualMachine, spec: VMSpec, connector: Connector
) -> None:
    """Install/validate the backup extension on a running VM's first backup (and after a
    failure, so a repaired configuration heals on the next run)."""
    if connector.probe_power_state(spec) == PowerState.STOPPED:
        return
    if vm.extension_state == ExtensionState.INSTALLED and not ctx.job.params.get(Param.REPAIR):
        return
    status = connector.validate_extension(spec)
    vm.extension_state = ExtensionState.INSTALLED if status.ok else ExtensionState.FAILED
    vm.extension_code = "" if status.ok else status.code
    vm.extension_message = "" if status.ok else status.message
    vm.save(update_fields=["extension_state", "extension_code", "extension_message"])
    if not status.ok and not vm.continue_on_failure:
        raise JobError(status.code, status.message)


def after_backup_lost(job: Job) -> None:
    """A backup failed without its worker (worker lost, or never delivered): record the
    failure on the item. A lost worker's freeze watchdog died with it, so thaw the VM now (a
    thaw of a VM that is not frozen is harmless), and drop its work dir."""
    item = job.protected_item
    if item is None:
        return
    vm = item.vm
    if job.error_code == "worker_lost" and vm.host.connector == HostConnector.LIBVIRT:
        _, message = hypervisor.thaw_after_worker_lost(vm)
        Job.objects.filter(pk=job.pk).update(
            warnings=[*job.warnings, {"code": THAW_AFTER_WORKER_LOST, "message": message}]
        )
    elif job.error_code == "worker_lost" and vm.freeze_enabled and vm.thaw_command:
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


# -- the backup job ------------------------------------------------------------------------------


@runner.handles(Operation.BACKUP, on_worker_lost=after_backup_lost)
def run_backup(ctx: JobContext) -> None:
    job = ctx.job
    assert job.protected_item_id is not None, "a backup job names its protected item"
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
    vm = item.vm
    luns = item.selected_luns([d.lun for d in vm.disks.all()])
    spec = vm_spec(vm, luns)
    connector = connector_for(vm.host.connector)
    _check_extension(ctx, vm, spec, connector)
    rp = take_snapshot(ctx, item, spec, connector)
    sub = ctx.subtask(TRANSFER)
    if not rp.transfer_due:
        ctx.end_subtask(
            sub,
            Status.COMPLETED,
            "Not needed: only the day's last backup of an hourly policy goes to the vault tier.",
        )
        return
    transfer_rp(ctx, rp, sub)


# -- 1. take snapshot ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What a snapshot is taken into, and as what, decided before the VM is touched."""

    store: engine.Store
    rp_id: str
    parent: str | None
    taken_at: datetime
    plan: RetentionPlan


def take_snapshot(
    ctx: JobContext, item: ProtectedVM, spec: VMSpec, connector: Connector
) -> RecoveryPoint:
    """The "Take snapshot" sub-task: capture the selected disks between the VM's consistency
    hooks into the snapshot store, then record the recovery point."""
    sub = ctx.start_subtask(TAKE_SNAPSHOT)
    snapshot = _prepare_snapshot(ctx.job, item)
    progress.plan(ctx, BACKUP_PLAN if snapshot.plan.transfer else [("snapshot", 100)])
    spec = _with_chain(spec, snapshot, item)
    outcome, views = _capture(ctx, item, spec, connector, snapshot)
    for code, message in outcome.warnings:
        ctx.warn(code, message)
    rp = _record_snapshot(ctx.job, item, spec, snapshot, outcome, views)
    result = outcome.result
    ctx.set_result(
        recovery_point=snapshot.rp_id,
        consistency=outcome.consistency,
        snapshot_method=outcome.method,
        freeze_seconds=round(outcome.freeze_seconds, 3),
        hook_log=outcome.hook_log[-40:],
        bytes_read=result.bytes_read,
        bytes_changed=result.bytes_changed,
        bytes_stored=result.bytes_stored,
        chunks_whole=result.chunks_new - result.chunks_delta,
        chunks_delta=result.chunks_delta,
        bytes_saved=result.bytes_saved,
        disks=rp.disks,
        snapshot_seconds=round(result.duration, 3),
    )
    ctx.end_subtask(
        sub,
        Status.COMPLETED,
        f"{RPConsistency(outcome.consistency).label} ({words(outcome.method).lower()}); "
        f"frozen {outcome.freeze_seconds:.2f} s; {mib(result.bytes_changed)} changed, "
        f"{mib(result.bytes_stored)} stored",
    )
    return rp


def _prepare_snapshot(job: Job, item: ProtectedVM) -> Snapshot:
    """The snapshot store, the new RP's id, its parent (the newest snapshot the store still
    holds, for change detection) and its retention."""
    try:
        store = open_or_create_snapshot_store(item.vault, item.vm.host, kek_for(item.vault))
    except engine.EngineError as e:
        raise engine_error(e) from e
    now = timezone.now()
    parent = (
        item.recovery_points.filter(in_snapshot_tier=True, soft_deleted_at=None)
        .order_by("-time")
        .values_list("pk", flat=True)
        .first()
    )
    if parent is not None and not store.has_manifest(str(parent)):
        parent = None  # e.g. removed by tiering meanwhile: a full read, still deduplicated
    return Snapshot(
        store=store,
        rp_id=str(uuid.uuid4()),
        parent=str(parent) if parent else None,
        taken_at=now,
        plan=_plan_retention(item, job, now),
    )


def _with_chain(spec: VMSpec, snapshot: Snapshot, item: ProtectedVM) -> VMSpec:
    """A libvirt VM's spec with its change-tracking chain: the new RP's id (it names the new
    checkpoint) and what the parent holds (its checkpoint, and each disk's size and path, so a
    resized or replaced disk is read in full). The chain is only a hint: the connector checks
    it against the hypervisor, and the engine compares hashes whenever it is not used."""
    if spec.hypervisor is None:
        return spec
    parent_checkpoint = None
    parent_chain_break = ""
    parent_disks: dict[str, ParentDisk] = {}
    if snapshot.parent is not None:
        parent = item.recovery_points.filter(pk=snapshot.parent).first()
        if parent is not None:
            parent_checkpoint = (parent.hypervisor or {}).get("checkpoint")
            parent_chain_break = (parent.hypervisor or {}).get("chain_break", "")
            parent_disks = {
                d["target"]: ParentDisk(int(d["size"]), str(d.get("path", "")))
                for d in parent.disks
                if d.get("target")
            }
    return dataclasses.replace(
        spec,
        hypervisor=dataclasses.replace(
            spec.hypervisor,
            rp_id=snapshot.rp_id,
            parent_checkpoint=parent_checkpoint,
            parent_disks=parent_disks,
            parent_chain_break=parent_chain_break,
        ),
    )


def _view_size(view: DiskView) -> int:
    return view.size if view.size is not None else view.path.stat().st_size


def _capture(
    ctx: JobContext, item: ProtectedVM, spec: VMSpec, connector: Connector, snapshot: Snapshot
) -> tuple[SnapshotOutcome[engine.BackupResult], dict[int, DiskView]]:
    """Run the connector's snapshot (hooks, freeze, clones) around the engine's backup, and
    raise the consistency the hooks reached into the committed manifest. Also returns the
    views the engine read, by LUN (how each disk's changes were found)."""
    host = item.vm.host
    snapshot_disk = f"The snapshot disk of host {host.name} ({host.snapshot_root})"
    # Expiry and slot as retention set them at backup time, so a catalog rebuilt from the
    # store (`vaults.attach`) gets them back; a later retention recompute is not written here.
    plan = snapshot.plan
    labels = {
        "vault": item.vault.name,
        "job": str(ctx.job.pk),
        "expires_at": plan.expires_at.isoformat() if plan.expires_at else "",
        "slot": plan.slot.isoformat() if plan.slot else "",
    }
    seen: dict[int, DiskView] = {}

    def capture(views: list[DiskView]) -> engine.BackupResult:
        seen.update({v.lun: v for v in views})
        # Sized here, from the views: the connector has checked that every disk exists.
        progress = EngineProgress(
            ctx, "snapshot", {v.lun: _view_size(v) for v in views}, subtask=TAKE_SNAPSHOT
        )
        return engine.backup(
            engine.BackupRequest(
                store=snapshot.store,
                disks=[
                    engine.DiskSource(
                        v.lun, str(v.path), changed_extents=v.changed_extents, reader=v.reader
                    )
                    for v in views
                ],
                vm_name=spec.name,
                parent=snapshot.parent,
                # Provisional and conservative; raised below once the hooks' outcome is known.
                consistency=RPConsistency.CRASH,
                tags=snapshot.plan.tags,
                retain_until=store_retain_until(item.vault, snapshot.plan.expires_at),
                labels=labels,
                rp_id=snapshot.rp_id,
            ),
            progress=progress,
            cancel=ctx.cancelled,
        )

    workdir = work_dir(host, ctx.job.pk)
    try:
        outcome = connector.take_snapshot(
            spec,
            crash_only=item.policy.consistency == Consistency.CRASH_ONLY,
            workdir=workdir,
            capture=capture,
            cancel=ctx.cancelled,
        )
    except (engine.Cancelled, SnapshotCancelled) as e:
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
    if outcome.domain_xml:
        # Kept with the data too, so a store read without the catalog still knows the domain.
        labels = {**labels, "domain_xml": outcome.domain_xml}
    if outcome.consistency != RPConsistency.CRASH or outcome.domain_xml:
        engine.update_manifest_metadata(
            snapshot.store, snapshot.rp_id, consistency=outcome.consistency, labels=labels
        )
    return outcome, seen


def _disk_record(stats: engine.DiskStats, view: DiskView | None) -> dict[str, Any]:
    """One disk of the recovery point as the catalog keeps it. How changes were found is the
    engine's word for image disks; for libvirt disks "dirty_bitmap" only when the engine really
    used the dirty extents, with the connector's reason whenever it did not."""
    record: dict[str, Any] = {
        "lun": stats.lun,
        "size": stats.size,
        "bytes_read": stats.bytes_read,
        "bytes_changed": stats.bytes_changed,
        "bytes_stored": stats.bytes_stored,
        "chunks_new": stats.chunks_new,
        "chunks_delta": stats.chunks_delta,
        "bytes_saved": stats.bytes_saved,
        "change_detection": stats.change_detection,
    }
    if view is None or view.change_detection is None:
        return record
    used = {"changed-extents": "dirty_bitmap", "full-read": "full_read", "full": "full"}
    detection = used.get(stats.change_detection, stats.change_detection)
    reason = view.change_reason
    if view.change_detection == "dirty_bitmap" and detection != "dirty_bitmap":
        reason = reason or "parent_index_unreadable"
    record.update(
        change_detection=detection,
        change_reason="" if detection == "dirty_bitmap" else reason,
        target=view.target,
        path=str(view.path),
    )
    return record


def _record_snapshot(
    job: Job,
    item: ProtectedVM,
    spec: VMSpec,
    snapshot: Snapshot,
    outcome: SnapshotOutcome[engine.BackupResult],
    views: dict[int, DiskView],
) -> RecoveryPoint:
    """The recovery point row of the committed manifest (stores before catalog), and the job's
    link to it."""
    luns = [d.lun for d in spec.disks]
    all_luns = [d.lun for d in item.vm.disks.all()]
    disks = [_disk_record(d, views.get(d.lun)) for d in outcome.result.disks]
    hypervisor: dict[str, Any] = {}
    if spec.hypervisor is not None:
        hypervisor = {"checkpoint": outcome.checkpoint, "domain_xml": outcome.domain_xml}
    plan = snapshot.plan
    anomaly_state, signal = anomaly.judge(
        item, outcome.result.disks, full=outcome.result.parent is None
    )
    with transaction.atomic():
        rp = record_recovery_point(
            job.pk,
            RecoveryPoint(
                id=snapshot.rp_id,
                vault=item.vault,
                protected_item=item,
                parent_id=snapshot.parent,
                time=snapshot.taken_at,
                slot=plan.slot,
                consistency=outcome.consistency,
                in_snapshot_tier=True,
                in_vault_tier=False,
                snapshot_expires_at=plan.snapshot_expires_at,
                tags=plan.tags,
                expires_at=plan.expires_at,
                retain_until=plan.retain_until,
                disks=disks,
                included_luns=luns,
                excluded_luns=[lun for lun in all_luns if lun not in luns],
                size_bytes=sum(d["size"] for d in disks),
                snapshot_method=outcome.method,
                transfer_due=plan.transfer,
                hypervisor=hypervisor,
                anomaly=anomaly_state,
                signal=signal,
            ),
        )
        Job.objects.filter(pk=job.pk).update(recovery_point=rp)
    return rp


# -- 2. transfer data to vault ---------------------------------------------------------------------


def _acquire_transfer_slot(ctx: JobContext, vault: Vault, sub: SubTask) -> None:
    """Wait until fewer than TRANSFERS_PER_VAULT transfers of this vault are running."""
    limit = int(option("TRANSFERS_PER_VAULT", 2))
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
        src = rp_store(rp, RestoreTier.SNAPSHOT, kek)
        dst = open_or_create_vault_store(vault, kek)
        # Operators' switch for drills and tests.
        if settings.LIFEBOAT.get("FAIL_TRANSFERS", False):
            raise engine.EngineError("transfers are disabled by LIFEBOAT['FAIL_TRANSFERS']")
        result = engine.transfer(
            src,
            dst,
            str(rp.pk),
            progress=EngineProgress(ctx, "transfer", sizes, subtask=TRANSFER),
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
            code, why = "no_space", full_disk_reason(e, f"the vault disk ({vault.vault_location})")
        ctx.warn(
            code,
            f"Transfer to the vault tier failed: {why}. The snapshot is kept and the transfer "
            "will be retried.",
        )
        ctx.end_subtask(sub, Status.FAILED, why)
        return False
    # The copy carries the snapshot manifest's lock date; retention may have moved later since.
    locked = lock_new_copy(ctx, dst, rp) if vault_store_locked(vault) else None
    RecoveryPoint.objects.filter(pk=rp.pk).update(
        in_vault_tier=True,
        transfer_due=False,
        transfer_attempts=rp.transfer_attempts + 1,
        last_transfer_at=timezone.now(),
        vault_locked_until=locked,
        vault_present_bytes=result.bytes_present,
    )
    queue_replication(rp)
    ctx.set_result(
        transfer={
            "chunks_copied": result.chunks_copied,
            "bytes_copied": result.bytes_copied,
            "chunks_present": result.chunks_present,
            "bytes_present": result.bytes_present,
            "chunks_delta": result.chunks_delta,
            "seconds": round(result.duration, 3),
        }
    )
    ctx.end_subtask(
        sub,
        Status.COMPLETED,
        f"{result.chunks_copied} chunks ({mib(result.bytes_copied)}) copied "
        f"({result.chunks_delta} as deltas), {result.chunks_present} already in the vault",
    )
    return True


@runner.handles(Operation.TRANSFER)
def run_transfer(ctx: JobContext) -> None:
    """A retried transfer of one RP (operation `transfer`)."""
    rp = RecoveryPoint.objects.select_related("vault", "protected_item__vm__host").get(
        pk=ctx.job.params[Param.RP]
    )
    sub = ctx.subtask(TRANSFER)
    if rp.in_vault_tier or not rp.transfer_due:
        ctx.end_subtask(sub, Status.COMPLETED, "Already in the vault tier.")
        return
    if not transfer_rp(ctx, rp, sub):
        # The job itself failed its one purpose; the RP keeps waiting for the next retry.
        raise JobError(ctx.warnings[-1]["code"], ctx.warnings[-1]["message"])
