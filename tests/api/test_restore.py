"""Restores through the API: each kind run for real and compared byte for byte with its source;
every bad value refused with a 400 naming it, before a job exists or a byte is written."""

import os
import shutil
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from inventory.models import VirtualMachine
from jobs.models import Job, Operation, Status
from tests import factories as f
from tests.api.conftest import needs_mkfs, same_bytes
from vaults.models import AuditEvent


def url(rp, vm_name="web-01"):
    return reverse("api-recovery-point-restore", args=["prod", vm_name, rp.pk])


def restores(host) -> Path:
    return Path(host.allowed_roots[1])


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def no_restore_queued() -> bool:
    return not Job.objects.filter(operation=Operation.RESTORE).exists()


# -- real restores ------------------------------------------------------------------------------


@needs_mkfs
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tier", ["snapshot", "vault"])
def test_operator_restores_disks_into_a_directory(
    api, backed_up, real_disks, host, operator, run_job, tier
):
    r = api(operator).post(
        url(backed_up),
        {
            "kind": "restore_disks",
            "tier": tier,
            "target": {"host": host.pk, "path": str(restores(host))},
        },
    )
    assert r.status_code == 202, r.data
    assert r.data["operation"] == "restore" and r.data["recovery_point"] == str(backed_up.pk)
    job = run_job(r.data["id"])
    assert job.status == Status.COMPLETED, (job.error_code, job.error_message)
    assert job.params["tier"] == tier
    written = {int(lun): Path(p) for lun, p in job.params["files"].items()}
    assert sorted(written) == [-1, 0]
    for lun, path in written.items():
        assert path.parent == restores(host)
        assert same_bytes(path, real_disks[lun]), lun
    assert AuditEvent.objects.filter(action="restore.restore_disks", actor=operator).exists()


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_operator_restores_one_disk_as_chosen(api, backed_up, real_disks, host, operator, run_job):
    body = {
        "kind": "restore_disks",
        "luns": [0],
        "target": {"host": host.pk, "path": str(restores(host))},
    }
    r = api(operator).post(url(backed_up), body)
    assert r.status_code == 202, r.data
    job = run_job(r.data["id"])
    assert job.status == Status.COMPLETED, job.error_message
    (path,) = job.params["files"].values()
    assert same_bytes(path, real_disks[0])
    assert files_in(restores(host)) == [Path(path).name]


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_operator_creates_a_new_vm(api, backed_up, real_disks, host, operator, run_job):
    target = {"host": host.pk, "path": str(restores(host)), "name": "web-01-copy"}
    r = api(operator).post(url(backed_up), {"kind": "create_vm", "target": target})
    assert r.status_code == 202, r.data
    job = run_job(r.data["id"])
    assert job.status == Status.COMPLETED, job.error_message
    vm = VirtualMachine.objects.get(name="web-01-copy")
    assert vm.host == host and vm.power_state == "stopped"
    disks = {d.lun: d for d in vm.disks.all()}
    assert sorted(disks) == [-1, 0]
    for lun, disk in disks.items():
        assert Path(disk.path).parent == restores(host)
        assert same_bytes(disk.path, real_disks[lun])
        assert disk.size == real_disks[lun].stat().st_size


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_operator_replaces_the_stopped_vms_disks(
    api, backed_up, real_disks, host, operator, run_job, tmp_path
):
    expected = {
        lun: shutil.copyfile(p, tmp_path / f"expected{lun}.img") for lun, p in real_disks.items()
    }
    changed = real_disks[0].read_bytes()[:4096] + os.urandom(8192)
    with open(real_disks[0], "r+b") as fh:
        fh.write(changed)
    assert not same_bytes(real_disks[0], expected[0])
    r = api(operator).post(url(backed_up), {"kind": "replace_disks", "luns": [0]})
    assert r.status_code == 202, r.data
    assert [s["name"] for s in r.data["subtasks"]] == ["Take safety recovery point", "Restore data"]
    job = run_job(r.data["id"])
    assert job.status == Status.COMPLETED, job.error_message
    assert same_bytes(real_disks[0], expected[0])
    assert same_bytes(real_disks[-1], expected[-1])
    # The disk as it was before the restore is kept in a safety recovery point.
    safety = job.result["safety_recovery_point"]
    assert backed_up.protected_item.recovery_points.filter(pk=safety).exists()


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_it_says_so_when_the_vault_key_is_unavailable(
    api, backed_up, host, operator, settings, tmp_path
):
    other_key = tmp_path / "other.key"
    other_key.write_bytes(os.urandom(32))
    settings.LIFEBOAT = {**settings.LIFEBOAT, "MASTER_KEY_FILE": other_key}
    body = {"kind": "restore_disks", "target": {"host": host.pk, "path": str(restores(host))}}
    r = api(operator).post(url(backed_up), body)
    assert r.status_code == 400, r.data
    assert r.data["detail"].startswith("The vault's encryption key is unavailable")
    assert files_in(restores(host)) == [] and no_restore_queued()


# -- bad input: no job, no file ---------------------------------------------------------------


@pytest.fixture
def ok_target(host):
    return {"host": host.pk, "path": str(restores(host))}


def refused(client, rp, body, host) -> dict:
    r = client.post(url(rp), body)
    assert r.status_code == 400, (body, r.status_code, getattr(r, "data", r.content))
    assert no_restore_queued(), body
    assert files_in(restores(host)) == [], body
    return r.data


def test_it_names_each_bad_field(api, rp, vm, host, operator, ok_target, tmp_path):
    client = api(operator)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    other = f.make_host(tmp_path / "host2", name="host2")
    cases = [
        ({"target": ok_target}, "kind"),
        ({"kind": "restore_all", "target": ok_target}, "kind"),
        ({"kind": "restore_disks", "tier": "tape", "target": ok_target}, "tier"),
        ({"kind": "restore_disks", "tier": "vault", "target": ok_target}, "tier"),
        ({"kind": "restore_disks", "luns": [5], "target": ok_target}, "luns"),
        ({"kind": "restore_disks", "luns": [], "target": ok_target}, "luns"),
        ({"kind": "restore_disks", "luns": ["0"], "target": ok_target}, "luns"),
        ({"kind": "restore_disks"}, "target"),
        ({"kind": "restore_disks", "target": "/tmp"}, "target"),
        ({"kind": "restore_disks", "target": {**ok_target, "path": str(outside)}}, "target.path"),
        (
            {"kind": "restore_disks", "target": {**ok_target, "path": str(restores(host) / "no")}},
            "target.path",
        ),
        ({"kind": "restore_disks", "target": {**ok_target, "path": "restores"}}, "target.path"),
        ({"kind": "restore_disks", "target": {**ok_target, "host": other.pk}}, "target.host"),
        ({"kind": "restore_disks", "target": {**ok_target, "host": "1"}}, "target.host"),
        ({"kind": "restore_disks", "target": {**ok_target, "disk": 1}}, "target.disk"),
        ({"kind": "create_vm", "target": {**ok_target, "name": "web-01"}}, "target.name"),
        ({"kind": "create_vm", "target": {**ok_target, "name": "bad name!"}}, "target.name"),
        ({"kind": "create_vm", "target": ok_target}, "target.name"),
        ({"kind": "create_vm", "luns": [0], "target": {**ok_target, "name": "n1"}}, "luns"),
        ({"kind": "replace_disks", "target": ok_target}, "target"),
        ({"kind": "restore_disks", "target": ok_target, "when": "now"}, "when"),
    ]
    for body, field in cases:
        data = refused(client, rp, body, host)
        assert field in data, (body, data)
    # A valid request on this catalog-only point still stops before the job: no store holds it.
    assert "tier" in refused(client, rp, {"kind": "restore_disks", "target": ok_target}, host)


def test_it_refuses_to_overwrite_an_existing_file(api, rp, host, operator, ok_target):
    taken = restores(host) / f"web-01-os-{rp.time:%Y%m%d-%H%M%S}.img"
    taken.write_bytes(b"keep me")
    r = api(operator).post(url(rp), {"kind": "restore_disks", "target": ok_target})
    assert r.status_code == 400 and "already exist" in r.data["target.path"][0]
    assert taken.read_bytes() == b"keep me"
    assert files_in(restores(host)) == [taken.name] and no_restore_queued()


def test_it_refuses_a_dangling_symlink_at_the_target_name(
    api, rp, host, operator, ok_target, tmp_path
):
    link = restores(host) / f"web-01-os-{rp.time:%Y%m%d-%H%M%S}.img"
    link.symlink_to(tmp_path / "not-yet")
    r = api(operator).post(url(rp), {"kind": "restore_disks", "target": ok_target})
    assert r.status_code == 400 and "already exist" in r.data["target.path"][0]
    assert not (tmp_path / "not-yet").exists() and no_restore_queued()


def test_it_refuses_to_replace_the_disks_of_a_running_vm(api, rp, vm, host, operator):
    vm.power_state = "running"
    vm.save(update_fields=["power_state"])
    data = refused(api(operator), rp, {"kind": "replace_disks"}, host)
    assert "stop the VM" in data["detail"]


def test_it_refuses_a_soft_deleted_point(api, rp, host, operator, ok_target):
    rp.soft_deleted_at = timezone.now()
    rp.save(update_fields=["soft_deleted_at"])
    data = refused(api(operator), rp, {"kind": "restore_disks", "target": ok_target}, host)
    assert "undelete" in data["detail"]


def test_it_offers_only_restore_disks_for_a_selective_backup(api, item, host, operator, ok_target):
    rp = f.make_rp(item, disks=[{"lun": -1, "size": 1}], included_luns=[-1], excluded_luns=[0])
    data = refused(
        api(operator), rp, {"kind": "create_vm", "target": {**ok_target, "name": "x1"}}, host
    )
    assert "kind" in data


def test_reader_gets_403(api, rp, host, reader, ok_target):
    r = api(reader).post(url(rp), {"kind": "restore_disks", "target": ok_target})
    assert r.status_code == 403 and no_restore_queued()


def test_outsider_gets_404(api, rp, outsider, ok_target):
    r = api(outsider).post(url(rp), {"kind": "restore_disks", "target": ok_target})
    assert r.status_code == 404


def test_it_answers_404_for_a_point_of_another_item(api, rp, vault, host, operator, ok_target):
    f.make_protected_item(vault, f.make_vm(host, name="db-01"))
    r = api(operator).post(url(rp, "db-01"), {"kind": "restore_disks", "target": ok_target})
    assert r.status_code == 404


# -- targets that change between the request and the write ----------------------------------


def tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@needs_mkfs
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("swapped", ["target directory", "its parent"])
def test_a_directory_swapped_for_a_symlink_after_the_request_is_refused(
    api, backed_up, host, operator, run_job, tmp_path, swapped
):
    parent = restores(host) / "team"
    target_dir = parent / "web"
    target_dir.mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "web").mkdir(parents=True)
    body = {
        "kind": "create_vm",
        "target": {"host": host.pk, "path": str(target_dir), "name": "web-01-copy"},
    }
    r = api(operator).post(url(backed_up), body)
    assert r.status_code == 202, r.data

    # After the request was accepted, a directory on the path becomes a symlink leading out
    # of the allowed roots (to a tree that has the same shape).
    swap = target_dir if swapped == "target directory" else parent
    swap.rename(swap.with_name(f"{swap.name}.moved"))
    swap.symlink_to(outside / "web" if swap == target_dir else outside)

    job = run_job(r.data["id"])
    assert (job.status, job.error_code) == (Status.FAILED, "target_changed"), job.error_message
    assert "nothing was written" in job.error_message
    assert tree(outside) == ["web"]
    assert [p for p in tree(restores(host)) if p.endswith(".img") or "lifeboat-restore" in p] == []
    assert not VirtualMachine.objects.filter(name="web-01-copy").exists()
    # The failed restore no longer holds the name.
    body["target"]["path"] = str(restores(host))
    assert api(operator).post(url(backed_up), body).status_code == 202


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_a_file_created_at_the_target_name_after_the_request_is_left_alone(
    api, backed_up, host, operator, run_job
):
    r = api(operator).post(
        url(backed_up),
        {"kind": "restore_disks", "target": {"host": host.pk, "path": str(restores(host))}},
    )
    assert r.status_code == 202, r.data
    late = Path(r.data["params"]["files"]["-1"])
    late.write_bytes(b"written after the request")

    job = run_job(r.data["id"])
    assert (job.status, job.error_code) == (Status.FAILED, "target_changed"), job.error_message
    assert late.name in job.error_message
    assert late.read_bytes() == b"written after the request"
    # Neither this disk nor the other one was left behind, nor any temp file.
    assert files_in(restores(host)) == [late.name]


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_a_second_create_vm_with_the_same_name_is_refused_when_asked(
    api, backed_up, real_disks, host, operator, run_job, tmp_path
):
    other_dir = restores(host) / "other"
    other_dir.mkdir()
    first = {"host": host.pk, "path": str(restores(host)), "name": "web-01-copy"}
    r1 = api(operator).post(url(backed_up), {"kind": "create_vm", "target": first})
    assert r1.status_code == 202, r1.data
    for path in (restores(host), other_dir):
        r2 = api(operator).post(
            url(backed_up), {"kind": "create_vm", "target": {**first, "path": str(path)}}
        )
        assert r2.status_code == 400, r2.data
        assert f"job {r1.data['id']}" in r2.data["target.name"][0]
    assert Job.objects.filter(operation=Operation.RESTORE).count() == 1

    job = run_job(r1.data["id"])
    assert job.status == Status.COMPLETED, job.error_message
    vm = VirtualMachine.objects.get(name="web-01-copy")
    for disk in vm.disks.all():
        assert same_bytes(disk.path, real_disks[disk.lun]), disk.lun
    # Once the VM exists, its name is taken by the VM itself.
    r3 = api(operator).post(url(backed_up), {"kind": "create_vm", "target": first})
    assert r3.status_code == 400 and "already exists" in r3.data["target.name"][0]


@needs_mkfs
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("swapped", ["disk directory", "disk file"])
def test_replace_disks_refuses_a_disk_swapped_for_a_symlink_after_the_request(
    api, backed_up, real_disks, vm, host, operator, run_job, tmp_path, swapped
):
    # The VM's disks live in a folder of their own inside the allowed root.
    folder = real_disks[0].parent / "web-01"
    folder.mkdir()
    for disk in vm.disks.all():
        disk.path = str(Path(disk.path).replace(folder / Path(disk.path).name))
        disk.save(update_fields=["path"])
    disk0 = folder / real_disks[0].name
    kept = disk0.read_bytes()
    outside = tmp_path / "outside"
    outside.mkdir()
    bait = outside / disk0.name
    bait.write_bytes(b"not a disk of this VM")

    r = api(operator).post(url(backed_up), {"kind": "replace_disks", "luns": [0]})
    assert r.status_code == 202, r.data
    swap = folder if swapped == "disk directory" else disk0
    swap.rename(swap.with_name(f"{swap.name}.moved"))
    swap.symlink_to(outside if swap == folder else bait)

    job = run_job(r.data["id"])
    assert (job.status, job.error_code) == (Status.FAILED, "target_changed"), job.error_message
    assert tree(outside) == [bait.name] and bait.read_bytes() == b"not a disk of this VM"
    moved = swap.with_name(f"{swap.name}.moved")
    assert (moved / disk0.name if swap == folder else moved).read_bytes() == kept
    assert not [p for p in tree(real_disks[0].parent) if "lifeboat-restore" in p]


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_a_twin_that_slips_past_the_check_is_refused_by_the_database(
    api, backed_up, host, operator, monkeypatch
):
    """Two requests checked at the same moment: the second insert of the name is refused."""
    from jobs import restore

    target = {"host": host.pk, "path": str(restores(host)), "name": "web-01-copy"}
    check_key = restore._check_key

    def twin_first(rp, tier):
        """The twin's own request runs to its end, just after this one's checks passed."""
        check_key(rp, tier)
        monkeypatch.setattr(restore, "_check_key", check_key)
        restore.request_restore(rp, by=operator, kind="create_vm", target=target)

    monkeypatch.setattr(restore, "_check_key", twin_first)
    r = api(operator).post(url(backed_up), {"kind": "create_vm", "target": target})
    assert r.status_code == 400, r.data
    (twin,) = Job.objects.filter(operation=Operation.RESTORE)
    assert r.data["target.name"] == [
        f"Restore job {twin.pk} is already creating a VM named web-01-copy."
    ]


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_a_new_vms_name_is_held_until_its_restore_finishes_however_it_ends(
    api, backed_up, host, admin_user, operator
):
    from jobs import runner

    target = {"host": host.pk, "path": str(restores(host)), "name": "web-01-copy"}
    r = api(operator).post(url(backed_up), {"kind": "create_vm", "target": target})
    assert r.status_code == 202, r.data
    disk = restores(host) / "spare.img"
    disk.write_bytes(b"\0" * 4096)
    register = {"name": "web-01-copy", "host": host.pk, "disks": [{"lun": -1, "path": str(disk)}]}
    refused_vm = api(admin_user).post(reverse("api-vm-list"), register)
    assert refused_vm.status_code == 400, refused_vm.data
    assert f"Restore job {r.data['id']}" in refused_vm.data["name"][0]

    # Its worker dies: the reaper fails the job, which lets the name go.
    long_ago = timezone.now() - runner.HEARTBEAT_TIMEOUT * 2
    Job.objects.filter(pk=r.data["id"]).update(status=Status.IN_PROGRESS, heartbeat_at=long_ago)
    assert runner.reap() == 1
    again = api(operator).post(url(backed_up), {"kind": "create_vm", "target": target})
    assert again.status_code == 202, again.data


def test_replace_disks_refuses_disk_files_it_must_not_write(api, rp, vm, host, operator, tmp_path):
    vm.power_state = "stopped"
    vm.save(update_fields=["power_state"])
    disk = vm.disks.get(lun=0)
    outside = tmp_path / "outside.img"
    outside.write_bytes(b"keep me")
    Path(disk.path).unlink()
    Path(disk.path).symlink_to(outside)
    data = refused(api(operator), rp, {"kind": "replace_disks", "luns": [0]}, host)
    assert "leads outside host host1's allowed roots" in data["luns"][0]

    Path(disk.path).unlink()
    Path(disk.path).mkdir()
    data = refused(api(operator), rp, {"kind": "replace_disks", "luns": [0]}, host)
    assert "is not an image file" in data["luns"][0]
    assert outside.read_bytes() == b"keep me"
