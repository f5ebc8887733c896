"""Report pages: each report's table, its CSV (the same cells), bad filters named, access
narrowed to the user's vaults, and query budgets."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, Operation, Status
from tests import factories as f
from vaults.models import ItemState
from vaults.usage import record_day

pytestmark = pytest.mark.django_db

SLUGS = ["backup-items", "usage", "jobs", "adherence"]


def _url(slug, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return reverse("report-detail", args=[slug]) + (f"?{q}" if q else "")


def _table_cells(html: str) -> tuple[list[str], list[list[str]]]:
    """Header labels and data-values of the report table (what the CSV must equal)."""
    table = html.split('id="report-table"', 1)[1].split("</table>", 1)[0]
    head = re.findall(r'<th scope="col" data-key="[^"]*"[^>]*>([^<]*)</th>', table)
    body = table.split("<tbody>", 1)[1]
    rows = [
        [
            v.replace("&#x27;", "'").replace("&amp;", "&")
            for v in re.findall(r'<td data-value="([^"]*)"', tr)
        ]
        for tr in body.split("</tr>")
        if "data-value" in tr
    ]
    return head, rows


@pytest.mark.parametrize("slug", SLUGS)
def test_csv_equals_the_table(login, reader, vault, item, rp, job, slug):
    f.make_job(vault, item, status=Status.FAILED)
    record_day()
    client = login(reader)
    page = client.get(_url(slug))
    assert page.status_code == 200
    head, rows = _table_cells(page.content.decode())
    assert rows, "the report has rows to compare"
    export = client.get(_url(slug, format="csv"))
    assert export["Content-Type"].startswith("text/csv")
    assert "attachment" in export["Content-Disposition"]
    got = list(csv.reader(io.StringIO(export.content.decode())))
    assert got[0] == head
    assert got[1:] == rows


def test_jobs_report_counts_per_day_and_success_rate(login, reader, vault, item):
    today = timezone.localdate()
    now = timezone.now()
    for i, status in enumerate((Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS, Status.FAILED)):
        f.make_job(
            vault,
            item,
            status=status,
            result={"bytes_read": 100, "bytes_changed": 10},
            started_at=now - timedelta(seconds=10 * (i + 1)),
            ended_at=now,
        )
    f.make_job(vault, item, operation=Operation.CLEANUP)  # housekeeping is not counted
    yesterday = f.make_job(vault, item, status=Status.FAILED)
    Job.objects.filter(pk=yesterday.pk).update(created_at=timezone.now() - timedelta(days=1))
    table = login(reader).get(_url("jobs")).context["built"].table
    row = {r["day"]: r for r in table.rows}[today]
    assert (row["completed"], row["completed_with_warnings"], row["failed"]) == (1, 1, 1)
    assert row["success_rate"] == pytest.approx(66.7)
    assert row["bytes_read"] == 300 and row["bytes_changed"] == 30
    assert row["average_seconds"] == 20.0  # 10, 20 and 30 s
    assert {r["day"]: r for r in table.rows}[today - timedelta(days=1)]["failed"] == 1
    cleanup = login(reader).get(_url("jobs", operation="cleanup")).context["built"].table
    assert {r["day"]: r for r in cleanup.rows}[today]["completed"] == 1


def test_backup_items_filtered_by_health(login, reader, vault, host):
    f.make_protected_item(vault, f.make_vm(host, name="ok-01"))
    f.make_protected_item(vault, f.make_vm(host, name="bad-01"), state=ItemState.PROTECTION_ERROR)
    rows = login(reader).get(_url("backup-items", health="failed")).context["built"].table.rows
    assert [r["vm"] for r in rows] == ["bad-01"]


def test_adherence_names_items_behind_their_schedule(login, reader, vault, host):
    behind = f.make_protected_item(vault, f.make_vm(host, name="late-01"))
    on_time = f.make_protected_item(vault, f.make_vm(host, name="fresh-01"))
    from vaults.models import ProtectedVM

    ProtectedVM.objects.filter(pk__in=[behind.pk, on_time.pk]).update(
        created_at=timezone.now() - timedelta(days=5)
    )
    f.make_rp(on_time, time=timezone.now())
    f.make_rp(behind, time=timezone.now() - timedelta(days=4))
    rows = login(reader).get(_url("adherence")).context["built"].table.rows
    by_vm = {r["vm"]: r for r in rows}
    assert by_vm["late-01"]["adherent"] == "No"
    assert by_vm["late-01"]["behind_seconds"] > 24 * 3600
    assert by_vm["fresh-01"]["adherent"] == "Yes"


def test_usage_report_by_vm(login, reader, vault, item, rp):
    from vaults.models import ItemUsage

    record_day(timezone.now() - timedelta(days=2))
    ItemUsage.objects.update(stored_bytes=100)
    record_day()
    ItemUsage.objects.filter(day=timezone.localdate()).update(stored_bytes=250)
    rows = login(reader).get(_url("usage", by="vm")).context["built"].table.rows
    assert [
        (r["vm"], r["days"], r["recovery_points"], r["logical_bytes"], r["stored_change"])
        for r in rows
    ] == [("web-01", 2, 1, rp.size_bytes, 150)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "2025-02-30"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"by": "host"}, "by"),
        ({"from": "2025-03-01", "to": "2025-01-01"}, "from"),
        ({"from": "2020-01-01", "to": "2025-01-01"}, "to"),
    ],
)
def test_bad_filters_are_named(login, reader, vault, query, field):
    response = login(reader).get(_url("usage", **query))
    assert response.status_code == 400
    assert field in response.context["errors"]
    assert f"<strong>{field}</strong>" in response.content.decode()


def test_unknown_report_is_404(login, reader):
    assert login(reader).get("/reports/nothing/").status_code == 404


@pytest.mark.parametrize("slug", SLUGS)
def test_outsider_sees_no_rows_of_other_vaults(login, outsider, vault, item, rp, job, slug):
    record_day()
    response = login(outsider).get(_url(slug))
    assert response.status_code == 200
    table = response.context["built"].table
    assert all(not r.get("vault") for r in table.rows)
    assert all(not r.get(k) for r in table.rows for k in ("completed", "failed", "recovery_points"))


@pytest.mark.parametrize("slug", SLUGS)
def test_it_keeps_its_query_budget(assert_query_budget, reader, admin_user, tmp_path, slug):
    def make_rows(n):
        for _ in range(n):
            v = f.make_vault(owner=admin_user)
            f.add_member(v, reader)
            host = f.make_host(tmp_path / v.name)
            item = f.make_protected_item(v, f.make_vm(host))
            f.make_rp(item)
            f.make_job(v, item)
        record_day()

    marker = None if slug == "jobs" else "/vaults/" if slug != "usage" else "<tr><td data-value"
    assert_query_budget(reader, _url(slug), make_rows, 8, marker=marker)
