from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, Operation, Status, SubTask
from tests import factories as f

LIST = reverse("api-job-list", args=["prod"])


def detail(pk):
    return reverse("api-job-detail", args=["prod", pk])


def test_reader_lists_jobs(api, job, reader):
    r = api(reader).get(LIST)
    assert r.status_code == 200
    (row,) = r.data["results"]
    assert row["id"] == job.pk and row["operation"] == "backup" and row["vm_name"] == "web-01"
    assert row["status"] == "completed" and row["progress_percent"] == 100


def test_it_filters_jobs(api, item, reader):
    f.make_job(item.vault, item, status=Status.FAILED, error_code="freeze_failed")
    f.make_job(item.vault, item, operation=Operation.RESTORE)
    f.make_job(item.vault, None, operation=Operation.GARBAGE_COLLECT, status=Status.QUEUED)
    client = api(reader)

    def ops(**params):
        r = client.get(LIST, params)
        assert r.status_code == 200, r.data
        return sorted(j["operation"] + "/" + j["status"] for j in r.data["results"])

    assert ops(status="failed") == ["backup/failed"]
    assert ops(status="failed,queued") == ["backup/failed", "garbage_collect/queued"]
    assert ops(operation="restore") == ["restore/completed"]
    assert len(ops(vm="web-01")) == 2
    assert ops(since=(timezone.now() + timedelta(hours=1)).isoformat()) == []
    assert len(ops(since="2000-01-01T00:00:00Z")) == 3


def test_it_names_bad_filters(api, vault, reader):
    client = api(reader)
    r = client.get(LIST, {"since": "yesterday"})
    assert r.status_code == 400 and list(r.data) == ["since"]
    r = client.get(LIST, {"status": "done"})
    assert r.status_code == 400 and list(r.data) == ["status"]
    r = client.get(LIST, {"operation": "backup,dance"})
    assert r.status_code == 400 and list(r.data) == ["operation"]


def test_it_shows_a_job_with_its_sub_tasks(api, item, reader):
    job = f.make_job(
        item.vault,
        item,
        status=Status.COMPLETED_WITH_WARNINGS,
        warnings=[{"code": "transfer_failed", "message": "Transfer to vault failed; will retry."}],
        bytes_total=100,
        bytes_done=40,
    )
    SubTask.objects.create(job=job, order=0, name="Take snapshot", status=Status.COMPLETED)
    SubTask.objects.create(
        job=job, order=1, name="Transfer data to vault", status=Status.FAILED, message="disk full"
    )
    r = api(reader).get(detail(job.pk))
    assert r.status_code == 200
    assert [(s["name"], s["status"]) for s in r.data["subtasks"]] == [
        ("Take snapshot", "completed"),
        ("Transfer data to vault", "failed"),
    ]
    assert r.data["subtasks"][1]["message"] == "disk full"
    assert r.data["warnings"] == [
        {"code": "transfer_failed", "message": "Transfer to vault failed; will retry."}
    ]
    assert r.data["error_code"] is None
    assert {"started_at", "ended_at", "created_at", "error_message", "bytes_done"} <= set(r.data)


def test_it_answers_404_for_a_job_of_another_vault(api, vault, reader, admin_user):
    other = f.make_vault("other", owner=admin_user)
    job = Job.objects.create(vault=other, operation=Operation.VERIFY)
    assert api(reader).get(detail(job.pk)).status_code == 404


def test_outsider_gets_404(api, job, outsider):
    assert api(outsider).get(LIST).status_code == 404
    assert api(outsider).get(detail(job.pk)).status_code == 404


def test_it_keeps_the_job_list_query_count_flat(api, item, reader, admin_user, assert_flat_queries):
    assert_flat_queries(
        api(reader),
        LIST,
        lambda n: [f.make_job(item.vault, item, created_by=admin_user) for _ in range(n)],
        budget=4,
    )


def test_it_shows_progress_totals_and_an_eta_while_a_job_runs(api, item, reader):
    from datetime import timedelta

    now = timezone.now()
    job = f.make_job(
        item.vault,
        item,
        status=Status.IN_PROGRESS,
        started_at=now - timedelta(seconds=10),
        bytes_total=3000,
        bytes_done=1000,
        params={"on_demand": True, "retain_until": "2031-01-01T00:00:00+00:00"},
        result={
            "progress": {
                "phase": "snapshot",
                "disks": [
                    {"lun": -1, "done": 1000, "total": 2000},
                    {"lun": 0, "done": 0, "total": 1000},
                ],
            },
            "bytes_read": 1000,
            "bytes_changed": 600,
            "bytes_stored": 300,
        },
        warnings=[{"code": "pre_script_failed", "message": "exit 3"}],
    )
    r = api(reader).get(detail(job.pk))
    assert r.status_code == 200
    d = r.data
    assert d["progress"]["phase"] == "snapshot"
    assert d["progress"]["disks"][0] == {"lun": -1, "done": 1000, "total": 2000}
    assert (d["bytes_read"], d["bytes_changed"], d["bytes_stored"]) == (1000, 600, 300)
    assert (d["bytes_done"], d["bytes_total"], d["progress_percent"]) == (1000, 3000, 33)
    assert 90 <= d["throughput"] <= 100  # about 1000 bytes in 10 s
    assert 19 <= d["eta_seconds"] <= 21  # 2000 bytes left at that rate
    assert d["params"] == {"on_demand": True, "retain_until": "2031-01-01T00:00:00+00:00"}
    # A reader learns that the pre-script failed; what it printed is for operators.
    assert d["warnings"] == [
        {
            "code": "pre_script_failed",
            "message": "The pre-script failed. Operators see the details.",
        }
    ]
    assert d["consistency"] is None and d["recovery_point"] is None


def test_it_masks_secret_looking_params(api, item, reader):
    job = f.make_job(
        item.vault,
        item,
        params={"key_file": "/etc/lifeboat/cmk.key", "nested": [{"password": "x"}], "luns": [0]},
    )
    params = api(reader).get(detail(job.pk)).data["params"]
    assert params == {"key_file": "********", "nested": [{"password": "********"}], "luns": [0]}


def test_a_finished_job_has_no_eta(api, job, reader):
    d = api(reader).get(detail(job.pk)).data
    assert d["eta_seconds"] is None and d["progress"] is None and d["params"] == {}
