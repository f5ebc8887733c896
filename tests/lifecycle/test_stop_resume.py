"""Stop protection (retain forever / as per policy), resume, roles, scheduled backups stopping."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import tasks
from jobs.backup_queue import enqueue_due_backups
from jobs.models import Job, Operation, Status
from tests import factories as f
from tests.lifecycle.conftest import needs_e2fsprogs, run
from vaults.models import AuditEvent, ItemState, ProtectedVM, RecoveryPoint

pytestmark = needs_e2fsprogs


def cleanup_at(now):
    for job in Job.objects.filter(operation=Operation.CLEANUP, status=Status.QUEUED):
        job.delete()
    assert tasks.cleanup(now=now) == 1
    job = run(Job.objects.get(operation=Operation.CLEANUP, status=Status.QUEUED))
    assert job.status == Status.COMPLETED, job.error_message
    return job


def test_retain_as_per_policy_keeps_the_latest_rp_forever(lab, ops):
    item = lab.protect("web")
    rps = [lab.backup(item) for _ in range(3)]
    assert ops.stop(item, lab.contributor, "retain_as_per_policy") == ("ok",)
    item.refresh_from_db()
    assert (item.state, item.retention_mode) == ("protection_stopped", "retain_as_per_policy")
    assert item.stopped_by == lab.contributor and item.stopped_at is not None

    # Long after every RP's expiry, cleanup deletes the older ones and keeps the latest.
    cleanup_at(timezone.now() + timedelta(days=400))
    assert list(RecoveryPoint.objects.values_list("pk", flat=True)) == [rps[-1].pk]
    listed = [rp.rp_id for rp in __import__("engine").list_recovery_points(lab.vault_store())]
    assert listed == [str(rps[-1].pk)]
    # ... and again, years later: the latest stays.
    cleanup_at(timezone.now() + timedelta(days=4000))
    assert RecoveryPoint.objects.count() == 1


def test_retain_forever_keeps_every_rp(lab, ops):
    item = lab.protect("web")
    rps = [lab.backup(item) for _ in range(2)]
    assert ops.stop(item, lab.contributor, "retain_forever") == ("ok",)
    item.refresh_from_db()
    assert (item.state, item.retention_mode) == ("protection_stopped", "retain_forever")
    # The RPs keep the expiry the policy gave them; cleanup skips retain-forever items.
    assert all(rp.expires_at is not None for rp in RecoveryPoint.objects.all())
    cleanup_at(timezone.now() + timedelta(days=4000))
    assert RecoveryPoint.objects.count() == len(rps)

    # Resume: the policy's retention applies again, so expired RPs go (the latest stays).
    assert ops.resume(item, lab.contributor) == ("ok",)
    item.refresh_from_db()
    assert (item.state, item.retention_mode) == ("protected", "")
    cleanup_at(timezone.now() + timedelta(days=4000))
    assert list(RecoveryPoint.objects.values_list("pk", flat=True)) == [rps[-1].pk]


def test_stopped_items_get_no_scheduled_backups_and_resume_waits_for_the_next_slot(lab, ops):
    item = lab.protect("web")
    ProtectedVM.objects.filter(pk=item.pk).update(created_at=timezone.now() - timedelta(days=3))
    assert enqueue_due_backups(timezone.now()) == 1
    assert ops.stop(item, lab.contributor, "retain_forever") == ("ok",)
    # The queued scheduled backup is cancelled; the dispatcher takes none any more.
    assert Job.objects.get(operation=Operation.BACKUP).status == Status.CANCELLED
    assert enqueue_due_backups(timezone.now() + timedelta(days=5)) == 0
    assert ops.resume(item, lab.contributor) == ("ok",)
    item.refresh_from_db()
    assert item.state == ItemState.INITIAL_BACKUP_PENDING  # it has no recovery point yet
    assert enqueue_due_backups(timezone.now()) == 0  # no catch-up of missed slots
    assert enqueue_due_backups(timezone.now() + timedelta(days=1, hours=1)) == 1


def test_resume_under_another_policy(lab, ops):
    item = lab.protect("web")
    longer = f.make_policy(lab.vault, "Daily60", retention={"daily": {"days": 60}})
    assert ops.stop(item, lab.contributor, "retain_forever") == ("ok",)
    assert ops.resume(item, lab.contributor, policy=longer) == ("ok",)
    item.refresh_from_db()
    assert (item.state, item.policy_id) == ("initial_backup_pending", longer.pk)


def test_roles_and_states(lab, ops):
    item = lab.protect("web")
    # Operators and readers may not stop, resume or undelete: 403.
    for user in (lab.operator, lab.reader):
        assert ops.stop(item, user, "retain_forever") == ("forbidden",)
    assert ops.stop(item, lab.contributor, "bogus") == ("invalid",)
    assert ops.resume(item, lab.contributor) == ("blocked", "item_state")
    assert ops.undelete(item, lab.contributor) == ("blocked", "item_state")
    assert ops.stop(item, lab.contributor, "retain_forever") == ("ok",)
    assert ops.stop(item, lab.contributor, "retain_forever") == ("blocked", "item_state")
    assert ops.resume(item, lab.operator) == ("forbidden",)
    # The stop is audited with who, before and after, and shows as a Disable backup job.
    event = AuditEvent.objects.filter(action="protection.stop").get()
    assert event.actor == lab.contributor
    assert event.before["state"] == "initial_backup_pending"
    assert event.after["state"] == "protection_stopped"
    assert Job.objects.filter(operation=Operation.DISABLE_BACKUP, protected_item=item).exists()


@pytest.mark.parametrize("mode", ["retain_forever", "retain_as_per_policy"])
def test_backup_now_is_refused_while_stopped(lab, mode):
    from django.core.exceptions import ValidationError

    from jobs.backup_queue import backup_now
    from vaults.protection import stop_protection

    item = lab.protect("web")
    stop_protection(item, by=lab.admin, mode=mode)
    with pytest.raises(ValidationError):
        backup_now(ProtectedVM.objects.get(pk=item.pk), by=lab.admin)
