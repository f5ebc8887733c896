"""Reconciling stores with the catalog: a manifest whose job died before recording its row is
deleted once that job has finished (never while it runs), the chunks of failed backups are
freed without waiting for the grace window, and finished jobs leave no work folders behind."""

import os
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

import engine
from engine.connectors import reflink_supported
from jobs import runner, tasks
from jobs.models import Job, Operation, Status
from tests import factories as f
from tests.backups.conftest import (
    MIB,
    World,
    lifeboat_env,
    needs_e2fsprogs,
    run,
    write_script,
)
from tests.conftest import wait_until
from vaults.models import RecoveryPoint

pytestmark = needs_e2fsprogs

LATER = runner.HEARTBEAT_TIMEOUT + timedelta(seconds=30)


def chunk_files(store: engine.Store) -> int:
    return sum(1 for p in (store.path / "chunks").rglob("*") if p.is_file())


def manifests(store: engine.Store) -> set[str]:
    return set(store.list_rp_ids())


def stuck_after_capture(tmp_path: Path, hooks_dir: Path, body: str) -> World:
    """A VM whose post-script (`body`) runs after the engine committed the manifest and before
    the job records the row: without reflink the capture reads the images while the freeze is
    held, and the post-script follows the thaw."""
    post = write_script(hooks_dir, "post.sh", body)
    w = World(tmp_path, post_script=str(post), freeze_command="true", thaw_command="true")
    if reflink_supported(Path(w.host.snapshot_root)):
        pytest.skip("with reflink the capture runs after the post-script")
    return w


def end_process(pid_file: Path) -> None:
    """The hook runs in its own session: a killed worker does not take it along."""
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def test_worker_killed_between_manifest_commit_and_row(
    shared_db, start_worker, tmp_path, hooks_dir
):
    pid_file = tmp_path / "post.pid"
    w = stuck_after_capture(tmp_path, hooks_dir, f"echo $$ > {pid_file}\nexec sleep 60\n")
    worker = start_worker(["qcluster"], lifeboat_env())
    job = w.backup_now()
    try:
        wait_until(pid_file.exists, 60, step=0.1, what="the post-script started")
        worker.kill(signal.SIGKILL)
    finally:
        end_process(pid_file)

    snap = w.snapshot_store()
    orphan = manifests(snap)
    assert len(orphan) == 1 and not RecoveryPoint.objects.exists()
    assert chunk_files(snap) > 0

    # The job still counts as running until the reaper says otherwise: its manifest stays.
    assert tasks.reconcile()["orphans_deleted"] == 0
    assert manifests(snap) == orphan

    assert runner.reap(now=timezone.now() + LATER) == 1
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "worker_lost")
    report = tasks.reconcile()
    assert (report["orphans_deleted"], report["sweeps_queued"]) == (1, 1)
    assert manifests(snap) == set()

    # The sweep frees the failed backup's chunks now, though they are younger than the
    # (default, one hour) grace window.
    sweep = Job.objects.get(operation=Operation.GARBAGE_COLLECT, vault=w.vault)
    sweep = run(sweep)
    assert sweep.status == Status.COMPLETED, sweep.error_message
    assert chunk_files(snap) == 0
    # Once swept, the same failure does not queue another sweep.
    assert tasks.reconcile()["sweeps_queued"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_lost_backup_that_carries_on_records_no_row(tmp_path, hooks_dir):
    """A worker declared lost that is in fact alive (stalled, not dead) must not record a row
    for a manifest that reconciliation may delete: the row would point at nothing."""
    started, go = tmp_path / "post.started", tmp_path / "post.go"
    w = stuck_after_capture(
        tmp_path, hooks_dir, f"touch {started}\nwhile [ ! -e {go} ]; do sleep 0.05; done\n"
    )
    job = w.backup_now()

    def work():
        try:
            runner.run_job(job.pk)
        finally:
            connection.close()

    t = threading.Thread(target=work)
    t.start()
    try:
        wait_until(started.exists, 30, what="the post-script started")
        assert runner.reap(now=timezone.now() + LATER) == 1
    finally:
        go.touch()
        t.join(60)
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "worker_lost")
    assert not RecoveryPoint.objects.exists()
    snap = w.snapshot_store()
    assert len(manifests(snap)) == 1
    assert tasks.reconcile()["orphans_deleted"] == 1
    assert manifests(snap) == set()


@pytest.mark.django_db(transaction=True)
def test_reconcile_decides_by_the_job_that_wrote_the_manifest(tmp_path, settings):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "GC_GRACE_SECONDS": 0}
    w = World(tmp_path, power_state="stopped")
    kept = run(w.backup_now())
    assert kept.status == Status.COMPLETED, kept.error_message
    snap, vstore = w.snapshot_store(), w.vault_store()
    now = timezone.now()
    other = World(tmp_path / "other", name="other-vm")

    def job(status, *, vault=w.vault, started=now - timedelta(minutes=5), **fields):
        return f.make_job(vault, w.item, status=status, started_at=started, **fields)

    def orphan(labels, *, vault_tier=True) -> str:
        rp_id = str(uuid.uuid4())
        engine.backup(
            engine.BackupRequest(
                store=snap,
                disks=[engine.DiskSource(-1, str(w.images[-1]))],
                vm_name=w.vm.name,
                labels=labels,
                rp_id=rp_id,
            )
        )
        if vault_tier:
            engine.transfer(snap, vstore, rp_id)
        return rp_id

    running = orphan({"job": str(job(Status.IN_PROGRESS).pk)})
    cancelling = orphan({"job": str(job(Status.CANCELLING).pk)})
    lost = orphan({"job": str(job(Status.FAILED, error_code="worker_lost").pk)})
    safety = orphan(
        {"job": str(job(Status.FAILED, operation=Operation.RESTORE).pk), "safety_for": "x"},
        vault_tier=False,
    )
    unlabelled = orphan({})
    elsewhere = orphan({"job": str(f.make_job(other.vault, status=Status.FAILED).pk)})
    unknown = orphan({"job": "999999"})
    # A job id that a later job reused (the database was restored from an older copy).
    reused = orphan({"job": str(job(Status.FAILED, started=now + timedelta(hours=1)).pk)})

    report = tasks.reconcile()

    gone = {lost, safety}
    assert report["orphans_deleted"] == 3  # `lost` in both tiers, `safety` in one
    assert report["orphans_unattributed"] == 2 * 4  # unlabelled, elsewhere, unknown, reused
    everything = {str(kept.recovery_point_id), running, cancelling, lost, safety}
    everything |= {unlabelled, elsewhere, unknown, reused}
    assert manifests(snap) == everything - gone
    assert manifests(vstore) == everything - gone - {safety}
    # Reconciling again changes nothing; the row-backed RP is still whole.
    assert tasks.reconcile()["orphans_deleted"] == 0
    assert engine.verify(vstore, [str(kept.recovery_point_id)]).ok


def cancelled_mid_capture(tmp_path: Path, settings) -> tuple[World, engine.Store]:
    """A backup cancelled in the middle of its capture: no manifest, some chunks written."""
    # 2 MiB/s makes the 16 MiB capture take long enough to be cancelled in the middle.
    settings.LIFEBOAT = {**settings.LIFEBOAT, "THROTTLE_MIBPS": 2}
    w = World(tmp_path)
    job = w.backup_now()

    def work():
        try:
            runner.run_job(job.pk)
        finally:
            connection.close()

    t = threading.Thread(target=work)
    t.start()
    try:
        wait_until(lambda: Job.objects.get(pk=job.pk).bytes_done > 6 * MIB, 60, what="capture")
        runner.request_cancel(job)
    finally:
        t.join(60)
    job.refresh_from_db()
    assert job.status == Status.CANCELLED, (job.error_code, job.error_message)
    snap = w.snapshot_store()
    assert manifests(snap) == set() and chunk_files(snap) > 0
    return w, snap


@pytest.mark.django_db(transaction=True)
def test_a_failed_backup_that_wrote_chunks_is_swept_at_once(tmp_path, settings, monkeypatch):
    """Reconciliation queues one sweep that frees a cancelled backup's chunks without waiting
    for the grace window."""
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 3600)
    w, snap = cancelled_mid_capture(tmp_path, settings)

    report = tasks.reconcile()
    assert (report["orphans_deleted"], report["sweeps_queued"]) == (0, 1)
    sweep = run(Job.objects.get(operation=Operation.GARBAGE_COLLECT))
    assert sweep.status == Status.COMPLETED, sweep.error_message
    assert chunk_files(snap) == 0
    assert tasks.reconcile()["sweeps_queued"] == 0


@pytest.mark.django_db(transaction=True)
def test_cleanup_frees_a_vault_whose_only_backup_failed(tmp_path, settings, monkeypatch):
    """A vault without a single recovery point still gets its hourly cleanup, so the chunks of
    its failed backups are freed once the grace window has passed."""
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 3600)
    w, snap = cancelled_mid_capture(tmp_path, settings)
    assert not RecoveryPoint.objects.exists()

    assert tasks.cleanup() == 1
    settings.LIFEBOAT = {**settings.LIFEBOAT, "GC_GRACE_SECONDS": 0}
    cleanup = run(Job.objects.get(operation=Operation.CLEANUP, vault=w.vault))
    assert cleanup.status == Status.COMPLETED, cleanup.error_message
    assert chunk_files(snap) == 0


@pytest.mark.django_db(transaction=True)
def test_finished_jobs_leave_no_work_folders(tmp_path):
    w = World(tmp_path, power_state="stopped")
    done = run(w.backup_now())
    assert done.status == Status.COMPLETED, done.error_message
    work = Path(w.host.snapshot_root) / ".work"
    # A backup removes its own work folder when it ends.
    assert not (work / f"job-{done.pk}").exists()

    lost = f.make_job(w.vault, w.item, status=Status.FAILED, error_code="worker_lost")
    running = f.make_job(w.vault, w.item, status=Status.IN_PROGRESS)
    for name in (f"job-{lost.pk}", f"job-{running.pk}", "job-999999"):
        (work / name / "snap-x").mkdir(parents=True)
        (work / name / "snap-x" / "00-lun-1-disk.img").write_bytes(b"clone")

    assert tasks.reconcile()["work_folders_removed"] == 1
    assert sorted(p.name for p in work.iterdir()) == sorted([f"job-{running.pk}", "job-999999"])


@pytest.mark.django_db(transaction=True)
def test_a_sweep_skips_a_busy_store_and_sweeps_the_others(tmp_path, settings, monkeypatch):
    """A store held by a long operation (another VM's backup) does not fail the sweep: it is
    skipped with a warning, and the vault's other stores are swept."""
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 3600)
    w, snap = cancelled_mid_capture(tmp_path, settings)
    settings.LIFEBOAT = {**settings.LIFEBOAT, "GC_WAIT_SECONDS": 0.2}
    vstore = w.vault_store()
    garbage = vstore.path / "chunks" / "ab" / ("ab" * 32)
    garbage.parent.mkdir()
    garbage.write_bytes(b"written by a transfer that failed")
    half_an_hour_ago = time.time() - 1800  # before the sweep's cut-off, inside the grace window
    os.utime(garbage, (half_an_hour_ago, half_an_hour_ago))
    assert tasks.reconcile()["sweeps_queued"] == 1

    with snap.operation("backup"):
        sweep = run(Job.objects.get(operation=Operation.GARBAGE_COLLECT))
    assert sweep.status == Status.COMPLETED_WITH_WARNINGS, sweep.error_message
    assert [x["code"] for x in sweep.warnings] == ["store_busy"]
    assert chunk_files(snap) > 0 and not garbage.exists()
