from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, Status
from tests import factories as f

pytestmark = pytest.mark.django_db


def test_reader_sees_vaults_counts_and_recent_jobs(login, reader, vault, rp, job):
    f.make_job(vault, status=Status.FAILED)
    old = f.make_job(vault, status=Status.FAILED)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=30))
    response = login(reader).get(reverse("dashboard"))
    assert response.status_code == 200
    assert response.context["item_total"] == 1
    assert response.context["rp_total"] == 1
    counts = {value: n for value, _, n in response.context["job_counts"]}
    assert counts["completed"] == 1
    assert counts["failed"] == 1  # the 30-hour-old job is not counted
    html = response.content.decode()
    assert reverse("vault-detail", args=["prod"]) in html


def test_outsider_sees_no_vault(login, outsider, vault, rp, job):
    response = login(outsider).get(reverse("dashboard"))
    assert response.context["vaults"] == []
    assert response.context["item_total"] == 0
    assert response.context["job_total"] == 0
    assert b"prod" not in response.content


def test_it_keeps_its_query_budget(assert_query_budget, reader, admin_user, tmp_path):
    def make_rows(n):
        for _ in range(n):
            v = f.make_vault(owner=admin_user)
            f.add_member(v, reader)
            host = f.make_host(tmp_path / v.name)
            item = f.make_protected_item(v, f.make_vm(host))
            f.make_rp(item)
            f.make_job(v, item)

    assert_query_budget(reader, reverse("dashboard"), make_rows, 6, marker="/jobs/")


def test_it_keeps_its_query_budget_with_many_jobs_and_points_in_one_vault(
    assert_query_budget, reader, vault, item
):
    def make_rows(n):
        for i in range(n):
            f.make_rp(item, time=timezone.now() - timedelta(hours=i + 1))
            f.make_job(vault, item, status=[Status.COMPLETED, Status.FAILED][i % 2])

    assert_query_budget(reader, reverse("dashboard"), make_rows, 6)
