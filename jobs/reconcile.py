"""Reconciling the stores with the catalog, and tidying what killed jobs leave behind.

The engine commits a recovery point's manifest before the job records its `RecoveryPoint` row
(stores before catalog), so a worker that dies in between leaves a manifest no row points at;
garbage collection keeps every manifest, so its chunks would be kept forever. A periodic step
(`jobs.tasks.reconcile`) therefore:

1. Deletes orphan manifests. Every store of every vault (the vault store and each host's
   snapshot store) is listed; a manifest without a row is deleted once the job that wrote it
   (the `job` label every manifest of ours carries) has finished. Never while that job is still
   queued, in progress or cancelling: it may be about to record the row. Deleted, not adopted:
   - the job has reported failure ("nothing it was writing was committed") and the item shows a
     protection error; a recovery point appearing later from that job would contradict both;
   - the manifest does not hold all the row needs (the retention plan's snapshot-tier expiry
     and transfer decision, the consistency the hooks finally reached), so an adopted row
     would be a guess about the customer's retention;
   - nothing of the customer's is lost: the VM still holds its data and the next run backs it
     up again, deduplicated against the chunks still in the store.
   A manifest whose writer cannot be told for sure (no label, a job of another vault, a job
   that started after the manifest was written: the database went back to an older copy) is
   left alone and logged, since deleting it could destroy a real backup.
   A job records its row only while it still runs (`lock_running_job`), so a worker declared
   lost that carries on cannot record a row for a manifest deleted here.
2. Sweeps chunks of failed jobs early. After a failed or cancelled job that wrote data (or
   after 1 deleted a manifest), one `garbage_collect` job of the vault frees the unreferenced
   chunks written up to that job's end, instead of keeping them through the grace window until
   a later hourly cleanup. Sweeping them is safe: GC holds the store's exclusive lock, so no
   operation that could still come to reference them is in flight.
3. Removes leftover files of finished jobs: the temp files of failed or cancelled restores
   (`.<disk>.lifeboat-restore-job<id>-<hex>`, by that job's exact marker only) and backup work
   folders (`<snapshot root>/.work/job-<id>`), and the scratch folders of finished restore
   drills (`<DRILL_SCRATCH_ROOT>/job-<id>`, `jobs.drill`).
"""

import logging
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import engine
from inventory.models import Host
from jobs.lifecycle import delete_from
from jobs.models import FINISHED, RUNNING, Job, Operation, Param, RestoreKind, Status
from jobs.runner import JobError, create_job
from vaults.models import RecoveryPoint, Vault
from vaults.stores import existing_stores

log = logging.getLogger(__name__)

ENDED_BADLY = [Status.FAILED, Status.CANCELLED]
# Jobs that commit manifests: backups, and restores that replace disks (their safety RP).
MANIFEST_WRITERS = [Operation.BACKUP, Operation.RESTORE]
# Jobs whose failure can leave chunks that no manifest references.
CHUNK_WRITERS = Q(operation__in=[Operation.BACKUP, Operation.TRANSFER]) | Q(
    (f"params__{Param.KIND}", RestoreKind.REPLACE_DISKS), operation=Operation.RESTORE
)
# Recorded in a restore job's result once its temp files were looked for (and removed).
LEFTOVERS = "temp_files_removed"
WORK_DIR = ".work"
_WORK_FOLDER = re.compile(r"job-(\d{1,18})")


def work_dir(host: Host, job_id: int) -> Path:
    """A backup job's private folder on its host (the connector's point-in-time clones)."""
    return Path(host.snapshot_root) / WORK_DIR / f"job-{job_id}"


def scratch_root() -> Path:
    """Where restore drills restore to (`jobs.drill`)."""
    return Path(str(settings.LIFEBOAT["DRILL_SCRATCH_ROOT"]))


def scratch_dir(job_id: int) -> Path:
    """A drill job's private scratch folder."""
    return scratch_root() / f"job-{job_id}"


def remove_scratch(job_id: int) -> None:
    shutil.rmtree(scratch_dir(job_id), ignore_errors=True)


def restore_marker(job_id: int) -> str:
    """What a restore job's temp file names carry, so they are found again after a kill."""
    return f"job{job_id}"


def lock_running_job(job_id: int) -> None:
    """Call in the transaction that records a job's recovery point row, before the row.

    Locks the job's row and refuses when the job no longer runs: the reaper declared its worker
    lost, and reconciliation may already have deleted the manifest the row would point at.
    """
    running = Job.objects.select_for_update().filter(pk=job_id, status__in=RUNNING)
    if not list(running.values_list("pk", flat=True)):
        raise JobError(
            "worker_lost",
            "This job was declared lost while it ran; its recovery point was not kept.",
        )


def record_recovery_point(job_id: int, rp: RecoveryPoint) -> RecoveryPoint:
    """Save a new recovery point row for a job that still runs (see `lock_running_job`)."""
    with transaction.atomic():
        lock_running_job(job_id)
        rp.save(force_insert=True)
        return rp


def run() -> dict[str, int]:
    """One pass over every vault's stores and every host's work folders; counts of what was done."""
    report = dict.fromkeys(
        (
            "orphans_deleted",
            "orphans_unattributed",
            "sweeps_queued",
            "restore_files_removed",
            "work_folders_removed",
            "drill_scratch_removed",
        ),
        0,
    )
    hosts = list(Host.objects.all())
    for vault in Vault.objects.all():
        try:
            deleted, unattributed = remove_orphan_manifests(vault, hosts)
        except (engine.EngineError, OSError) as e:
            # A missing key or an unreadable store: the vault's own jobs report it.
            log.warning("reconciling vault %s skipped: %s", vault.name, e)
            deleted, unattributed = [], 0
        report["orphans_deleted"] += len(deleted)
        report["orphans_unattributed"] += unattributed
        report["sweeps_queued"] += queue_sweep(vault, deleted)
    report["restore_files_removed"] = remove_restore_leftovers()
    report["work_folders_removed"] = remove_work_folders(hosts)
    report["drill_scratch_removed"] = remove_scratch_folders()
    return report


# -- 1. orphan manifests -------------------------------------------------------------------------


def remove_orphan_manifests(vault: Vault, hosts: list[Host]) -> tuple[list[Job], int]:
    """Delete the manifests without a row whose job has finished; (their jobs, how many
    manifests without a row were left alone because their writer cannot be told)."""
    recorded = {str(pk) for pk in vault.recovery_points.values_list("pk", flat=True)}
    unrecorded: list[tuple[engine.Store, engine.RecoveryPoint]] = []
    for store in existing_stores(vault, hosts).all():
        for rp_id in store.list_rp_ids():
            if rp_id in recorded:
                continue
            try:
                unrecorded.append((store, engine.get_recovery_point(store, rp_id)))
            except engine.RecoveryPointNotFound:
                continue  # deleted meanwhile
            except engine.CorruptionError as e:
                log.warning("manifest %s in %s is damaged, left for verify: %s", rp_id, store, e)
    if not unrecorded:
        return [], 0
    jobs = Job.objects.in_bulk({_job_id(rp) for _, rp in unrecorded} - {None})
    # Rows are read after the jobs' states: a job records its row only while it runs, so a job
    # seen finished above has committed any row it ever will.
    recorded = {
        str(pk)
        for pk in RecoveryPoint.objects.filter(
            pk__in=[rp.rp_id for _, rp in unrecorded]
        ).values_list("pk", flat=True)
    }
    deleted, unattributed = [], 0
    for store, rp in unrecorded:
        if rp.rp_id in recorded:
            continue
        job = _writer(vault, rp, jobs)
        if job is None:
            unattributed += 1
            log.warning(
                "manifest %s in %s has no recovery point row and no job of vault %s that "
                "wrote it; left alone",
                rp.rp_id,
                store,
                vault.name,
            )
        elif job.is_finished:
            delete_from(store, rp.rp_id)
            log.info("deleted manifest %s of %s job %s in %s", rp.rp_id, job.status, job.pk, store)
            deleted.append(job)
    return deleted, unattributed


def _job_id(rp: engine.RecoveryPoint) -> int | None:
    label = rp.labels.get("job", "")
    return int(label) if label.isdigit() and len(label) <= 18 else None


def _writer(vault: Vault, rp: engine.RecoveryPoint, jobs: dict[int, Job]) -> Job | None:
    """The job of this vault that wrote the manifest, or None when that cannot be told."""
    job_id = _job_id(rp)
    job = jobs.get(job_id) if job_id is not None else None
    if job is None or job.vault_id != vault.pk or job.operation not in MANIFEST_WRITERS:
        return None
    # A job id handed out again after the database went back to an older copy belongs to a
    # job that started after this manifest was written.
    if job.started_at is None or job.started_at > rp.created:
        return None
    return job


# -- 2. early sweep ------------------------------------------------------------------------------


def queue_sweep(vault: Vault, deleted: list[Job]) -> int:
    """Queue one garbage_collect job when failed jobs (or deleted orphans) left chunks that no
    sweep has covered yet; 1 if queued."""
    sweeps = Job.objects.filter(
        vault=vault, operation=Operation.GARBAGE_COLLECT, params__has_key=Param.SWEEP_BEFORE
    )
    if sweeps.exclude(status__in=FINISHED).exists():
        return 0
    last = sweeps.order_by("-created_at", "-id").values_list("params", flat=True).first()
    # A sweep that failed counts as done too: the hourly cleanup remains the backstop, and
    # retrying every few minutes would only repeat the failure.
    swept = datetime.fromisoformat(last[Param.SWEEP_BEFORE]) if last else None
    failed = Job.objects.filter(
        CHUNK_WRITERS, vault=vault, status__in=ENDED_BADLY, bytes_done__gt=0, ended_at__isnull=False
    )
    if swept is not None:
        failed = failed.filter(ended_at__gt=swept)
    ends = [end for end in failed.values_list("ended_at", flat=True) if end is not None]
    ends += [job.ended_at or timezone.now() for job in deleted]
    if not ends:
        return 0
    cutoff = max([*ends, swept] if swept is not None else ends)
    create_job(
        operation=Operation.GARBAGE_COLLECT,
        vault=vault,
        params={Param.SWEEP_BEFORE: cutoff.isoformat()},
    )
    return 1


# -- 3. leftover files ---------------------------------------------------------------------------


def remove_restore_leftovers() -> int:
    """Remove the temp files of failed or cancelled restores (a killed worker cannot); each job
    is looked at once, and its result records what was removed."""
    removed = 0
    jobs = (
        Job.objects.filter(operation=Operation.RESTORE, status__in=ENDED_BADLY)
        .exclude(result__has_key=LEFTOVERS)
        .select_related("protected_item__vm")
    )
    for job in jobs:
        marker = restore_marker(job.pk)
        files = [p for t in _restore_targets(job) for p in engine.restore_temp_files(t, marker)]
        try:
            for path in files:
                path.unlink(missing_ok=True)
        except OSError as e:
            log.warning(
                "temp files of restore job %s not removed (tried again later): %s", job.pk, e
            )
            continue
        Job.objects.filter(pk=job.pk).update(
            result={**job.result, LEFTOVERS: [str(p) for p in files]}
        )
        removed += len(files)
    return removed


def _restore_targets(job: Job) -> list[str]:
    """Where the restore wrote: the files it was given, or the VM disks it replaced."""
    files = job.params.get(Param.FILES)
    if files:
        return list(files.values())
    item = job.protected_item
    if item is None:
        return []
    return list(
        item.vm.disks.filter(lun__in=job.params.get(Param.LUNS, [])).values_list("path", flat=True)
    )


def remove_work_folders(hosts: list[Host]) -> int:
    """Remove the work folders of finished jobs (whatever a killed job left in its own)."""
    folders: dict[Path, int] = {}
    for root in {host.snapshot_root for host in hosts}:
        try:
            entries = list(os.scandir(Path(root) / WORK_DIR))
        except OSError:
            continue  # no backup ran on this host yet
        for entry in entries:
            match = _WORK_FOLDER.fullmatch(entry.name)
            if match and entry.is_dir(follow_symlinks=False):
                folders[Path(entry.path)] = int(match.group(1))
    finished = set(
        Job.objects.filter(pk__in=set(folders.values()), status__in=FINISHED).values_list(
            "pk", flat=True
        )
    )
    removed = 0
    for path, job_id in folders.items():
        if job_id in finished:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def remove_scratch_folders() -> int:
    """Remove the scratch folders of finished drill jobs (a killed worker leaves its own)."""
    try:
        entries = list(os.scandir(scratch_root()))
    except OSError:
        return 0  # no drill ran here yet
    folders: dict[Path, int] = {}
    for entry in entries:
        match = _WORK_FOLDER.fullmatch(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            folders[Path(entry.path)] = int(match.group(1))
    ids = set(folders.values())
    unfinished = set(
        Job.objects.filter(pk__in=ids).exclude(status__in=FINISHED).values_list("pk", flat=True)
    )
    # A folder of a job the catalog does not know (the database went back to an older copy)
    # belongs to no running drill either: only unfinished drills keep theirs.
    removed = 0
    for path, job_id in folders.items():
        if job_id not in unfinished:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
