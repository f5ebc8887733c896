"""The `replicate` job: copy one recovery point from the vault store to the vault's secondary
location (a second region, another provider, another disk), so a restore can read it while the
primary is unreachable.

The copy is `engine.transfer` between two stores that share the vault's keys: only the chunks
the secondary lacks move, each verified, then the indexes and the manifest. The RP's
`replication` state is the truth the pages show: `pending` once it reaches the vault tier,
`replicated` when the secondary's manifest is committed, `failed` (with the error) otherwise;
`jobs.backup_queue.enqueue_pending_replications` retries failed ones with backoff.
"""

from django.utils import timezone

import engine
from jobs import runner
from jobs.backup import mib
from jobs.backup_queue import REPLICATE
from jobs.locks import lock_new_copy
from jobs.models import Operation, Param, Status
from jobs.progress import EngineProgress
from jobs.runner import JobCancelled, JobContext, JobError
from security.kek import kek_for
from vaults.models import RecoveryPoint, Replication
from vaults.stores import open_or_create_secondary_store, open_vault_store, secondary_locked


def _failed(rp: RecoveryPoint, why: str) -> None:
    RecoveryPoint.objects.filter(pk=rp.pk).update(
        replication=Replication.FAILED,
        replication_error=why[:500],
        replication_attempts=rp.replication_attempts + 1,
        last_replication_at=timezone.now(),
    )


@runner.handles(Operation.REPLICATE)
def run_replicate(ctx: JobContext) -> None:
    rp = (
        RecoveryPoint.objects.select_related(
            "vault__storage_target", "vault__secondary_target", "protected_item__vm"
        )
        .filter(pk=ctx.job.params[Param.RP])
        .first()
    )
    sub = ctx.subtask(REPLICATE)
    if rp is None or rp.soft_deleted_at is not None:
        ctx.end_subtask(sub, Status.COMPLETED, "The recovery point is gone; nothing to copy.")
        return
    vault = rp.vault
    if not vault.has_secondary:
        RecoveryPoint.objects.filter(pk=rp.pk).update(replication=Replication.NONE)
        ctx.end_subtask(sub, Status.COMPLETED, "The vault has no secondary location any more.")
        return
    if rp.replication == Replication.REPLICATED:
        ctx.end_subtask(sub, Status.COMPLETED, "Already in the secondary location.")
        return
    sub = ctx.start_subtask(REPLICATE)
    sizes = {d["lun"]: d["size"] for d in rp.disks}
    try:
        kek = kek_for(vault)
        src = open_vault_store(vault, kek)
        dst = open_or_create_secondary_store(vault, src, kek)
        result = engine.transfer(
            src,
            dst,
            str(rp.pk),
            progress=EngineProgress(ctx, "replicate", sizes, subtask=REPLICATE),
            cancel=ctx.cancelled,
        )
    except engine.Cancelled as e:
        raise JobCancelled() from e
    except (engine.EngineError, OSError) as e:
        why = str(e) or type(e).__name__
        _failed(rp, why)
        ctx.end_subtask(sub, Status.FAILED, why)
        raise JobError(
            "replication_failed",
            f"Copying to the secondary location ({vault.secondary_location}) failed: {why}. "
            "It will be retried.",
        ) from e
    # The copy carries the vault manifest's lock date; retention may have moved later since.
    locked = lock_new_copy(ctx, dst, rp) if secondary_locked(vault) else None
    RecoveryPoint.objects.filter(pk=rp.pk).update(
        secondary_locked_until=locked,
        replication=Replication.REPLICATED,
        replicated_at=timezone.now(),
        replication_error="",
        replication_attempts=rp.replication_attempts + 1,
        last_replication_at=timezone.now(),
    )
    ctx.set_result(
        replicate={
            "chunks_copied": result.chunks_copied,
            "bytes_copied": result.bytes_copied,
            "chunks_present": result.chunks_present,
            "chunks_delta": result.chunks_delta,
            "seconds": round(result.duration, 3),
        }
    )
    ctx.end_subtask(
        sub,
        Status.COMPLETED,
        f"{result.chunks_copied} chunks ({mib(result.bytes_copied)}) copied, "
        f"{result.chunks_present} already in the secondary location",
    )
