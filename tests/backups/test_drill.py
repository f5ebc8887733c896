"""Restore drills, run the real way: real ext4 and NTFS images backed up into real stores, the
drill's engine verify, restore to scratch, `e2fsck -fn` / `ntfsfix -n` and file reads, and a
real worker killed in the middle of one."""

import os
import signal
import subprocess
from datetime import timedelta

import blake3
import pytest
from django.urls import reverse
from django.utils import timezone

from engine.tests.tools import (
    make_ntfs,
    make_partitioned_ntfs,
    ntfs_break_mft,
    ntfs_zero_boot_sector,
    require_tool,
)
from inventory.lab import images
from jobs import reconcile, runner, schedules, tasks
from jobs.drill import drills_due, request_drill
from jobs.models import Job, Operation, RestoreTier, Status
from security.models import Alert, Severity
from tests.backups.conftest import World, lifeboat_env, needs_e2fsprogs, run
from tests.conftest import wait_until
from vaults.models import RecoveryPoint, Verification
from vaults.stores import rp_store

pytestmark = needs_e2fsprogs
TIERS = [RestoreTier.VAULT, RestoreTier.SNAPSHOT]


def backed_up(w: World) -> RecoveryPoint:
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    rp = RecoveryPoint.objects.get(pk=job.recovery_point_id)
    assert (rp.in_snapshot_tier, rp.in_vault_tier) == (True, True)
    return rp


def drilled(w: World, rp: RecoveryPoint, tier: str) -> tuple[Job, RecoveryPoint]:
    job = run(request_drill(rp, by=w.admin, tier=tier))
    rp.refresh_from_db()
    return job, rp


def checks(rp: RecoveryPoint) -> dict[str, str]:
    return {c["name"]: c["status"] for c in rp.drill["checks"]}


def flip_one_chunk(rp: RecoveryPoint, tier: str) -> None:
    """Bit rot in one chunk of one tier's store only (the other tier's copy stays good)."""
    store = rp_store(rp, tier)
    manifest = store.read_manifest(str(rp.pk))
    index = store.load_index(str(rp.pk), manifest["disks"][0])
    digest = next(
        index.digest(i) for i in range(index.count) if store.chunk_path(index.digest(i)).exists()
    )
    path = store.chunk_path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def damage_file_system(image) -> None:
    """A file system that opens but is inconsistent: a file's inode claims 7 links."""
    r = subprocess.run(
        [images.find_tool("debugfs"), "-w", "-R", "sif /data/b.txt links_count 7", str(image)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tier", TIERS)
def test_a_good_rp_passes_and_says_what_it_proved(tmp_path, tier, client):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    rp = backed_up(w)
    job, rp = drilled(w, rp, tier)
    assert job.status == Status.COMPLETED, job.error_message
    assert rp.verification == Verification.PASSED and rp.verified_at is not None
    assert checks(rp) == {
        "chunks": "passed",
        "restore": "passed",
        "file_systems lun -1": "passed",
        "fsck lun -1": "passed",
        "files lun -1": "passed",
    }
    assert rp.drill["tier"] == tier and rp.drill["job"] == job.pk
    assert "e2fsck -fn" in next(
        c["detail"] for c in rp.drill["checks"] if c["name"] == "fsck lun -1"
    )
    store = rp_store(rp, tier)
    assert (
        rp.drill["manifest_digest"]
        == blake3.blake3(store.read_manifest_bytes(str(rp.pk))).hexdigest()
    )
    # Every file of this small file system was read end to end (a.bin alone is 3 MiB).
    files = rp.drill["checks"][-1]["detail"]
    read, of = files.split(" file(s)")[0].split(" of ")
    assert read == of and int(files.split("end (")[1].split(" bytes")[0]) > 3 << 20
    # Nothing is left in the scratch space, and the drill did not touch the RP's manifest.
    assert not any(reconcile.scratch_root().iterdir())
    assert not Alert.objects.exists()
    # The RP's page shows the proof and its checks; the item's list shows the badge.
    client.force_login(w.admin)
    page = client.get(reverse("rp-restore", args=[w.vault.name, w.vm.name, rp.pk])).content
    assert b"Run drill now" in page and b'id="drill-checks"' in page
    assert f"verified {rp.verified_at:%Y-%m-%d}".encode() in page
    listing = client.get(reverse("item-detail", args=[w.vault.name, w.vm.name])).content
    assert listing.count(b"rp-verified") == 1
    assert b'id="item-last-verified">' + f"{rp.verified_at:%Y-%m-%d}".encode() in listing
    overview = client.get(reverse("vault-detail", args=[w.vault.name])).content
    assert f"{rp.verified_at:%Y-%m-%d}</span> last verified".encode() in overview


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tier", TIERS)
def test_a_flipped_chunk_fails_the_chunks_check_and_raises_one_sev1(tmp_path, tier):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    rp = backed_up(w)
    flip_one_chunk(rp, tier)
    job, rp = drilled(w, rp, tier)
    assert (job.status, job.error_code) == (Status.FAILED, "drill_failed")
    assert "check 'chunks'" in job.error_message
    assert rp.verification == Verification.FAILED
    assert checks(rp) == {"chunks": "failed"}
    alert = Alert.objects.get(kind="drill_failed")
    assert alert.severity == Severity.SEV1
    assert (alert.object_type, alert.object_id) == ("RecoveryPoint", str(rp.pk))
    assert "chunks" in alert.message and str(rp) in alert.message
    # The other tier's copy is good: its drill passes.
    other = next(t for t in TIERS if t != tier)
    job, rp = drilled(w, rp, other)
    assert job.status == Status.COMPLETED, job.error_message
    assert not any(reconcile.scratch_root().iterdir())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tier", TIERS)
def test_a_damaged_file_system_fails_the_fsck_check(tmp_path, tier):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    damage_file_system(w.images[-1])
    rp = backed_up(w)
    job, rp = drilled(w, rp, tier)
    assert (job.status, job.error_code) == (Status.FAILED, "drill_failed")
    assert "check 'fsck lun -1'" in job.error_message
    assert checks(rp) == {
        "chunks": "passed",
        "restore": "passed",
        "file_systems lun -1": "passed",
        "fsck lun -1": "failed",
    }
    assert "links" in job.error_message or "count" in job.error_message
    assert Alert.objects.get(kind="drill_failed").severity == Severity.SEV1
    # Drilled again: the same open alert counts it, no second alert.
    run(request_drill(rp, by=w.admin, tier=tier))
    assert Alert.objects.get(kind="drill_failed").occurrences == 2


@pytest.mark.django_db(transaction=True)
def test_the_vault_schedule_drills_each_items_latest_rp_once_per_period(tmp_path):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    rp = backed_up(w)
    assert any(p.func == "jobs.tasks.drills" for p in schedules.PERIODIC)
    assert tasks.drills() == 0  # no schedule
    type(w.vault).objects.filter(pk=w.vault.pk).update(drill_every_days=7)
    assert drills_due() == 1
    assert drills_due() == 0  # queued already
    job = run(Job.objects.get(operation=Operation.DRILL))
    assert job.status == Status.COMPLETED and job.params["tier"] == RestoreTier.VAULT
    assert drills_due() == 0  # verified within the period
    assert drills_due(timezone.now() + timedelta(days=8)) == 1
    rp.refresh_from_db()
    assert rp.verification == Verification.PASSED


def test_scratch_space_is_gone_after_a_killed_worker(shared_db, start_worker, tmp_path):
    w = World(tmp_path, disks=((-1, 32),), freeze_command="true", thaw_command="true")
    rp = backed_up(w)
    # Reads capped at 4 MiB/s: the drill's restore takes seconds, so it is killed inside it.
    worker = start_worker(["qcluster"], lifeboat_env({"LIFEBOAT_THROTTLE_MIBPS": "4"}))
    job = request_drill(rp, by=w.admin)
    scratch = reconcile.scratch_dir(job.pk)

    def restoring() -> bool:
        return scratch.is_dir() and any(scratch.iterdir())

    wait_until(restoring, 60, step=0.05, what="the drill writes its scratch space")
    worker.kill(signal.SIGKILL)
    assert scratch.is_dir()  # the killed worker could not remove it
    # The drill is still in progress: reconcile leaves its scratch space alone.
    reconcile.run()
    assert scratch.is_dir()
    # The reaper fails the lost job; its hook and reconcile remove the scratch space.
    later = timezone.now() + runner.HEARTBEAT_TIMEOUT + timedelta(seconds=30)
    assert tasks.reap(later)["worker_lost"] == 1
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "worker_lost")
    assert not scratch.exists()
    # Reconcile too, for a scratch folder the hook could not reach (another machine's).
    scratch.mkdir(parents=True)
    (scratch / "disk-lun-1.img").write_bytes(b"x")
    assert reconcile.run()["drill_scratch_removed"] == 1
    assert not scratch.exists()
    rp.refresh_from_db()
    assert rp.verification == Verification.NEVER
    assert not Alert.objects.filter(kind="drill_failed").exists()


@pytest.mark.django_db(transaction=True)
def test_the_api_queues_a_drill_and_names_a_bad_tier(tmp_path, api):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    rp = backed_up(w)
    RecoveryPoint.objects.filter(pk=rp.pk).update(in_snapshot_tier=False)
    url = (
        f"/api/v1/vaults/{w.vault.name}/protected-items/{w.vm.name}/recovery-points/{rp.pk}/drill/"
    )
    client = api(w.admin)
    r = client.post(url, {"tier": "tape"}, format="json")
    assert r.status_code == 400 and "tier" in r.json()
    r = client.post(url, {"tier": "snapshot"}, format="json")
    assert r.status_code == 400 and "snapshot tier" in r.json()["tier"][0]
    r = client.post(url, {}, format="json")
    assert r.status_code == 202 and r.json()["operation"] == "drill"
    # Asked again while it is queued: the same job.
    assert client.post(url, {}, format="json").json()["id"] == r.json()["id"]
    job = run(Job.objects.get(pk=r.json()["id"]))
    assert job.status == Status.COMPLETED, job.error_message
    detail = client.get(url.removesuffix("drill/")).json()
    assert detail["verification"] == "passed" and detail["drill"]["tier"] == "vault"


NTFS_FILES = {"/readme.txt": b"an NTFS volume, drilled\n" * 100, "/data.bin": os.urandom(1 << 20)}


def ntfs_world(tmp_path) -> World:
    """A VM whose disk is a whole-disk NTFS volume (as a Windows data disk may be)."""
    require_tool("ntfsfix")
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    make_ntfs(w.images[-1], 16, NTFS_FILES)
    return w


def fsck_detail(rp: RecoveryPoint) -> str:
    return next(c["detail"] for c in rp.drill["checks"] if c["name"] == "fsck lun -1")


@pytest.mark.django_db(transaction=True)
def test_an_ntfs_disk_passes_checked_by_ntfsfix(tmp_path):
    w = ntfs_world(tmp_path)
    job, rp = drilled(w, backed_up(w), RestoreTier.VAULT)
    assert job.status == Status.COMPLETED, job.error_message
    assert checks(rp) == {
        "chunks": "passed",
        "restore": "passed",
        "file_systems lun -1": "passed",
        "fsck lun -1": "passed",
        "files lun -1": "passed",
    }
    assert fsck_detail(rp).startswith("ntfsfix -n:")
    assert rp.drill["checks"][-1]["detail"].startswith("2 of 2 file(s) read end to end")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("damage", "reader"), [(ntfs_zero_boot_sector, "skipped"), (ntfs_break_mft, "passed")]
)
def test_a_damaged_ntfs_fails_naming_ntfsfix(tmp_path, damage, reader):
    w = ntfs_world(tmp_path)
    damage(w.images[-1])
    job, rp = drilled(w, backed_up(w), RestoreTier.VAULT)
    assert (job.status, job.error_code) == (Status.FAILED, "drill_failed")
    assert "check 'fsck lun -1'" in job.error_message and "ntfsfix -n" in job.error_message
    assert checks(rp) == {
        "chunks": "passed",
        "restore": "passed",
        "file_systems lun -1": reader,
        "fsck lun -1": "failed",
    }
    assert rp.verification == Verification.FAILED
    if reader == "skipped":
        # The reader saw no file system; the drill says so and what named the type.
        opened = rp.drill["checks"][2]["detail"]
        assert "could not open" in opened and "backup boot sector" in opened
        assert "ntfs" in opened and "no file of it is read" in opened


@pytest.mark.django_db(transaction=True)
def test_a_partitioned_ntfs_disk_is_checked_in_its_partition(tmp_path):
    """A Windows data disk as Windows lays it out: an MBR and one NTFS partition. Clean, the
    partition is opened, checked and sampled; its boot sector zeroed, the backup boot sector
    at the partition's end names it and ntfsfix fails it."""
    require_tool("ntfsfix")
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    offset = make_partitioned_ntfs(w.images[-1], 17, NTFS_FILES)
    job, rp = drilled(w, backed_up(w), RestoreTier.VAULT)
    assert job.status == Status.COMPLETED, job.error_message
    assert checks(rp) == {
        "chunks": "passed",
        "restore": "passed",
        "file_systems lun -1 partition 0": "passed",
        "fsck lun -1 partition 0": "passed",
        "files lun -1 partition 0": "passed",
    }
    ntfs_zero_boot_sector(w.images[-1], offset)
    job, rp = drilled(w, backed_up(w), RestoreTier.VAULT)
    assert (job.status, job.error_code) == (Status.FAILED, "drill_failed")
    assert "ntfsfix -n" in job.error_message
    assert checks(rp) == {
        "chunks": "passed",
        "restore": "passed",
        "file_systems lun -1 partition 0": "skipped",
        "fsck lun -1 partition 0": "failed",
    }
    assert "backup boot sector" in rp.drill["checks"][2]["detail"]
