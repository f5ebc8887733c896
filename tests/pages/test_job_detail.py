import pytest
from django.urls import reverse

from jobs.models import Status, SubTask
from tests import factories as f

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def url(job):
    return reverse("job-detail", args=["prod", job.pk])


@pytest.fixture
def running(vault, item):
    job = f.make_job(vault, item, status=Status.IN_PROGRESS, bytes_total=1000, bytes_done=400)
    SubTask.objects.create(job=job, order=0, name="Take snapshot", status=Status.COMPLETED)
    SubTask.objects.create(
        job=job, order=1, name="Transfer data to vault", status=Status.IN_PROGRESS
    )
    return job


def test_reader_sees_subtasks_bytes_and_errors(login, reader, vault, item):
    job = f.make_job(
        vault,
        item,
        status=Status.FAILED,
        error_code="freeze_failed",
        error_message="fsfreeze timed out",
        bytes_total=2048,
        bytes_done=1024,
    )
    SubTask.objects.create(job=job, order=0, name="Take snapshot", status=Status.FAILED)
    response = login(reader).get(url(job))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Take snapshot", "freeze_failed", "fsfreeze timed out", "1.0\xa0KB of 2.0\xa0KB"):
        assert text in html


def test_unfinished_job_page_polls(login, reader, running):
    html = login(reader).get(url(running)).content.decode()
    assert 'hx-trigger="every 2s"' in html
    assert "Transfer data to vault" in html


def test_finished_job_page_does_not_poll(login, reader, job):
    html = login(reader).get(url(job)).content.decode()
    assert "every 2s" not in html


def test_progress_fragment_answers_200_while_in_progress(login, reader, running):
    response = login(reader).get(url(running), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="job-progress"')
    assert "<html" not in html
    assert 'hx-trigger="every 2s"' in html


def test_progress_fragment_answers_286_once_finished(login, reader, running):
    running.status = Status.COMPLETED
    running.save()
    response = login(reader).get(url(running), **HTMX)
    assert response.status_code == 286
    assert "every 2s" not in response.content.decode()


def test_job_of_another_vault_is_404(login, reader, admin_user, vault):
    other = f.make_job(f.make_vault("other", owner=admin_user))
    assert login(reader).get(reverse("job-detail", args=["prod", other.pk])).status_code == 404
