"""Helpers for the API tests: an authenticated client per persona, a query-budget check, and
real recovery points (ext4 images made with `mkfs.ext4 -d`, backed up in this process)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext


@pytest.fixture
def assert_flat_queries(django_assert_max_num_queries):
    """`assert_flat_queries(client, url, make_rows, budget)`.

    Lists `url` with 3 rows and again with 50 (`make_rows(n)` adds n rows): both answers
    must stay within `budget` queries and use the same number, so no query runs per row.
    """

    def check(client, url, make_rows, budget: int) -> None:
        counts = []
        for total, add in ((3, 3), (50, 47)):
            make_rows(add)
            with django_assert_max_num_queries(budget):
                with CaptureQueriesContext(connection) as ctx:
                    response = client.get(url, {"page_size": 100})
            assert response.status_code == 200, response.content
            assert response.data["count"] >= total
            assert len(response.data["results"]) >= total
            counts.append(len(ctx.captured_queries))
        assert counts[0] == counts[1], f"queries grow with rows: {counts}"

    return check


# -- real recovery points -----------------------------------------------------------------------

MIB = 1 << 20
MKFS = shutil.which("mkfs.ext4") or next(
    (p for p in ("/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4") if os.path.exists(p)), None
)
needs_mkfs = pytest.mark.skipif(MKFS is None, reason="mkfs.ext4 (e2fsprogs) is not installed")

# What the real disks hold: the OS disk a small tree, the data disk one file.
OS_FILES = {
    "etc/hostname": b"web-01\n",
    "etc/os-release": b'NAME="Lifeboat test"\n',
    "home/ops/notes.txt": b"".join(b"note %d\n" % i for i in range(5000)),
    "home/ops/bin.dat": bytes(range(256)) * 4096,
    "srv/caf\u00e9 menu.txt": b"espresso\n",
}
DATA_FILES = {"db/table.dat": os.urandom(MIB)}


def make_ext4(path: Path, files: dict[str, bytes], mib: int = 8) -> Path:
    """A real ext4 image made by `mkfs.ext4 -d` from a staging directory of `files`."""
    staging = path.with_name(f".{path.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    for name, data in files.items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    path.unlink(missing_ok=True)
    r = subprocess.run(
        [MKFS, "-q", "-F", "-t", "ext4", "-d", str(staging), "-L", path.stem[:16], str(path)]
        + [f"{mib}M"],
        capture_output=True,
        text=True,
    )
    shutil.rmtree(staging, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def real_disks(vm):
    """The `vm` fixture's disks (LUN -1 and 0) made real ext4 images; the VM is stopped."""
    from inventory.models import Disk

    for disk in vm.disks.all():
        make_ext4(Path(disk.path), OS_FILES if disk.lun == -1 else DATA_FILES)
        Disk.objects.filter(pk=disk.pk).update(size=os.path.getsize(disk.path))
    vm.power_state = "stopped"
    vm.save(update_fields=["power_state"])
    return {d.lun: Path(d.path) for d in vm.disks.all()}


@pytest.fixture
def run_job(quiet_heartbeat):
    """`run_job(job_id)` runs a job in this process, as a worker would; returns it fresh.

    Needs `@pytest.mark.django_db(transaction=True)`: the runner manages its connection."""
    from jobs import runner
    from jobs.models import Job

    def run(job_id: int):
        runner.run_job(job_id)
        return Job.objects.get(pk=job_id)

    return run


@pytest.fixture
def backed_up(real_disks, item, admin_user, run_job):
    """A real recovery point of `item`: a backup taken and transferred, in this process."""
    from jobs.backup_queue import backup_now

    job = run_job(backup_now(item, by=admin_user).pk)
    assert job.status == "completed", (job.error_code, job.error_message)
    return job.recovery_point


def same_bytes(a, b) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0
