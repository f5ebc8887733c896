from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, Operation, Status
from tests import factories as f
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/jobs/"


def test_reader_sees_jobs_with_progress(login, reader, vault, item):
    f.make_job(vault, item, status=Status.IN_PROGRESS, bytes_total=200, bytes_done=50)
    response = login(reader).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "In progress" in html
    assert 'aria-valuenow="25"' in html


def test_it_filters_by_status_and_operation(login, reader, vault, item):
    f.make_job(vault, item, status=Status.FAILED, operation=Operation.RESTORE)
    f.make_job(vault, item, status=Status.FAILED, operation=Operation.BACKUP)
    f.make_job(vault, item, status=Status.COMPLETED, operation=Operation.RESTORE)
    client = login(reader)
    jobs = client.get(URL, {"status": "failed", "operation": "restore"}).context["jobs"]
    assert [(j.status, j.operation) for j in jobs] == [("failed", "restore")]
    assert len(client.get(URL, {"status": "failed"}).context["jobs"]) == 2
    # An unknown filter value is ignored rather than matching nothing.
    assert len(client.get(URL, {"status": "bogus"}).context["jobs"]) == 3


def test_htmx_filter_returns_the_table_fragment(login, reader, job):
    response = login(reader).get(URL, {"status": "completed"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="job-table"')
    assert "<html" not in html


def test_outsider_gets_404(login, outsider, job):
    assert login(outsider).get(URL).status_code == 404


def test_it_keeps_its_query_budget(assert_query_budget, reader, vault, item):
    def make_rows(n):
        for _ in range(n):
            f.make_job(vault, item, created_by=reader)

    assert_query_budget(reader, URL, make_rows, 8, marker="/vaults/prod/jobs/")


def _aged(job, days):
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(days=days))
    return job


def test_it_shows_the_last_seven_days_by_default(login, reader, vault, item):
    recent = f.make_job(vault, item)
    old = _aged(f.make_job(vault, item), 8)
    client = login(reader)
    assert [j.pk for j in client.get(URL).context["jobs"]] == [recent.pk]
    assert {j.pk for j in client.get(URL, {"days": "30"}).context["jobs"]} == {recent.pk, old.pk}
    assert len(client.get(URL, {"days": "0"}).context["jobs"]) == 2
    # An unknown period falls back to the default.
    assert len(client.get(URL, {"days": "5"}).context["jobs"]) == 1


def test_it_filters_by_vm(login, reader, vault, item, host):
    other = f.make_protected_item(vault, f.make_vm(host, name="db-01"))
    f.make_job(vault, item)
    f.make_job(vault, other)
    response = login(reader).get(URL, {"vm": "db-01"})
    assert [j.vm_name for j in response.context["jobs"]] == ["db-01"]
    assert list(response.context["vm_names"]) == ["db-01", "web-01"]


def test_the_table_polls_while_a_job_is_unfinished(login, reader, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    client = login(reader)
    html = client.get(URL).content.decode()
    assert 'hx-trigger="every 2s"' in html and "poll=1" in html
    assert client.get(URL, {"poll": "1"}, HTTP_HX_REQUEST="true").status_code == 200
    running.status = Status.COMPLETED
    running.save()
    assert client.get(URL, {"poll": "1"}, HTTP_HX_REQUEST="true").status_code == 286
    # A filter change (no poll=1) always swaps.
    assert client.get(URL, {"status": "failed"}, HTTP_HX_REQUEST="true").status_code == 200


# -- cancel -------------------------------------------------------------------------------------


def cancel_url(job):
    return reverse("job-cancel", args=["prod", job.pk])


def test_operator_sees_cancel_on_unfinished_jobs_only(login, operator, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    done = f.make_job(vault, item)
    html = login(operator).get(URL).content.decode()
    assert cancel_url(running) in html
    assert cancel_url(done) not in html
    assert "hx-confirm" in html


def test_reader_is_not_offered_cancel(login, reader, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    assert cancel_url(running) not in login(reader).get(URL).content.decode()


def test_operator_cancels_a_queued_job_at_once(login, operator, vault, item):
    queued = f.make_job(vault, item, status=Status.QUEUED)
    response = login(operator).post(cancel_url(queued), {"next": "/vaults/prod/jobs/?days=30"})
    assert response.status_code == 302
    assert response["Location"] == "/vaults/prod/jobs/?days=30"
    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED


def test_operator_asks_a_running_job_to_stop(login, operator, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    response = login(operator).post(cancel_url(running))
    assert response["Location"] == reverse("job-detail", args=["prod", running.pk])
    running.refresh_from_db()
    assert running.status == Status.CANCELLING


def test_cancelling_from_the_page_is_audited_as_from_the_api(login, operator, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    client = login(operator)
    client.post(cancel_url(running))
    event = AuditEvent.objects.get(action="job.cancel")
    assert event.actor == operator and event.vault == vault
    assert event.object_id == str(running.pk)
    assert (event.before, event.after) == ({"status": "in_progress"}, {"status": "cancelling"})
    # Asking again while it stops changes nothing, so nothing more is recorded.
    response = client.post(cancel_url(running), follow=True)
    assert f"Job {running.pk} is already cancelling." in response.content.decode()
    assert AuditEvent.objects.filter(action="job.cancel").count() == 1


def test_cancel_of_a_finished_job_changes_nothing(login, operator, job):
    response = login(operator).post(cancel_url(job), follow=True)
    assert "already finished" in response.content.decode()
    job.refresh_from_db()
    assert job.status == Status.COMPLETED
    assert not AuditEvent.objects.filter(action="job.cancel").exists()


def test_cancel_ignores_an_offsite_next(login, operator, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    response = login(operator).post(cancel_url(running), {"next": "https://evil.test/"})
    assert response["Location"] == reverse("job-detail", args=["prod", running.pk])


def test_reader_may_not_cancel(login, reader, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    assert login(reader).post(cancel_url(running)).status_code == 403
    running.refresh_from_db()
    assert running.status == Status.IN_PROGRESS


def test_outsider_cancel_is_404(login, outsider, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    assert login(outsider).post(cancel_url(running)).status_code == 404


def test_cancel_is_post_only(login, operator, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS)
    assert login(operator).get(cancel_url(running)).status_code == 405


def test_it_keeps_its_query_budget_with_unfinished_jobs(assert_query_budget, operator, vault, item):
    def make_rows(n):
        for i in range(n):
            f.make_job(
                vault, item, created_by=operator, status=[Status.IN_PROGRESS, Status.FAILED][i % 2]
            )

    assert_query_budget(operator, URL, make_rows, 8, marker="/vaults/prod/jobs/")
