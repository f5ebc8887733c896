"""The backup flow end to end with a real django-q2 worker process (`manage.py qcluster`).

protect → the dispatcher at a chosen "now" enqueues the backup → the worker takes the snapshot
and transfers it → churn → an incremental stores only the new chunks → retention deletes the
oldest RP → GC frees exactly its unique chunks. Every restore is byte-identical (`cmp`) to the
image as it was right after its backup.
"""

import hashlib
from datetime import timedelta
from pathlib import Path

from django.test import override_settings
from django.utils import timezone

import engine
from jobs import runner, tasks
from jobs.models import FINISHED, Job, Operation, Status
from tests.backups.conftest import (
    MIB,
    World,
    aside,
    churn,
    lifeboat_env,
    needs_e2fsprogs,
    same_bytes,
    write_script,
)
from tests.conftest import wait_until
from vaults.models import RecoveryPoint

pytestmark = needs_e2fsprogs


def wait_finished(job_id: int, worker, timeout: float = 90) -> Job:
    def done():
        job = Job.objects.get(pk=job_id)
        return job if job.status in FINISHED else None

    try:
        return wait_until(done, timeout, step=0.2, what=f"job {job_id} finished")
    except AssertionError:
        raise AssertionError(
            f"job {job_id} did not finish; worker log:\n{worker.output()}"
        ) from None


def chunk_ids(image: Path) -> set[bytes]:
    """Distinct non-zero 1 MiB chunks of an image (the engine's default chunk size)."""
    zero = bytes(engine.DEFAULT_CHUNK_SIZE)
    out = set()
    with open(image, "rb") as f:
        while block := f.read(engine.DEFAULT_CHUNK_SIZE):
            if block != zero[: len(block)]:
                out.add(hashlib.sha256(block).digest())
    return out


def chunk_files(store_path: Path) -> int:
    return sum(1 for p in (store_path / "chunks").rglob("*") if p.is_file())


def test_it_backs_up_transfers_churns_expires_and_collects(
    shared_db, start_worker, tmp_path, hooks_dir
):
    pre = write_script(hooks_dir, "pre.sh", 'echo "pre $LIFEBOAT_VM"\n')
    post = write_script(hooks_dir, "post.sh", 'echo "post $LIFEBOAT_VM"\n')
    w = World(
        tmp_path,
        disks=((-1, 32),),
        pre_script=str(pre),
        post_script=str(post),
        freeze_command="true",
        thaw_command="true",
    )
    image = w.images[-1]
    worker = start_worker(["qcluster"], lifeboat_env())

    # 1. Not due before the first slot after protection; due one day later.
    assert tasks.dispatch(now=timezone.now())["backups"] == 0
    now1 = timezone.now() + timedelta(days=1)
    first_copy = aside(image, "rp1")
    assert tasks.dispatch(now=now1) == {"backups": 1, "transfers": 0, "replications": 0}
    job1 = Job.objects.get(operation=Operation.BACKUP)
    assert job1.status == Status.QUEUED and job1.params["slot"]
    job1 = wait_finished(job1.pk, worker)
    assert (job1.status, job1.warnings) == (Status.COMPLETED, []), job1.error_message
    rp1 = RecoveryPoint.objects.get(pk=job1.recovery_point_id)
    assert rp1.type == "snapshot_and_vault"
    assert rp1.consistency == "application"
    assert not rp1.transfer_due
    snap_sub, transfer_sub = job1.subtasks.order_by("order")
    assert snap_sub.status == transfer_sub.status == Status.COMPLETED
    # The RP existed as a snapshot before the transfer began.
    assert snap_sub.ended_at <= transfer_sub.started_at
    w.item.refresh_from_db()
    assert w.item.state == "protected"
    assert w.item.last_scheduled_slot.isoformat() == job1.params["slot"]
    # The same tick again (or a minute later) enqueues nothing: the slot has run.
    assert tasks.dispatch(now=now1 + timedelta(minutes=1))["backups"] == 0

    # 2. Churn, then the next day's slot: an incremental that stores only new chunks.
    churned = churn(image, 4, "day2")
    second_copy = aside(image, "rp2")
    now2 = now1 + timedelta(days=1)
    assert tasks.dispatch(now=now2)["backups"] == 1
    job2 = Job.objects.filter(operation=Operation.BACKUP).exclude(pk=job1.pk).get()
    job2 = wait_finished(job2.pk, worker)
    assert job2.status == Status.COMPLETED, job2.error_message
    rp2 = RecoveryPoint.objects.get(pk=job2.recovery_point_id)
    assert rp2.parent_id == rp1.pk
    size = image.stat().st_size
    stored = job2.result["bytes_stored"]
    copied = job2.result["transfer"]["bytes_copied"]
    # New data plus a few rewritten metadata chunks (bitmaps, inode table, directory).
    assert churned <= stored <= churned + 4 * MIB, (stored, churned)
    assert stored < size / 4
    assert churned <= copied <= churned + 2 * MIB, (copied, churned)
    assert job1.result["bytes_stored"] > 2 * stored / 2  # the full backup stored more

    worker.kill()

    # 3. Every restore, from either tier, is the image as it was right after its backup.
    vstore = w.vault_store()
    assert same_bytes(w.restore(vstore, rp1.pk, -1), first_copy)
    assert same_bytes(w.restore(vstore, rp2.pk, -1), second_copy)
    assert same_bytes(w.restore(w.snapshot_store(), rp2.pk, -1), second_copy)

    # 4. Retention: past RP1's expiry, cleanup deletes it (never the latest), tiers both
    #    snapshots away, and GC frees exactly the chunks only RP1 used, but those RP2's delta
    #    chunks are built on (the file system's metadata chunks changed in a few pages).
    unique_to_rp1 = chunk_ids(first_copy) - chunk_ids(second_copy)
    assert unique_to_rp1
    rp2_ids = {h.hex() for h in _referenced(vstore, str(rp2.pk))}
    bases = vstore.with_bases(rp2_ids, vstore.delta_bases()) - rp2_ids
    assert job2.result["chunks_delta"] == len(bases) > 0
    before = chunk_files(w.vault.store_path)
    later = rp1.expires_at + timedelta(minutes=1)
    assert rp2.expires_at > later
    assert tasks.cleanup(now=later) == 1
    cleanup = Job.objects.get(operation=Operation.CLEANUP)
    with override_settings(LIFEBOAT={**_lifeboat(), "GC_GRACE_SECONDS": 0}):
        cleanup = _run(cleanup)
    assert cleanup.status == Status.COMPLETED, cleanup.error_message
    assert cleanup.result["expired"] == 1 and cleanup.result["tiered"] >= 1
    assert not RecoveryPoint.objects.filter(pk=rp1.pk).exists()
    rp2.refresh_from_db()
    assert rp2.type == "vault"
    assert [rp.rp_id for rp in engine.list_recovery_points(vstore)] == [str(rp2.pk)]
    assert engine.list_recovery_points(w.snapshot_store()) == []
    after = chunk_files(w.vault.store_path)
    assert before - after == len(unique_to_rp1) - len(bases), (before, after, len(bases))
    assert {p.name for p in (w.vault.store_path / "chunks").rglob("*")} >= bases
    # What is left still restores, byte for byte, and verifies.
    assert same_bytes(w.restore(vstore, rp2.pk, -1), second_copy)
    assert engine.verify(vstore).ok


def _referenced(store: engine.Store, rp_id: str) -> set[bytes]:
    body = store.read_manifest(rp_id)
    out = set()
    for disk in body["disks"]:
        idx = store.load_index(rp_id, disk)
        out.update(idx.digest(i) for i in range(idx.count))
    out.discard(bytes(32))
    return out


def _lifeboat():
    from django.conf import settings

    return settings.LIFEBOAT


def _run(job):
    runner.run_job(job.pk)
    job.refresh_from_db()
    return job
