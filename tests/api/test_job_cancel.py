from django.urls import reverse

from jobs.models import Job, Status
from tests import factories as f
from vaults.models import AuditEvent


def url(job):
    return reverse("api-job-cancel", args=["prod", job.pk])


def test_operator_cancels_a_queued_job(api, item, operator):
    job = f.make_job(item.vault, item, status=Status.QUEUED)
    r = api(operator).post(url(job))
    assert r.status_code == 202, r.data
    assert r.data["id"] == job.pk and r.data["status"] == "cancelled"
    job.refresh_from_db()
    assert job.status == Status.CANCELLED and job.ended_at is not None
    event = AuditEvent.objects.get(action="job.cancel")
    assert event.actor == operator and event.after == {"status": "cancelled"}


def test_it_asks_a_running_job_to_stop(api, item, operator):
    job = f.make_job(item.vault, item, status=Status.IN_PROGRESS)
    r = api(operator).post(url(job))
    assert r.status_code == 202 and r.data["status"] == "cancelling"
    # Asking again while it stops changes nothing and is no error.
    r = api(operator).post(url(job))
    assert r.status_code == 202 and r.data["status"] == "cancelling"
    assert AuditEvent.objects.filter(action="job.cancel").count() == 1


def test_a_finished_job_answers_409(api, job, operator):
    r = api(operator).post(url(job))
    assert r.status_code == 409
    assert r.data["detail"] == f"Job {job.pk} has already finished (completed)."
    job.refresh_from_db()
    assert job.status == Status.COMPLETED
    assert not AuditEvent.objects.filter(action="job.cancel").exists()


def test_a_cancelled_job_answers_409(api, item, operator):
    job = f.make_job(item.vault, item, status=Status.CANCELLED)
    assert api(operator).post(url(job)).status_code == 409


def test_reader_gets_403(api, item, reader):
    job = f.make_job(item.vault, item, status=Status.QUEUED)
    assert api(reader).post(url(job)).status_code == 403
    job.refresh_from_db()
    assert job.status == Status.QUEUED


def test_outsider_gets_404(api, item, outsider):
    job = f.make_job(item.vault, item, status=Status.QUEUED)
    assert api(outsider).post(url(job)).status_code == 404


def test_it_answers_404_for_a_job_of_another_vault(api, vault, operator, admin_user):
    other = f.make_vault("other", owner=admin_user)
    job = Job.objects.create(vault=other, operation="verify", status=Status.QUEUED)
    assert api(operator).post(url(job)).status_code == 404
    job.refresh_from_db()
    assert job.status == Status.QUEUED


def test_it_answers_405_to_get(api, job, operator):
    assert api(operator).get(url(job)).status_code == 405
