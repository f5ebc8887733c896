"""The reaper (`jobs.tasks.reap`): jobs whose worker died fail with words that fit their
operation and raise their alerts; queued jobs whose task-queue message was lost get a new one,
a bounded number of times."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from jobs import queue, runner, tasks
from jobs.models import Job, Operation, Status
from security.models import Alert
from vaults.models import ItemState

pytestmark = pytest.mark.django_db(transaction=True)


def running_job(item, operation) -> Job:
    job = runner.create_job(
        operation=operation, vault=item.vault, item=item, subtasks=["Restore data"], deliver=False
    )
    assert runner.claim(job.pk) is not None
    return job


def after_heartbeat_timeout():
    return timezone.now() + runner.HEARTBEAT_TIMEOUT + timedelta(seconds=30)


def test_a_lost_restore_is_not_promised_a_scheduled_run_and_raises_its_alert(item):
    job = running_job(item, Operation.RESTORE)
    assert tasks.reap(after_heartbeat_timeout())["worker_lost"] == 1
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "worker_lost")
    assert "scheduled" not in job.error_message
    assert "Ask for the restore again" in job.error_message
    assert job.subtasks.get().status == Status.FAILED
    alert = Alert.objects.get(kind="restore_failure")
    assert (alert.object_id, "worker_lost" in alert.message) == (str(job.pk), True)


def test_a_lost_backup_raises_its_alert_and_marks_the_item(item):
    job = running_job(item, Operation.BACKUP)
    tasks.reap(after_heartbeat_timeout())
    job.refresh_from_db()
    assert "next scheduled backup" in job.error_message
    assert Alert.objects.get(kind="backup_failure").object_id == str(job.pk)
    item.refresh_from_db()
    assert (item.state, item.last_backup_status) == (ItemState.PROTECTION_ERROR, Status.FAILED)


def messages(job) -> int:
    return len(queue.with_message([job.pk]))


def test_a_queued_job_whose_message_was_lost_is_sent_again_then_failed(item, settings):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "REDELIVER_AFTER_MINUTES": 5, "REDELIVERIES": 3}
    job = runner.create_job(operation=Operation.BACKUP, vault=item.vault, item=item)
    assert messages(job) == 1
    start = timezone.now()
    # While its message waits in the broker, a queued job is left alone however long it waits.
    assert tasks.reap(start + timedelta(hours=3))["redelivered"] == 0

    at = start
    for sent in (2, 3, 4):
        OrmQ.objects.all().delete()  # the message is lost
        assert tasks.reap(at + timedelta(minutes=4))["redelivered"] == 0  # not yet
        at += timedelta(minutes=6)
        assert tasks.reap(at) == {
            "worker_lost": 0,
            "redelivered": 1,
            "not_delivered": 0,
            "rerouted": 0,
            "waiting": 0,
        }
        job.refresh_from_db()
        assert (job.status, job.deliveries, messages(job)) == (Status.QUEUED, sent, 1)

    OrmQ.objects.all().delete()
    at += timedelta(minutes=6)
    assert tasks.reap(at)["not_delivered"] == 1
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "not_delivered")
    assert "never started" in job.error_message
    assert messages(job) == 0
    assert Alert.objects.get(kind="backup_failure").object_id == str(job.pk)
    item.refresh_from_db()
    assert item.state == ItemState.PROTECTION_ERROR


def test_a_message_held_by_a_worker_is_not_sent_again(item):
    job = runner.create_job(operation=Operation.BACKUP, vault=item.vault, item=item)
    # A cluster took it (and may have died): its lock runs out and another cluster takes it.
    OrmQ.objects.update(lock=timezone.now() + timedelta(minutes=5))
    assert tasks.reap(timezone.now() + timedelta(minutes=30))["redelivered"] == 0
    job.refresh_from_db()
    assert (job.status, job.deliveries, messages(job)) == (Status.QUEUED, 1, 1)
