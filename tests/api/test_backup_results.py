"""What a real backup shows through the API: the job's totals and the recovery point."""

import pytest
from django.urls import reverse

from tests.api.conftest import needs_mkfs

pytestmark = [needs_mkfs, pytest.mark.django_db(transaction=True)]


def test_a_finished_backup_job_shows_its_totals(api, backed_up, real_disks, reader):
    job = backed_up.jobs.get(operation="backup")
    d = api(reader).get(reverse("api-job-detail", args=["prod", job.pk])).data
    assert d["status"] == "completed" and d["recovery_point"] == str(backed_up.pk)
    disk_bytes = sum(p.stat().st_size for p in real_disks.values())
    assert d["progress"]["phase"] == "transfer"  # the last phase a backup runs
    assert sorted(x["lun"] for x in d["progress"]["disks"]) == [-1, 0]
    assert all(x["done"] == x["total"] for x in d["progress"]["disks"])
    assert 0 < d["bytes_changed"] <= d["bytes_read"] <= disk_bytes and d["bytes_stored"] > 0
    assert d["consistency"] == "crash"  # the VM is stopped
    assert d["snapshot_method"] and d["freeze_seconds"] is not None
    assert d["transfer"]["bytes_copied"] > 0
    assert d["error_code"] is None and d["error_message"] == "" and d["warnings"] == []
    assert [(s["name"], s["status"]) for s in d["subtasks"]] == [
        ("Take snapshot", "completed"),
        ("Transfer data to vault", "completed"),
    ]
    assert d["params"]["on_demand"] is True


def test_a_real_recovery_point_shows_both_tiers(api, backed_up, real_disks, reader):
    url = reverse("api-recovery-point-detail", args=["prod", "web-01", backed_up.pk])
    d = api(reader).get(url).data
    assert d["type"] == "snapshot_and_vault"
    assert d["tiers"] == {"snapshot": True, "vault": True} and d["transfer_due"] is False
    assert d["consistency"] == "crash" and d["tags"] == ["on_demand"]
    assert [x["lun"] for x in d["disks"]] == [-1, 0]
    assert d["size_bytes"] == sum(p.stat().st_size for p in real_disks.values())
    assert d["included_luns"] == [-1, 0] and d["excluded_luns"] == []
    assert d["retain_until"] == d["expires_at"] is not None  # on demand: kept until then
