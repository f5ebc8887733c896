"""The overview (home page): health counts, jobs per day, failures of the last 24 hours,
approvals for guard approvers, active alerts and storage per vault."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, Status
from security.models import Alert, Approval
from tests import factories as f
from vaults.models import ItemState
from vaults.usage import record_day

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("persona", ["reader", "admin_user"])
def test_it_shows_health_jobs_and_failures(login, persona, request, vault, item, rp, job):
    reader = request.getfixturevalue(persona)
    failed = f.make_job(vault, item, status=Status.FAILED, error_message="disk gone")
    f.make_job(None, operation="test_target", status=Status.FAILED)  # a site job: not listed
    old = f.make_job(vault, item, status=Status.FAILED)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=30))
    response = login(reader).get(reverse("dashboard"))
    assert response.status_code == 200
    o = response.context["o"]
    assert o.health["protected"] == 1
    today = o.jobs_7.rows[-1]
    assert today["completed"] == 1 and today["failed"] == 1
    assert sum(r["failed"] for r in o.jobs_30.rows) == 2  # 30 hours ago is within 30 days
    assert [j.pk for j in o.failed] == [failed.pk]  # the 30-hour-old failure is not listed
    html = response.content.decode()
    assert reverse("job-detail", args=["prod", failed.pk]) in html
    assert reverse("report-detail", args=["backup-items"]) + "?health=failed" in html


def test_vault_rows_count_failed_and_warning_items_with_links(login, reader, vault, host):
    f.make_protected_item(vault, f.make_vm(host), state=ItemState.PROTECTION_ERROR)
    f.make_protected_item(vault, f.make_vm(host), last_backup_status="completed_with_warnings")
    response = login(reader).get(reverse("dashboard"))
    (row,) = response.context["vaults"]
    assert (row.failed_count, row.warning_count, row.item_count) == (1, 1, 2)
    assert reverse("item-list", args=["prod"]) + "?health=failed" in response.content.decode()


def test_health_counts_each_state(login, reader, vault, host):
    states = [
        (ItemState.PROTECTED, ""),
        (ItemState.PROTECTED, Status.COMPLETED_WITH_WARNINGS),
        (ItemState.PROTECTION_ERROR, Status.FAILED),
        (ItemState.INITIAL_BACKUP_PENDING, ""),
        (ItemState.PROTECTION_STOPPED, ""),
        (ItemState.SOFT_DELETED, ""),
    ]
    for state, status in states:
        f.make_protected_item(vault, f.make_vm(host), state=state, last_backup_status=status)
    health = login(reader).get(reverse("dashboard")).context["o"].health
    assert health == {
        "protected": 1,
        "warning": 1,
        "failed": 1,
        "initial_backup_pending": 1,
        "stopped": 1,
    }


def test_outsider_sees_no_vault(login, outsider, vault, rp, job):
    response = login(outsider).get(reverse("dashboard"))
    assert response.context["vaults"] == []
    assert sum(response.context["o"].health.values()) == 0
    assert all(r["completed"] == 0 for r in response.context["o"].jobs_30.rows)
    assert b"prod" not in response.content


def test_guard_approver_sees_pending_approvals_others_do_not(login, approver, owner, vault):
    Approval.objects.create(
        vault=vault,
        operation="protection.stop",
        summary="Stop protection of web-01",
        requested_by=owner,
        requested_by_name="owner",
        expires_at=timezone.now() + timedelta(hours=12),
    )
    html = login(approver).get(reverse("dashboard")).content.decode()
    assert "Stop protection of web-01" in html
    assert (
        "Stop protection of web-01" not in login(owner).get(reverse("dashboard")).content.decode()
    )


def test_active_alerts_are_listed(login, reader, vault):
    Alert.objects.create(vault=vault, severity="sev1", kind="job_failed", message="Backup failed")
    response = login(reader).get(reverse("dashboard"))
    assert response.context["o"].alert_count == 1
    assert "Backup failed" in response.content.decode()


def test_storage_shows_the_recorded_day_and_says_a_trend_needs_two(login, reader, vault, rp):
    record_day()
    response = login(reader).get(reverse("dashboard"))
    (trend,) = response.context["o"].storage
    assert trend.latest.logical_bytes == rp.size_bytes
    assert trend.outlook == "A trend needs two recorded days."


def test_storage_full_by_from_two_days_of_growth(login, reader, vault):
    from vaults.models import VaultUsage

    today = timezone.localdate()
    common = {"vault": vault, "recorded_at": timezone.now(), "capacity_bytes": 10 << 30}
    VaultUsage.objects.create(
        day=today - timedelta(days=1), vault_stored_bytes=1 << 30, free_bytes=5 << 30, **common
    )
    VaultUsage.objects.create(day=today, vault_stored_bytes=2 << 30, free_bytes=4 << 30, **common)
    (trend,) = login(reader).get(reverse("dashboard")).context["o"].storage
    assert trend.growth_per_day == pytest.approx(1 << 30)
    assert trend.full_by == today + timedelta(days=4)
    assert trend.outlook == f"Full by {(today + timedelta(days=4)).isoformat()} at this rate."


def test_object_storage_says_free_space_unknown(login, reader, vault):
    from vaults.models import VaultUsage

    VaultUsage.objects.create(
        vault=vault, day=timezone.localdate(), stats_known=False, recorded_at=timezone.now()
    )
    (trend,) = login(reader).get(reverse("dashboard")).context["o"].storage
    assert "object storage" in trend.outlook


def test_it_keeps_its_query_budget(assert_query_budget, reader, admin_user, tmp_path):
    def make_rows(n):
        for _ in range(n):
            v = f.make_vault(owner=admin_user)
            f.add_member(v, reader)
            host = f.make_host(tmp_path / v.name)
            item = f.make_protected_item(v, f.make_vm(host))
            f.make_rp(item)
            f.make_job(v, item)
            f.make_job(v, item, status=Status.FAILED)
        record_day()

    assert_query_budget(reader, reverse("dashboard"), make_rows, 13, marker="/jobs/")


def test_it_keeps_its_query_budget_with_many_jobs_and_points_in_one_vault(
    assert_query_budget, reader, vault, item
):
    def make_rows(n):
        for i in range(n):
            f.make_rp(item, time=timezone.now() - timedelta(hours=i + 1))
            f.make_job(vault, item, status=[Status.COMPLETED, Status.FAILED][i % 2])

    assert_query_budget(reader, reverse("dashboard"), make_rows, 13)
