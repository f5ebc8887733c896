import pytest

from jobs.models import Operation, Status
from tests import factories as f

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
    assert html.lstrip().startswith('<div id="job-table">')
    assert "<html" not in html


def test_outsider_gets_404(login, outsider, job):
    assert login(outsider).get(URL).status_code == 404


def test_it_keeps_its_query_budget(assert_query_budget, reader, vault, item):
    def make_rows(n):
        for _ in range(n):
            f.make_job(vault, item, created_by=reader)

    assert_query_budget(reader, URL, make_rows, 6, marker="/vaults/prod/jobs/")
