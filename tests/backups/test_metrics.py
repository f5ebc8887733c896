"""`/metrics` after real jobs run by a real worker (`manage.py worker`): two backups, a restore
and a backup that fails. Every value equals what the catalog says; nobody anonymous reads it."""

import signal

import pytest
from django.db.models import Count
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import UNFINISHED, Job, Status
from jobs.restore import request_restore
from security.models import Alert, AlertStatus
from tests.backups.conftest import World, lifeboat_env, needs_e2fsprogs
from tests.conftest import wait_until
from vaults.models import RecoveryPoint

pytestmark = needs_e2fsprogs

TOKEN = "scrape-token-for-tests"


def finished(job: Job) -> Job:
    wait_until(
        lambda: Job.objects.get(pk=job.pk).status not in UNFINISHED, 180, 0.2, f"job {job.pk}"
    )
    job.refresh_from_db()
    return job


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_equal_the_catalog_after_real_jobs(
    shared_db, start_worker, tmp_path, client, settings
):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "METRICS_TOKEN": TOKEN}
    # Stopped: read as they are, no live-read warning.
    good = World(tmp_path / "good", power_state="stopped")
    bad = World(tmp_path / "bad", power_state="stopped")
    worker = start_worker(["worker"], lifeboat_env())
    try:
        check_metrics(client, good, bad)
    finally:
        # As Ctrl-C: the supervisor stops its cluster (in a process group of its own) and waits.
        worker.kill(signal.SIGINT)


def check_metrics(client, good: World, bad: World) -> None:
    first = finished(good.backup_now())
    second = finished(good.backup_now())
    assert (first.status, second.status) == (Status.COMPLETED, Status.COMPLETED)
    bad.images[-1].unlink()  # its disk is gone: the backup fails
    failed = finished(bad.backup_now())
    assert failed.status == Status.FAILED
    restore = finished(
        request_restore(
            second.recovery_point,
            by=good.admin,
            kind="restore_disks",
            target={"host": good.host.pk, "path": good.host.allowed_roots[1]},
        )
    )
    assert restore.status == Status.COMPLETED, restore.error_message
    wait_until(lambda: "lifeboat_queue_workers_online" in scrape(client), 30, 0.5)

    metrics = scrape(client)
    now = timezone.now()

    counts = {
        (("operation", op), ("status", st)): float(n)
        for op, st, n in Job.objects.values_list("operation", "status").annotate(n=Count("pk"))
    }
    assert metrics["lifeboat_jobs"] == counts

    for op in ("backup", "restore"):
        for st in {j.status for j in Job.objects.filter(operation=op)}:
            jobs = Job.objects.filter(operation=op, status=st, started_at__isnull=False)
            labels = (("operation", op), ("status", st))
            spent = sum((j.ended_at - j.started_at).total_seconds() for j in jobs)
            assert metrics["lifeboat_job_duration_seconds_count"][labels] == jobs.count()
            assert metrics["lifeboat_job_duration_seconds_sum"][labels] == pytest.approx(spent)
            assert metrics["lifeboat_job_bytes_total"][labels] == sum(j.bytes_done for j in jobs)
    assert (
        metrics["lifeboat_job_bytes_total"][(("operation", "backup"), ("status", "completed"))] > 0
    )

    for w in (good, bad):
        live = RecoveryPoint.objects.live().filter(vault=w.vault).count()
        assert metrics["lifeboat_recovery_points"][(("vault", w.vault.name),)] == live
    assert metrics["lifeboat_recovery_points"][(("vault", good.vault.name),)] == 2

    item = (("item", good.vm.name), ("vault", good.vault.name))
    since = (now - second.ended_at).total_seconds()
    assert metrics["lifeboat_item_seconds_since_last_backup"][item] == pytest.approx(since, abs=5)
    never = (("item", bad.vm.name), ("vault", bad.vault.name))
    since_protected = (now - bad.item.created_at).total_seconds()
    assert metrics["lifeboat_item_seconds_since_last_backup"][never] == pytest.approx(
        since_protected, abs=5
    )
    # DefaultPolicy backs up daily: at most a day plus the grace since the slot that counts.
    assert 0 < metrics["lifeboat_item_backup_allowed_seconds"][item] <= 26 * 3600

    active = {
        (("severity", sev), ("vault", vault)): float(n)
        for vault, sev, n in Alert.objects.filter(status=AlertStatus.ACTIVE)
        .values_list("vault__name", "severity")
        .annotate(n=Count("pk"))
    }
    assert active[(("severity", "sev1"), ("vault", bad.vault.name))] >= 1  # the failure's alert
    assert metrics["lifeboat_alerts_active"] == active

    assert metrics["lifeboat_queue_workers_online"][(("queue", "lifeboat"),)] == 1


def test_nobody_anonymous_reads_metrics(client, db, settings, admin_user, reader):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "METRICS_TOKEN": TOKEN, "METRICS_ALLOW": []}
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    client.force_login(reader)
    assert client.get("/metrics").status_code == 403
    client.force_login(admin_user)
    assert client.get("/metrics").status_code == 200


def test_an_allowed_address_scrapes_without_a_token(client, db, settings):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "METRICS_TOKEN": "", "METRICS_ALLOW": ["10.1.0.0/16"]}
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 403
    # A client cannot claim an allowed address through a header no trusted proxy wrote.
    forged = client.get("/metrics", REMOTE_ADDR="10.2.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert forged.status_code == 403
