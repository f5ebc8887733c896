from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

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
        error_code="disk_not_found",
        error_message="disk image(s) missing",
        bytes_total=2048,
        bytes_done=1024,
    )
    SubTask.objects.create(job=job, order=0, name="Take snapshot", status=Status.FAILED)
    response = login(reader).get(url(job))
    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "Take snapshot",
        "Disk not found",
        "disk image(s) missing",
        "1.0 KiB of 2.0 KiB",
    ):
        assert text in html


def test_unfinished_job_page_polls(login, reader, running):
    html = login(reader).get(url(running)).content.decode()
    assert 'hx-trigger="every 1s"' in html
    assert "Transfer data to vault" in html


def test_finished_job_page_does_not_poll(login, reader, job):
    html = login(reader).get(url(job)).content.decode()
    assert "every 1s" not in html


def test_progress_fragment_answers_200_while_in_progress(login, reader, running):
    response = login(reader).get(url(running), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="job-progress"')
    assert "<html" not in html
    assert 'hx-trigger="every 1s"' in html


def test_progress_fragment_answers_286_once_finished(login, reader, running):
    running.status = Status.COMPLETED
    running.save()
    response = login(reader).get(url(running), **HTMX)
    assert response.status_code == 286
    assert "every 1s" not in response.content.decode()


def test_job_of_another_vault_is_404(login, reader, admin_user, vault):
    other = f.make_job(f.make_vault("other", owner=admin_user))
    assert login(reader).get(reverse("job-detail", args=["prod", other.pk])).status_code == 404


def test_it_shows_per_disk_progress_rates_and_eta(login, reader, vault, item):
    job = f.make_job(
        vault,
        item,
        status=Status.IN_PROGRESS,
        bytes_total=100 << 20,
        bytes_done=25 << 20,
        started_at=timezone.now() - timedelta(seconds=10),
        result={
            "progress": {
                "phase": "snapshot",
                "disks": [
                    {"lun": -1, "done": 20 << 20, "total": 40 << 20},
                    {"lun": 0, "done": 5 << 20, "total": 60 << 20},
                ],
            }
        },
    )
    SubTask.objects.create(
        job=job,
        order=0,
        name="Take snapshot",
        status=Status.IN_PROGRESS,
        started_at=timezone.now() - timedelta(seconds=5),
    )
    response = login(reader).get(url(job))
    html = response.content.decode()
    assert 'aria-valuenow="50"' in html  # OS disk
    assert 'aria-valuenow="8"' in html  # LUN 0: 5 of 60 MiB
    assert "OS disk" in html and "LUN 0" in html
    # The running phase began 5 s ago: 25 MiB / 5 s = 5 MiB/s, 75 MiB left → about 15 s.
    rate = response.context["rate"]
    assert 4.5 * (1 << 20) < rate < 5.5 * (1 << 20)
    assert 13 <= response.context["eta"].total_seconds() <= 17
    assert 'id="job-eta"' in html and 'id="job-rate"' in html


def test_it_shows_backup_results_consistency_and_hook_log(login, operator, vault, item):
    job = f.make_job(
        vault,
        item,
        result={
            "consistency": "application",
            "snapshot_method": "reflink",
            "freeze_seconds": 0.042,
            "bytes_read": 32 << 20,
            "bytes_changed": 4 << 20,
            "bytes_stored": 3 << 20,
            "hook_log": ["pre: started", "pre: exit 0"],
            "transfer": {"chunks_copied": 3, "bytes_copied": 3 << 20, "chunks_present": 29},
        },
    )
    html = login(operator).get(url(job)).content.decode()
    for text in (
        "Application-consistent",
        "Copy-on-write clone",
        "frozen 0.042 s",
        "32.0 MiB",
        "4.0 MiB",
        "3.0 MiB",
        "29 chunks it already held",
        "<details",
        "pre: exit 0",
    ):
        assert text in html, text
    # A finished job shows neither throughput nor a time left.
    assert 'id="job-eta"' not in html


def test_thaw_failed_is_shown_loudly(login, operator, vault, item):
    job = f.make_job(
        vault,
        item,
        status=Status.COMPLETED_WITH_WARNINGS,
        warnings=[
            {"code": "thaw_failed", "message": "fsfreeze -u exited 1"},
            {"code": "post_script_failed", "message": "post.sh exited 2"},
        ],
    )
    html = login(operator).get(url(job)).content.decode()
    loud = html[html.index('id="loud-warnings"') :]
    assert "fsfreeze -u exited 1" in loud[: loud.index("</div>")]
    assert "post.sh exited 2" in html[html.index('id="job-warnings"') :]


def test_operator_sees_cancel_while_the_job_runs(login, operator, reader, running):
    cancel = reverse("job-cancel", args=["prod", running.pk])
    assert cancel in login(operator).get(url(running)).content.decode()
    assert cancel not in login(reader).get(url(running)).content.decode()


def test_a_job_waiting_for_its_host_s_worker_says_so(login, reader, vault, item):
    message = "Waiting for the worker on host kvm-lab (offline since 2026-01-01 10:00:00 UTC)."
    job = f.make_job(
        vault, item, status=Status.QUEUED, queue="host-kvm-lab", waiting_message=message
    )
    assert message in login(reader).get(url(job)).content.decode()
    # Claimed, the worker is named instead.
    job.status, job.worker, job.waiting_message = (
        Status.IN_PROGRESS,
        "host-kvm-lab on kvm1 pid 7",
        "",
    )
    job.save()
    html = login(reader).get(url(job)).content.decode()
    assert "Waiting for" not in html and "host-kvm-lab on kvm1 pid 7" in html


def test_a_restore_job_says_what_it_wrote_where_and_links_the_new_vm(
    login, admin_user, operator, vault, item, host
):
    new_vm = f.make_vm(host, name="web-01-copy")
    job = f.make_job(
        vault,
        item,
        operation="restore",
        params={
            "kind": "create_vm",
            "tier": "vault",
            "host": host.pk,
            "path": host.allowed_roots[0],
            "files": {"-1": f"{host.allowed_roots[0]}/web-01-copy-os.img"},
            "name": "web-01-copy",
        },
        result={
            "targets": {"-1": f"{host.allowed_roots[0]}/web-01-copy-os.img"},
            "new_vm": new_vm.pk,
            "bytes_written": 4 << 20,
        },
    )
    html = login(operator).get(url(job)).content.decode()
    for text in (
        "Create new VM",
        "Vault tier",
        host.name,
        host.allowed_roots[0],
        "web-01-copy-os.img",
        "4.0 MiB",
        'id="restore-new-vm">web-01-copy',
    ):
        assert text in html, text
    # Site administrators follow the link to the new VM.
    admin_html = login(admin_user).get(url(job)).content.decode()
    assert 'href="/inventory/vms/web-01-copy/"' in admin_html


def test_it_shows_chunks_stored_whole_and_as_deltas(login, reader, vault, item):
    job = f.make_job(
        vault,
        item,
        result={
            "bytes_read": 32 << 20,
            "bytes_changed": 20 << 20,
            "bytes_stored": 1 << 20,
            "chunks_whole": 2,
            "chunks_delta": 18,
            "bytes_saved": 17 << 20,
            "disks": [
                {
                    "lun": 0,
                    "bytes_read": 32 << 20,
                    "bytes_changed": 20 << 20,
                    "bytes_stored": 1 << 20,
                    "chunks_new": 20,
                    "chunks_delta": 18,
                    "bytes_saved": 17 << 20,
                    "change_detection": "full-read",
                }
            ],
            "transfer": {
                "chunks_copied": 20,
                "bytes_copied": 1 << 20,
                "chunks_present": 12,
                "chunks_delta": 18,
            },
        },
    )
    html = login(reader).get(url(job)).content.decode()
    for text in (
        "2 whole, 18 as deltas (17.0 MiB saved)",
        "18 of 20 new chunks, 17.0 MiB saved",
        "20 chunks (18 as deltas)",
        "12 chunks it already held",
    ):
        assert text in html, text


def test_it_shows_no_delta_figures_for_results_from_before_them(login, reader, vault, item):
    job = f.make_job(vault, item, result={"bytes_read": 1, "bytes_changed": 1, "bytes_stored": 1})
    html = login(reader).get(url(job)).content.decode()
    assert 'id="job-chunks"' not in html
