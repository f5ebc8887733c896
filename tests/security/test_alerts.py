"""Alerts: Sev-0 security alerts fire exactly once per event and are e-mailed; Sev-1 job alerts
follow the vault's switch; acknowledge and resolve by role; the navigation count."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs import runner
from jobs.models import Job, Operation, Status
from security import alerts
from security.models import Alert, VaultAlertSettings
from tests import factories as f
from vaults.protection import stop_protection
from vaults.services.policies import update_policy
from vaults.services.vaults import update_vault

pytestmark = pytest.mark.django_db


def failed_job(vault, item, operation=Operation.BACKUP, code="source_unreadable"):
    job = f.make_job(vault, item, operation=operation, status=Status.IN_PROGRESS)
    runner.finish(job, Status.FAILED, code=code, message="A disk could not be read.")
    return job


def test_a_security_event_fires_once_and_mails_the_owners(
    vault, owner, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        update_vault(vault, by=owner, soft_delete_state="disabled", immutability="unlocked")
    kinds = sorted(Alert.objects.values_list("kind", flat=True))
    assert kinds == ["immutability_changed", "soft_delete_disabled"]
    assert all(a.severity == "sev0" for a in Alert.objects.all())
    assert len(mailoutbox) == 2 and all("owner@example.test" in m.to for m in mailoutbox)
    # The same settings saved again are no new event.
    with django_capture_on_commit_callbacks(execute=True):
        update_vault(vault, by=owner, soft_delete_days=20)
    assert Alert.objects.count() == 2 and len(mailoutbox) == 2


def test_security_alerts_cannot_be_turned_off(vault, owner):
    alerts.update_settings(vault, by=owner, job_alerts=False)
    update_vault(vault, by=owner, soft_delete_state="disabled")
    assert Alert.objects.filter(kind="soft_delete_disabled").count() == 1


def test_damaged_data_found_by_a_job_raises_a_sev1_alert_even_with_job_alerts_off(
    vault, item, owner
):
    alerts.update_settings(vault, by=owner, job_alerts=False)
    failed_job(vault, None, operation=Operation.VERIFY, code="corruption")
    alert = Alert.objects.get(kind="corruption")
    assert alert.severity == "sev1" and alert.message.startswith("Verify job")
    failed_job(vault, None, operation=Operation.VERIFY, code="corruption")
    assert Alert.objects.get(kind="corruption").occurrences == 2  # one condition, counted

    # A restore that meets damage in its recovery point, then a download from the same
    # recovery point: one alert for that recovery point.
    rp = f.make_rp(item)
    job = f.make_job(vault, item, operation=Operation.RESTORE, status=Status.IN_PROGRESS)
    job.recovery_point = rp
    job.save(update_fields=["recovery_point"])
    runner.finish(job, Status.FAILED, code="corruption", message="Stored data is damaged: …")
    alerts.data_damaged(rp, "A download failed on damaged data.")
    on_rp = Alert.objects.get(kind="corruption", object_type="Job", object_id=str(job.pk))
    assert on_rp.occurrences == 2 and on_rp.message == "A download failed on damaged data."
    assert alerts.open_damage_alert(rp) == on_rp
    assert not Alert.objects.filter(kind="restore_failure").exists()  # switched off


def test_delete_backup_data_alert(vault, item, contributor):
    stop_protection(item, by=contributor, mode="delete_data")
    alert = Alert.objects.get(kind="delete_backup_data")
    assert alert.object_type == "ProtectedVM" and alert.object_id == str(item.pk)


def test_retention_reduced_alert(vault, owner):
    policy = f.make_policy(vault, "P", retention={"daily": {"days": 60}})
    rep = policy.representation()
    update_policy(policy, {**rep, "retention": {"daily": {"days": 30}}}, by=owner)
    alert = Alert.objects.get(kind="retention_reduced")
    assert "policy P" in alert.message


def test_upcoming_purge_alert_fires_once_two_days_ahead(vault, item, rp, contributor, mailoutbox):
    stop_protection(item, by=contributor, mode="delete_data")
    item.refresh_from_db()
    now = timezone.now()
    assert alerts.check_upcoming_purges(now) == 0  # 14 days away
    soon = item.purge_at - timedelta(days=1)
    assert alerts.check_upcoming_purges(soon) == 1
    assert alerts.check_upcoming_purges(soon + timedelta(hours=1)) == 0
    alert = Alert.objects.get(kind="upcoming_purge")
    assert alert.severity == "sev0" and "web-01" in alert.message
    # Resolving it does not make the periodic check raise it again.
    alert.status = "resolved"
    alert.save()
    assert alerts.check_upcoming_purges(soon + timedelta(hours=2)) == 0


def test_the_periodic_task_is_declared():
    from jobs import schedules, tasks

    assert any(p.func == "jobs.tasks.security_checks" for p in schedules.PERIODIC)
    assert set(tasks.security_checks()) >= {"upcoming_purges", "approvals_expired"}


def test_purge_complete_alert(vault, item):
    job = f.make_job(vault, item, operation=Operation.PURGE, status=Status.IN_PROGRESS)
    job.result = {"recovery_points": 3, "items": ["web-01"]}
    Job.objects.filter(pk=job.pk).update(result=job.result)
    runner.finish(job, Status.COMPLETED)
    runner.finish(job, Status.COMPLETED)
    alert = Alert.objects.get(kind="purge_complete")
    assert "3 recovery point(s)" in alert.message and "web-01" in alert.message


def test_backup_failure_is_a_sev1_alert_counted_while_open(vault, item):
    failed_job(vault, item)
    failed_job(vault, item)
    alert = Alert.objects.get(kind="backup_failure")
    assert alert.severity == "sev1" and alert.occurrences == 2
    # A successful backup of the item resolves it.
    ok = f.make_job(vault, item, status=Status.IN_PROGRESS)
    runner.finish(ok, Status.COMPLETED)
    alert.refresh_from_db()
    assert alert.status == "resolved"
    failed_job(vault, item)
    assert Alert.objects.filter(kind="backup_failure").count() == 2


def test_restore_failure_alert(vault, item):
    failed_job(vault, item, Operation.RESTORE, code="target_unwritable")
    assert Alert.objects.get(kind="restore_failure").severity == "sev1"


def test_job_alerts_can_be_turned_off_per_vault(api, vault, item, contributor, reader):
    url = reverse("api-alert-settings", args=["prod"])
    assert api(reader).get(url).data == {"job_alerts": True}
    assert api(reader).patch(url, {"job_alerts": False}).status_code == 403
    r = api(contributor).patch(url, {"job_alerts": False})
    assert r.status_code == 200 and r.data == {"job_alerts": False}
    assert VaultAlertSettings.objects.get(vault=vault).job_alerts is False
    failed_job(vault, item)
    assert not Alert.objects.exists()


# -- the API ----------------------------------------------------------------------------------------


@pytest.fixture
def alert(vault, item):
    failed_job(vault, item)
    return Alert.objects.get()


@pytest.mark.parametrize(
    "persona, code",
    [("admin", 200), ("owner", 200), ("reader", 200), ("approver", 404), ("outsider", 404)],
)
def test_who_sees_alerts(api, personas, alert, persona, code):
    r = api(personas[persona]).get(reverse("api-alert-list", args=["prod"]))
    assert r.status_code == code
    if code == 200:
        assert r.data["results"][0]["kind"] == "backup_failure"


@pytest.mark.parametrize(
    "persona, ack, res",
    [
        ("reader", 403, 403),
        ("operator", 200, 403),
        ("contributor", 200, 200),
        ("owner", 200, 200),
        ("outsider", 404, 404),
    ],
)
def test_who_acknowledges_and_resolves(api, personas, alert, persona, ack, res):
    user = personas[persona]
    r = api(user).post(reverse("api-alert-acknowledge", args=["prod", alert.pk]), {})
    assert r.status_code == ack
    r = api(user).post(reverse("api-alert-resolve", args=["prod", alert.pk]), {})
    assert r.status_code == res


def test_acknowledge_then_resolve(api, alert, operator, contributor):
    r = api(operator).post(reverse("api-alert-acknowledge", args=["prod", alert.pk]), {})
    assert r.data["status"] == "acknowledged" and r.data["acknowledged_by"] == "operator"
    again = api(operator).post(reverse("api-alert-acknowledge", args=["prod", alert.pk]), {})
    assert again.status_code == 409
    r = api(contributor).post(reverse("api-alert-resolve", args=["prod", alert.pk]), {})
    assert r.data["status"] == "resolved" and r.data["resolved_by"] == "contributor"
    listed = api(contributor).get(reverse("api-alert-list", args=["prod"]), {"status": "active"})
    assert listed.data["count"] == 0


def test_active_alert_count(api, alert, reader, outsider, admin_user):
    assert alerts.active_alert_count(reader) == 1
    assert alerts.active_alert_count(outsider) == 0
    assert api(admin_user).get(reverse("api-alert-count")).data == {"active": 1}
