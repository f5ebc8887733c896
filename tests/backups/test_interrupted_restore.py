"""A restore whose worker dies leaves its target clearly marked incomplete, never a partial disk
under the final name; the job is failed by the reaper and its temp file is removed by the
reconcile step (only that job's, by its marked name)."""

import signal
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from jobs import restore, runner, tasks
from jobs.models import Status
from tests.backups.conftest import World, lifeboat_env, needs_e2fsprogs, run
from tests.conftest import wait_until

pytestmark = needs_e2fsprogs


def test_killed_restore_leaves_only_a_marked_temp_file(shared_db, start_worker, tmp_path):
    w = World(tmp_path, power_state="stopped")  # no live-read warning on any file system
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, (job.error_message, job.warnings)
    rp = job.recovery_point

    target_dir = Path(w.host.allowed_roots[1])
    restore_job = restore.request_restore(
        rp,
        by=w.admin,
        kind="restore_disks",
        tier="vault",
        target={"host": w.host.pk, "path": str(target_dir)},
    )
    final = Path(restore_job.params["files"]["-1"])
    # 1 MiB/s makes the 16 MiB restore take long enough to be killed in the middle.
    worker = start_worker(["qcluster"], lifeboat_env({"LIFEBOAT_THROTTLE_MIBPS": "1"}))

    def half_way() -> bool:
        restore_job.refresh_from_db()
        return restore_job.bytes_total > 0 and restore_job.bytes_done > restore_job.bytes_total // 4

    wait_until(half_way, 90, step=0.1, what="the restore is under way")
    worker.kill(signal.SIGKILL)

    assert not final.exists()
    marker = f".{final.name}.lifeboat-restore-job{restore_job.pk}-"
    leftovers = [p.name for p in target_dir.iterdir()]
    assert leftovers and all(name.startswith(marker) for name in leftovers), leftovers
    # Another restore's temp file in the same folder is not this job's to remove.
    foreign = target_dir / f".{final.name}.lifeboat-restore-job{restore_job.pk + 1}-0123456789"
    foreign.write_bytes(b"another job's")

    # While the job counts as running, its temp file stays.
    assert tasks.reconcile()["restore_files_removed"] == 0
    later = timezone.now() + runner.HEARTBEAT_TIMEOUT + timedelta(seconds=30)
    assert runner.reap(now=later) == 1
    restore_job.refresh_from_db()
    assert (restore_job.status, restore_job.error_code) == (Status.FAILED, "worker_lost")
    assert tasks.reconcile()["restore_files_removed"] == len(leftovers)
    assert [p.name for p in target_dir.iterdir()] == [foreign.name]
    foreign.unlink()

    # Asking again restores completely, byte for byte.
    again = run(
        restore.request_restore(
            rp,
            by=w.admin,
            kind="restore_disks",
            tier="vault",
            target={"host": w.host.pk, "path": str(target_dir)},
        )
    )
    assert again.status == Status.COMPLETED, again.error_message
    assert final.read_bytes() == w.images[-1].read_bytes()
