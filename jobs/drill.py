"""Restore drills: proof, per recovery point, that it restores and that its file systems are clean.

A `drill` job takes one RP from one tier (the vault tier by default, the snapshot tier while
the RP has not reached the vault tier or when asked) and runs these checks in order, stopping
at the first that fails (each later one needs the earlier):

1. `chunks`: engine verify of the RP — manifest MAC, index checksums, every chunk decrypted,
   authenticated and its id recomputed.
2. `restore`: every disk restored into the drill's scratch folder (each chunk verified again
   as it is written), as a real restore would.
3. `file_systems`: the restored disks' partitions and file systems opened through the
   file-level reader (`engine.fs`); a disk with none the reader knows is said so (skipped).
4. `fsck`: the file system's own checker, read-only (`engine.fs.fsck`: `e2fsck -fn`,
   `fsck.vfat -n`, `ntfsfix -n`); a type without a checker, or a checker not installed, is
   skipped with the reason. Where the reader could not open a file system but its signature
   names the type (`engine.fs.fsck.signature`: a damaged NTFS boot sector leaves a backup
   one), the checker still runs on the restored image, and the drill says what the reader
   could not read (no file of it is sampled).
5. `files`: a sample of regular files (DRILL_SAMPLE_FILES, spread over the file system by path)
   read end to end through the reader; each must give exactly its size in bytes.

A drill never changes the RP's data: it reads the store and writes only its scratch folder,
`<DRILL_SCRATCH_ROOT>/job-<id>`, removed when the job ends (`finally`) and, after a killed
worker, by the reaper's hook and by reconcile (`jobs.reconcile.remove_scratch_folders`). The outcome is
recorded on the RP (`verification`, `verified_at`, `drill`: job, tier, checks, duration, the
BLAKE3 digest of the manifest bytes it proved) and in the job's result; a failed drill fails
the job with the code `drill_failed` and the failing check's name, which raises a Sev-1 alert
(`security.alerts`).
"""

import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

import blake3
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.http import HttpRequest
from django.utils import timezone

import engine
from engine import fs as efs
from engine.fs.fsck import FsckResult, check_filesystem, signature
from jobs import runner
from jobs.backup import EngineProgress, engine_error
from jobs.models import UNFINISHED, Job, Operation, Param, RestoreTier, Status
from jobs.reconcile import remove_scratch, scratch_dir, scratch_root
from jobs.runner import JobContext, JobError, create_job, full_disk
from portal.options import option
from vaults import access, audit
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, Vault, Verification
from vaults.stores import rp_store

log = logging.getLogger(__name__)

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
# Files read end to end per file system, and the most bytes read from one file system.
SAMPLE_FILES = 16
SAMPLE_BYTES = 256 << 20
DRILL_TIERS = (RestoreTier.VAULT, RestoreTier.SNAPSHOT)


# -- asking for a drill ---------------------------------------------------------------------------


def drill_tier(rp: RecoveryPoint, tier: str | None) -> str:
    """The tier a drill of `rp` reads: the vault tier unless asked otherwise or the RP is not
    there yet; a tier that does not hold the RP is refused, naming the field."""
    if tier in (None, "", RestoreTier.AUTO):
        return RestoreTier.VAULT if rp.in_vault_tier else RestoreTier.SNAPSHOT
    if tier not in DRILL_TIERS:
        raise ValidationError({"tier": f"Choose one of: auto, {', '.join(DRILL_TIERS)}."})
    if tier == RestoreTier.SNAPSHOT and not rp.in_snapshot_tier:
        raise ValidationError({"tier": "This recovery point is no longer in the snapshot tier."})
    if tier == RestoreTier.VAULT and not rp.in_vault_tier:
        raise ValidationError({"tier": "This recovery point has not reached the vault tier yet."})
    return tier


def request_drill(
    rp: RecoveryPoint,
    *,
    by: User | None,
    request: HttpRequest | None = None,
    tier: str | None = None,
) -> Job:
    """Queue a drill of `rp` ("Run drill now", operators; `by=None`: the schedule). A drill of
    the same RP and tier already queued or running is returned instead of a second one."""
    if by is not None:
        access.require(by, rp.vault, "drill")
    if rp.soft_deleted_at is not None:
        raise ValidationError({"detail": "This recovery point is soft-deleted; undelete it first."})
    tier = drill_tier(rp, tier)
    with transaction.atomic():
        runner.lock_rows(RecoveryPoint, [rp.pk])
        running = Job.objects.filter(
            operation=Operation.DRILL,
            recovery_point=rp,
            status__in=UNFINISHED,
            **{f"params__{Param.TIER}": tier},
        ).first()
        if running is not None:
            return running
        job = create_job(
            operation=Operation.DRILL,
            vault=rp.vault,
            item=rp.protected_item,
            by=by,
            recovery_point=rp,
            params={Param.RP: str(rp.pk), Param.TIER: tier},
            subtasks=["Verify chunks", "Restore to scratch", "Check file systems"],
        )
        audit.record(
            "recovery_point.drill",
            actor=by,
            request=request,
            vault=rp.vault,
            obj=rp,
            after={"job": job.pk, "tier": tier},
        )
    return job


def drills_due(now: datetime | None = None) -> int:
    """The per-vault drill schedule: in each vault with `drill_every_days`, the latest RP of
    every protected item whose last drill (of any RP) is older than that, and with no drill
    queued or running; jobs queued."""
    now = now or timezone.now()
    queued = 0
    busy = Job.objects.filter(
        operation=Operation.DRILL, protected_item=OuterRef("pk"), status__in=UNFINISHED
    )
    for vault in Vault.objects.filter(drill_every_days__gt=0):
        since = now - timedelta(days=vault.drill_every_days)
        drilled = RecoveryPoint.objects.filter(protected_item=OuterRef("pk"), verified_at__gt=since)
        items = (
            ProtectedVM.objects.filter(vault=vault)
            .exclude(state=ItemState.SOFT_DELETED)
            .filter(~Exists(busy), ~Exists(drilled))
        )
        for item in items:
            rp = RecoveryPoint.objects.latest_of(item)
            if rp is None:
                continue
            request_drill(rp, by=None)
            queued += 1
    return queued


# -- the job --------------------------------------------------------------------------------------


class Checks:
    """The checks of one drill, in order, and the first that failed."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.failed: dict[str, str] | None = None

    def add(self, name: str, status: str, detail: str) -> None:
        row = {"name": name, "status": status, "detail": detail[:2000]}
        self.rows.append(row)
        if status == FAILED and self.failed is None:
            self.failed = row

    @property
    def ok(self) -> bool:
        return self.failed is None


@runner.handles(Operation.DRILL, on_worker_lost=lambda job: remove_scratch(job.pk))
def run_drill(ctx: JobContext) -> None:
    job = ctx.job
    rp = (
        RecoveryPoint.objects.filter(pk=job.params.get(Param.RP))
        .select_related("vault", "protected_item__vm__host")
        .first()
    )
    if rp is None:
        raise JobError("rp_gone", "The recovery point was deleted before the drill ran.")
    tier = str(job.params.get(Param.TIER) or RestoreTier.VAULT)
    try:
        store = rp_store(rp, tier)
    except engine.EngineError as e:
        raise engine_error(e) from e
    started = time.monotonic()
    checks = Checks()
    scratch = scratch_dir(job.pk)
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        digest = blake3.blake3(store.read_manifest_bytes(str(rp.pk))).hexdigest()
        _drill(ctx, store, str(rp.pk), scratch, checks)
    except engine.RecoveryPointNotFound as e:
        checks.add("chunks", FAILED, f"The {tier} tier holds no manifest of this RP: {e}")
        digest = ""
    except engine.Cancelled as e:
        raise runner.JobCancelled() from e
    except engine.EngineError as e:
        # The store or the key, not the RP: the job fails with the cause, no verdict is kept.
        raise engine_error(e, f"The drill scratch space ({scratch_root()})") from e
    finally:
        remove_scratch(job.pk)
    duration = round(time.monotonic() - started, 3)
    outcome = {
        "job": job.pk,
        "tier": tier,
        "checks": checks.rows,
        "duration": duration,
        "manifest_digest": digest,
        "bytes": rp.size_bytes,
    }
    ctx.set_result(drill=outcome, passed=checks.ok)
    RecoveryPoint.objects.filter(pk=rp.pk).update(
        verification=Verification.PASSED if checks.ok else Verification.FAILED,
        verified_at=timezone.now(),
        drill=outcome,
    )
    if checks.failed is not None:
        raise JobError(
            "drill_failed",
            f"Drill of {rp} ({tier} tier) failed at check '{checks.failed['name']}': "
            f"{checks.failed['detail']}",
        )


def _drill(ctx: JobContext, store: engine.Store, rp_id: str, scratch: Path, checks: Checks) -> None:
    sub = ctx.start_subtask("Verify chunks")
    report = engine.verify(store, [rp_id], cancel=ctx.cancelled)
    ctx.check_cancel()
    if not report.ok:
        first = "; ".join(str(d) for d in report.damage[:5])
        checks.add("chunks", FAILED, f"{len(report.damage)} damaged chunk reference(s): {first}")
        ctx.end_subtask(sub, Status.FAILED, "Damaged chunks.")
        return
    checks.add("chunks", PASSED, f"{report.chunks_checked} chunk(s) verified.")
    ctx.end_subtask(sub, Status.COMPLETED)

    sub = ctx.start_subtask("Restore to scratch")
    rp = engine.get_recovery_point(store, rp_id)
    targets = {d.lun: scratch / f"disk-lun{d.lun}.img" for d in rp.disks}
    try:
        engine.restore(
            store,
            rp_id,
            targets,
            progress=EngineProgress(ctx, "drill", {d.lun: d.size for d in rp.disks}),
            cancel=ctx.cancelled,
            sync=False,
            marker=f"drill{ctx.job.pk}",
        )
    except engine.Cancelled as e:
        raise runner.JobCancelled() from e
    except engine.EngineError as e:
        if full_disk(e) is not None or isinstance(e, engine.TargetUnwritable):
            raise  # the scratch space's trouble, not the RP's: no verdict
        checks.add("restore", FAILED, str(e))
        ctx.end_subtask(sub, Status.FAILED, str(e)[:200])
        return
    checks.add("restore", PASSED, f"{len(targets)} disk(s), {rp.size} bytes restored.")
    ctx.end_subtask(sub, Status.COMPLETED)

    sub = ctx.start_subtask("Check file systems")
    for lun, path in sorted(targets.items()):
        ctx.check_cancel()
        _check_disk(lun, path, scratch, checks)
        if not checks.ok:
            break
    ctx.end_subtask(sub, Status.COMPLETED if checks.ok else Status.FAILED)


def _check_disk(lun: int, path: Path, scratch: Path, checks: Checks) -> None:
    """The file systems of one restored disk: opened, checked by their own tool, sampled."""
    source = efs.FileByteSource(path)
    try:
        try:
            parts = efs.list_partitions(source)
        except efs.FileRecoveryError as e:
            checks.add(f"file_systems lun {lun}", FAILED, f"partition table unreadable: {e}")
            return
        places: list[tuple[str, int | None, int, int | None]] = (
            [(f"lun {lun} partition {p.index}", p.index, p.start, p.length) for p in parts]
            if parts
            else [(f"lun {lun}", None, 0, None)]
        )
        for where, index, offset, length in places:
            _check_filesystem(where, source, path, index, offset, length, scratch, checks)
            if not checks.ok:
                return
    finally:
        source.close()


def _check_filesystem(
    where: str,
    source: efs.FileByteSource,
    path: Path,
    index: int | None,
    offset: int,
    length: int | None,
    scratch: Path,
    checks: Checks,
) -> None:
    length = length if index is not None else None
    try:
        fs = efs.open_filesystem(source, index)
    except efs.FileRecoveryError as e:
        # Unreadable to the reader: an unknown type is skipped, an error in a known one fails;
        # either way a signature that names the type still gets the file system's own check.
        unknown = isinstance(e, efs.UnsupportedFilesystem)
        found = signature(path, offset=offset, length=length)
        if found is None:
            checks.add(f"file_systems {where}", SKIPPED if unknown else FAILED, str(e))
            return
        checks.add(
            f"file_systems {where}",
            SKIPPED if unknown else FAILED,
            f"The file-level reader could not open it ({e}); its {found.where} names "
            f"{found.fs_type}, so its own checker checks the restored image; no file of it "
            "is read.",
        )
        _fsck(where, path, found.fs_type, offset, length, scratch, checks)
        return
    with fs:
        checks.add(f"file_systems {where}", PASSED, f"{fs.fs_type} opened.")
        if _fsck(where, path, fs.fs_type, offset, length, scratch, checks) is False:
            return
        _sample_files(where, fs, checks)


def _fsck(
    where: str,
    path: Path,
    fs_type: str,
    offset: int,
    length: int | None,
    scratch: Path,
    checks: Checks,
) -> bool | None:
    """The file system's own checker on the restored image, recorded; its verdict."""
    result = check_filesystem(path, fs_type, offset=offset, length=length, scratch=scratch)
    status = {True: PASSED, False: FAILED, None: SKIPPED}[result.ok]
    detail = result.output if result.ok is not False else _fsck_detail(result)
    checks.add(f"fsck {where}", status, f"{result.command}: {detail}".strip())
    return result.ok


def _fsck_detail(result: FsckResult) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    return f"exit code {result.exit_code}; " + " / ".join(lines[-6:])


def _sample_files(where: str, fs: efs.FileSystem, checks: Checks) -> None:
    """Read up to SAMPLE_FILES regular files end to end, spread evenly over the sorted paths."""
    try:
        files = sorted(
            (e for _, _, entries in fs.walk("/") for e in entries if e.kind == "file"),
            key=lambda e: e.path,
        )
    except efs.FileRecoveryError as e:
        checks.add(f"files {where}", FAILED, f"walking the file system failed: {e}")
        return
    want = int(option("DRILL_SAMPLE_FILES", SAMPLE_FILES))
    step = max(1, len(files) // max(1, want))
    sample = files[::step][:want]
    read = 0
    for entry in sample:
        if read >= SAMPLE_BYTES:
            break
        try:
            n = sum(len(b) for b in fs.read_file(entry.path))
        except (efs.FileRecoveryError, OSError) as e:
            checks.add(f"files {where}", FAILED, f"{entry.path}: {e}")
            return
        if n != entry.size:
            checks.add(
                f"files {where}", FAILED, f"{entry.path}: read {n} of its {entry.size} bytes"
            )
            return
        read += n
    checks.add(
        f"files {where}",
        PASSED if sample or not files else SKIPPED,
        f"{len(sample)} of {len(files)} file(s) read end to end ({read} bytes).",
    )
