from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, Operation, Status
from tests.api.conftest import needs_mkfs
from vaults.models import AuditEvent

URL = reverse("api-protected-item-backup", args=["prod", "web-01"])


def test_operator_backs_up_now(api, item, operator):
    r = api(operator).post(URL)
    assert r.status_code == 202, r.data
    job = Job.objects.get(pk=r.data["id"])
    assert (job.operation, job.status, job.protected_item_id) == ("backup", "queued", item.pk)
    assert job.created_by == operator
    assert r.data["operation"] == "backup" and r.data["status"] == "queued"
    assert [s["name"] for s in r.data["subtasks"]] == ["Take snapshot", "Transfer data to vault"]
    # Kept 30 days by default; the audit record comes from the domain function.
    until = datetime.fromisoformat(r.data["params"]["retain_until"])
    assert abs(until - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert AuditEvent.objects.filter(action="backup.now", actor=operator).count() == 1


def test_it_keeps_the_backup_through_the_given_day(api, item, operator):
    r = api(operator).post(URL, {"retain_until": "2031-03-04"})
    assert r.status_code == 202, r.data
    until = datetime.fromisoformat(r.data["params"]["retain_until"])
    assert until == datetime(2031, 3, 5, tzinfo=UTC)


def test_it_takes_a_datetime_too(api, item, operator):
    r = api(operator).post(URL, {"retain_until": "2031-03-04T10:30:00+02:00"})
    assert r.status_code == 202, r.data
    until = datetime.fromisoformat(r.data["params"]["retain_until"])
    assert until == datetime(2031, 3, 4, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    ["tomorrow", "2031-02-30", 20310304, "2000-01-01", "2000-01-01T00:00:00Z", "3000-01-01"],
)
def test_it_names_a_bad_retain_until(api, item, operator, value):
    r = api(operator).post(URL, {"retain_until": value})
    assert r.status_code == 400 and list(r.data) == ["retain_until"], r.data
    assert not Job.objects.exists()


def test_it_refuses_unknown_fields(api, item, operator):
    r = api(operator).post(URL, {"retain": "2031-01-01"})
    assert r.status_code == 400 and r.data == {"retain": ["Unknown field."]}
    assert not Job.objects.exists()


def test_a_second_backup_while_one_is_queued_answers_409(api, item, operator, contributor):
    assert api(operator).post(URL).status_code == 202
    r = api(contributor).post(URL)
    assert r.status_code == 409
    assert "already queued" in r.data["detail"] and "web-01" in r.data["detail"]
    assert Job.objects.filter(operation=Operation.BACKUP).count() == 1


def test_a_backup_while_one_runs_answers_409_and_after_it_finished_202(api, job, operator):
    Job.objects.filter(pk=job.pk).update(status=Status.IN_PROGRESS)
    r = api(operator).post(URL)
    assert r.status_code == 409 and "in progress" in r.data["detail"]
    Job.objects.filter(pk=job.pk).update(status=Status.COMPLETED)
    assert api(operator).post(URL).status_code == 202


def test_it_refuses_a_stopped_protection_with_a_message(api, item, operator):
    item.state = "protection_stopped"
    item.save(update_fields=["state"])
    r = api(operator).post(URL)
    assert r.status_code == 400 and "resume protection" in r.data["detail"]


def test_reader_gets_403(api, item, reader):
    assert api(reader).post(URL).status_code == 403
    assert not Job.objects.exists()


def test_outsider_and_approver_get_404(api, item, outsider, approver):
    assert api(outsider).post(URL).status_code == 404
    assert api(approver).post(URL).status_code == 404


def test_it_answers_404_for_an_unknown_item(api, item, operator):
    url = reverse("api-protected-item-backup", args=["prod", "nope"])
    assert api(operator).post(url).status_code == 404


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_the_queued_backup_runs_into_a_recovery_point(
    api, item, real_disks, operator, run_job, reader
):
    r = api(operator).post(URL, {"retain_until": "2031-03-04"})
    assert r.status_code == 202, r.data
    job = run_job(r.data["id"])
    assert job.status == Status.COMPLETED, (job.error_code, job.error_message)
    rp = job.recovery_point
    assert rp.tags == ["on_demand"] and rp.expires_at == datetime(2031, 3, 5, tzinfo=UTC)
    detail = api(reader).get(reverse("api-job-detail", args=["prod", job.pk])).data
    assert detail["recovery_point"] == str(rp.pk)
    assert detail["status"] == "completed" and detail["progress_percent"] == 100
