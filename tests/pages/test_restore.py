import subprocess
import uuid
from pathlib import Path

import pytest
from django.urls import reverse

from jobs import runner
from jobs.models import Job, Operation, Status
from tests import factories as f

pytestmark = pytest.mark.django_db


def url(rp):
    return reverse("rp-restore", args=["prod", rp.protected_item.vm.name, rp.pk])


def test_operator_sees_kinds_disks_tiers_and_targets(login, operator, host, rp):
    response = login(operator).get(url(rp))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Restore disks", "Create new VM", "Replace existing disks", "OS disk", "LUN 0"):
        assert text in html, text
    assert "snapshot tier (instant restore)" in html  # the factory RP is only a snapshot
    assert host.allowed_roots[1] in html  # the directory hint names the allowed roots
    assert "must be <strong>stopped</strong>" in html and "safety recovery point" in html
    form = response.context["form"]
    assert form["luns"].initial == [-1, 0]  # every disk by default
    assert form["host"].initial == host.pk  # the only linked host


def test_reader_gets_403(login, reader, rp):
    assert login(reader).get(url(rp)).status_code == 403
    assert login(reader).post(url(rp), {"kind": "restore_disks"}).status_code == 403


def test_outsider_gets_404(login, outsider, rp):
    assert login(outsider).get(url(rp)).status_code == 404


def test_unknown_point_is_404(login, operator, item):
    assert (
        login(operator)
        .get(reverse("rp-restore", args=["prod", "web-01", uuid.uuid4()]))
        .status_code
        == 404
    )


def test_point_of_another_item_is_404(login, operator, vault, host, rp):
    f.make_protected_item(vault, f.make_vm(host, name="db-01"))
    assert (
        login(operator).get(reverse("rp-restore", args=["prod", "db-01", rp.pk])).status_code == 404
    )


def post(client, rp, **data):
    base = {"kind": "restore_disks", "luns": ["-1"], "tier": "auto"}
    return client.post(url(rp), {**base, **data})


def test_a_path_outside_the_allowed_roots_is_shown_next_to_the_field(login, operator, host, rp):
    response = post(login(operator), rp, host=host.pk, path="/etc")
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "allowed roots" in errors["path"][0]
    assert 'id="errors-path"><p class="field-error">' in response.content.decode()
    assert not Job.objects.filter(operation=Operation.RESTORE).exists()


def test_a_missing_host_is_shown_on_the_host_field(login, operator, host, rp):
    response = post(login(operator), rp, path=host.allowed_roots[1])
    assert response.context["form"].errors["host"]
    assert not Job.objects.filter(operation=Operation.RESTORE).exists()


def test_a_bad_new_vm_name_is_shown_on_the_name_field(login, operator, host, rp):
    response = post(
        login(operator),
        rp,
        kind="create_vm",
        host=host.pk,
        path=host.allowed_roots[1],
        name="9 bad",
    )
    assert response.status_code == 400
    assert response.context["form"].errors["name"]
    assert not Job.objects.filter(operation=Operation.RESTORE).exists()


def test_an_unknown_kind_and_no_disks_are_field_errors(login, operator, rp):
    response = login(operator).post(url(rp), {"kind": "explode", "tier": "auto"})
    assert response.status_code == 400
    assert set(response.context["form"].errors) >= {"kind", "luns"}
    assert not Job.objects.filter(operation=Operation.RESTORE).exists()


def test_a_tier_that_does_not_hold_the_point_is_a_tier_error(login, operator, host, rp):
    response = post(login(operator), rp, tier="vault", host=host.pk, path=host.allowed_roots[1])
    assert "not reached the vault tier" in response.context["form"].errors["tier"][0]


def test_selective_points_offer_only_restore_disks(login, operator, host, item):
    rp = f.make_rp(item, disks=[{"lun": -1, "size": 4 << 20}], excluded_luns=[0])
    client = login(operator)
    html = client.get(url(rp)).content.decode()
    assert 'id="selective-note"' in html
    assert 'value="create_vm"' not in html and 'value="replace_disks"' not in html
    response = post(
        client, rp, kind="create_vm", host=host.pk, path=host.allowed_roots[1], name="x"
    )
    assert response.context["form"].errors["kind"]
    assert not Job.objects.filter(operation=Operation.RESTORE).exists()


@pytest.mark.django_db(transaction=True)
def test_operator_restores_disks_and_lands_on_the_job(login, operator, host, real_rp):
    rp, _, image = real_rp
    target = Path(host.allowed_roots[1])
    response = post(login(operator), rp, host=host.pk, path=str(target), tier="vault")
    job = Job.objects.get(operation=Operation.RESTORE)
    assert response.status_code == 302
    assert response["Location"] == reverse("job-detail", args=["prod", job.pk])
    assert job.params["tier"] == "vault" and job.created_by == operator
    runner.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Status.COMPLETED, job.error_message
    (restored,) = target.glob("files-01-os-*.img")
    assert subprocess.run(["cmp", "-s", str(restored), str(image)]).returncode == 0


@pytest.mark.django_db(transaction=True)
def test_replace_disks_of_a_stopped_vm_takes_a_safety_point_first(login, operator, real_rp):
    rp, _, _ = real_rp
    client = login(operator)
    # Without the VM's name typed, nothing is replaced.
    refused = post(client, rp, kind="replace_disks", confirm_name="web-0")
    assert refused.status_code == 400
    name = rp.protected_item.vm.name
    assert refused.context["form"].errors["confirm_name"] == [
        f"Type the VM's name, {name}, to replace its disks."
    ]
    assert not Job.objects.filter(operation=Operation.RESTORE).exists()
    response = post(client, rp, kind="replace_disks", confirm_name=name)
    assert response.status_code == 302
    job = Job.objects.get(operation=Operation.RESTORE)
    assert [t.name for t in job.subtasks.order_by("order")] == [
        "Take safety recovery point",
        "Restore data",
    ]


@pytest.mark.django_db(transaction=True)
def test_an_existing_target_file_is_refused(login, operator, host, real_rp):
    rp, _, _ = real_rp
    client = login(operator)
    target = host.allowed_roots[1]
    assert post(client, rp, host=host.pk, path=target).status_code == 302
    runner.run_job(Job.objects.get(operation=Operation.RESTORE).pk)
    again = post(client, rp, host=host.pk, path=target)
    assert "already exist" in again.context["form"].errors["path"][0]
    assert Job.objects.filter(operation=Operation.RESTORE).count() == 1


@pytest.mark.django_db(transaction=True)
def test_every_invalid_field_is_reported_at_once(login, operator, real_rp):
    rp, _, _ = real_rp
    response = post(login(operator), rp, kind="create_vm", host="", path="", name="")
    assert response.status_code == 400
    assert set(response.context["form"].errors) >= {"host", "path", "name"}


@pytest.mark.django_db(transaction=True)
def test_the_target_directory_starts_at_the_hosts_first_allowed_root(
    login, operator, host, real_rp
):
    rp, _, _ = real_rp
    html = (
        login(operator)
        .get(reverse("rp-restore", args=["prod", rp.protected_item.vm.name, rp.pk]))
        .content.decode()
    )
    assert f'value="{host.allowed_roots[0]}"' in html and 'list="allowed-roots"' in html
