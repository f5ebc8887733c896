"""The reports in the API: the same rows as the pages, CSV with ?format=csv, bad input named,
only the caller's vaults, and a query budget that does not grow with the rows."""

import csv
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs.models import Status
from portal.reports.catalog import REPORTS, build
from portal.reports.period import last_days
from portal.reports.table import raw
from tests import factories as f
from vaults.usage import record_day

pytestmark = pytest.mark.django_db

NAMES = {
    "backup-items": "api-report-backup-items",
    "usage": "api-report-usage",
    "jobs": "api-report-jobs",
    "adherence": "api-report-adherence",
}


@pytest.mark.parametrize("slug", list(NAMES))
def test_json_and_csv_hold_the_pages_rows(api, reader, vault, item, rp, job, slug):
    f.make_job(vault, item, status=Status.FAILED)
    record_day()
    client = api(reader)
    r = client.get(reverse(NAMES[slug]))
    assert r.status_code == 200, r.data
    built = build(REPORTS[slug], reader, last_days(30), {})
    assert r.data["to"] == timezone.localdate().isoformat()
    assert len(r.data["rows"]) == len(built.table.rows) > 0
    keys = [c.key for c in built.table.columns]
    assert list(r.data["rows"][0]) == keys
    c = client.get(reverse(NAMES[slug]), {"format": "csv"})
    assert c.status_code == 200
    assert c["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(c.content.decode())))
    assert rows[0] == [col.label for col in built.table.columns]
    assert rows[1:] == [[raw(row[k]) for k in keys] for row in built.table.rows]


def test_jobs_report_in_json(api, reader, vault, item):
    f.make_job(vault, item, status=Status.FAILED)
    f.make_job(vault, item, result={"bytes_read": 5, "transfer": {"bytes_copied": 7}})
    r = api(reader).get(reverse("api-report-jobs"), {"from": timezone.localdate().isoformat()})
    (row,) = r.data["rows"]
    assert row["completed"] == 1 and row["failed"] == 1 and row["success_rate"] == 50.0
    assert row["bytes_read"] == 5 and row["bytes_stored"] == 7


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "nope"}, "from"),
        ({"to": "2025-13-01"}, "to"),
        ({"from": "2025-05-02", "to": "2025-05-01"}, "from"),
        ({"operation": "backup,teleport"}, "operation"),
        ({"to": "9999-12-31"}, "to"),
        ({"from": "0001-01-01"}, "from"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, reader, query, field):
    r = api(reader).get(reverse("api-report-jobs"), query)
    assert r.status_code == 400
    assert field in r.data


def test_bad_input_in_csv_names_the_field(api, reader):
    r = api(reader).get(reverse("api-report-jobs"), {"format": "csv", "from": "nope"})
    assert r.status_code == 400
    assert r.content.decode().splitlines()[1].startswith("from,")


def test_outsider_gets_no_rows_of_other_vaults(api, outsider, vault, item, rp):
    record_day()
    for name in ("api-report-backup-items", "api-report-usage", "api-report-adherence"):
        assert api(outsider).get(reverse(name)).data["rows"] == []


def test_anonymous_is_refused(api):
    assert api(None).get(reverse("api-report-usage")).status_code in (401, 403)


def test_the_schema_documents_every_report(api, reader):
    schema = api(reader).get(reverse("api-schema"), {"format": "json"}).json()
    for slug in NAMES:
        op = schema["paths"][f"/api/v1/reports/{slug}/"]["get"]
        names = {p["name"] for p in op["parameters"]}
        assert {"from", "to", "format"} <= names
    assert "success_rate" in schema["components"]["schemas"]["JobsReportRow"]["properties"]


@pytest.mark.parametrize("name", list(NAMES.values()))
def test_query_budget_does_not_grow_with_rows(api, reader, admin_user, tmp_path, name):
    client = api(reader)

    def count(n):
        for _ in range(n):
            v = f.make_vault(owner=admin_user)
            f.add_member(v, reader)
            item = f.make_protected_item(v, f.make_vm(f.make_host(tmp_path / v.name)))
            f.make_rp(item)
            f.make_job(v, item)
        record_day()
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse(name)).status_code == 200
        return len(ctx)

    assert count(3) == count(47)
