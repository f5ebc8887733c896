"""The overview and a report in a real browser, after real backups by a django-q2 worker
(`manage.py qcluster`) and one that failed, served by `manage.py runserver` on the shared
database: the charts' numbers are the database's, and a report's CSV is its table."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.utils import timezone

from tests.backups.conftest import (  # noqa: F401  (fixtures)
    World,
    lifeboat_env,
    needs_e2fsprogs,
    shared_db,
    start_worker,
)
from tests.browser.conftest import log_in, needs_chromium
from tests.browser.test_backup_now import _serve
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser, needs_chromium, needs_e2fsprogs]


def _chart_table(page, chart_id: str) -> dict[str, dict[str, str]]:
    """label → series key → data-value, read from a chart's numbers table."""
    return page.evaluate(
        """(id) => {
            const table = document.getElementById(id + '-data');
            const keys = [...table.querySelectorAll('thead th[data-series]')]
                .map(th => th.dataset.series);
            const out = {};
            for (const tr of table.querySelectorAll('tbody tr')) {
                const cells = [...tr.querySelectorAll('td')];
                out[tr.querySelector('th').textContent.trim()] =
                    Object.fromEntries(keys.map((k, i) => [k, cells[i].dataset.value]));
            }
            return out;
        }""",
        chart_id,
    )


def _bar_titles(page, chart_id: str) -> list[str]:
    return page.eval_on_selector_all(
        f"#{chart_id} svg rect title", "els => els.map(e => e.textContent)"
    )


def test_overview_charts_match_the_database_and_the_csv_matches_the_table(
    page,
    shared_db,  # noqa: F811
    start_worker,  # noqa: F811
    tmp_path,
):
    from jobs.backup_queue import backup_now
    from jobs.models import Job, Status
    from jobs.tasks import record_usage
    from portal.reports.jobs import DEFAULT_OPERATIONS
    from tests import factories as f
    from vaults.models import Role, VaultUsage

    w = World(tmp_path, disks=((-1, 16),), power_state="stopped")
    reader = f.make_user("browser-reader")
    reader.password = PBKDF2PasswordHasher().encode("pw-secret-1", "browsertest", 1000)
    reader.save(update_fields=["password"])
    f.add_member(w.vault, reader, Role.READER)
    env = lifeboat_env()
    start_worker(["qcluster"], env)

    def run_backup() -> Job:
        job = backup_now(w.item, by=w.admin)
        return wait_until(
            lambda: Job.objects.filter(pk=job.pk, ended_at__isnull=False).first(),
            timeout=90,
            step=0.2,
            what=f"backup job {job.pk} to finish",
        )

    for _ in range(3):
        assert run_backup().status in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS)
    # The disk vanishes: the next backup fails.
    w.images[-1].rename(w.images[-1].with_suffix(".gone"))
    assert run_backup().status == Status.FAILED
    record_usage()

    base = _serve(start_worker, env)
    log_in(page, base, "browser-reader")
    page.goto(f"{base}/")

    # Health: the item's last backup failed.
    assert page.locator("#health-failed .big").text_content() == "1"
    assert page.locator("#health-protected .big").text_content() == "0"

    # Jobs of the last 7 days: today's bar and numbers are the database's.
    today = timezone.localdate()
    todays = Job.objects.filter(
        vault=w.vault,
        operation__in=DEFAULT_OPERATIONS,
        created_at__gte=timezone.now() - timedelta(days=1),
    )
    todays = [j for j in todays if timezone.localdate(j.created_at) == today]
    expected = {
        s: sum(1 for j in todays if j.status == s)
        for s in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS, Status.FAILED)
    }
    assert expected[Status.FAILED] == 1
    assert sum(expected.values()) == 4
    for chart in ("jobs-7", "jobs-30"):
        numbers = _chart_table(page, chart)
        assert {k: int(v) for k, v in numbers[today.isoformat()].items()} == expected
        drawn = [t for t in _bar_titles(page, chart) if t.startswith(today.isoformat())]
        assert sorted(drawn) == sorted(
            f"{today.isoformat()}: {label} {n}"
            for s, label in Status.choices
            if (n := expected.get(s, 0))
        )
    assert page.locator("#failed-jobs tbody tr").count() == 1

    # Storage of the vault: the recorded day's sizes.
    usage = VaultUsage.objects.get(vault=w.vault, day=today)
    assert usage.vault_stored_bytes > 0 and usage.logical_bytes > 0
    numbers = _chart_table(page, f"storage-{w.vault.name}")[today.isoformat()]
    assert int(numbers["logical_bytes"]) == usage.logical_bytes
    assert int(numbers["vault_stored_bytes"]) == usage.vault_stored_bytes
    assert page.locator(f"#vault-storage-{w.vault.name} .outlook").text_content() == (
        "A trend needs two recorded days."
    )

    # A report: its CSV export holds the same cells as its table.
    page.goto(f"{base}/reports/jobs/")
    head = page.eval_on_selector_all(
        "#report-table thead th", "els => els.map(e => e.textContent.trim())"
    )
    cells = page.eval_on_selector_all(
        "#report-table tbody tr",
        "trs => trs.map(tr => [...tr.querySelectorAll('td')].map(td => td.dataset.value))",
    )
    with page.expect_download() as info:
        page.click("#csv-export")
    rows = list(csv.reader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    assert rows[0] == head
    assert rows[1:] == cells
    assert {r[0]: r for r in rows[1:]}[today.isoformat()][3] == "1"  # today's failure
