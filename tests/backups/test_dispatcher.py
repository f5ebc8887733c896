"""The dispatcher's tick (`jobs.tasks.dispatch(now=...)`): which items get a backup job."""

from datetime import UTC, datetime, timedelta

import pytest

from jobs import runner, tasks
from jobs.backup_queue import enqueue_due_backups
from jobs.models import Job, Operation, Status
from tests import factories as f
from tests.backups.conftest import World, needs_e2fsprogs, run
from vaults.models import ItemState, ProtectedVM

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2030, 3, 12, 3, 0, tzinfo=UTC)  # daily 02:00 slot passed an hour ago


@pytest.fixture
def setup(tmp_path):
    admin = f.make_user("admin", superuser=True)
    vault = f.make_vault("prod", owner=admin)
    host = f.make_host(tmp_path / "host")
    vault.linked_hosts.add(host)
    return vault, host


def item(setup, name, *, created, state=ItemState.PROTECTED, last_slot=None, policy=None):
    vault, host = setup
    vm = f.make_vm(host, name=name)
    it = f.make_protected_item(vault, vm, policy=policy, state=state)
    ProtectedVM.objects.filter(pk=it.pk).update(created_at=created, last_scheduled_slot=last_slot)
    return it


def backup_jobs(it=None):
    qs = Job.objects.filter(operation=Operation.BACKUP)
    return qs.filter(protected_item=it) if it is not None else qs


def test_only_due_items_get_jobs(setup):
    slot = datetime(2030, 3, 12, 2, 0, tzinfo=UTC)
    due = item(setup, "due", created=NOW - timedelta(days=3))
    failing = item(setup, "failing", created=NOW - timedelta(days=3), state="protection_error")
    done = item(setup, "done", created=NOW - timedelta(days=3), last_slot=slot)
    new = item(setup, "new", created=NOW - timedelta(minutes=30))
    stopped = item(setup, "stopped", created=NOW - timedelta(days=3), state="protection_stopped")
    assert tasks.dispatch(now=NOW) == {"backups": 2, "transfers": 0, "replications": 0}
    assert set(backup_jobs().values_list("protected_item", flat=True)) == {due.pk, failing.pk}
    job = backup_jobs(due).get()
    assert job.status == Status.QUEUED and job.vm_name == "due"
    assert job.params == {"slot": slot.isoformat()}
    assert [s.name for s in job.subtasks.all()] == ["Take snapshot", "Transfer data to vault"]
    for it in (done, new, stopped):
        assert not backup_jobs(it).exists()
    due.refresh_from_db()
    assert due.last_scheduled_slot == slot


def test_one_backup_of_a_vm_at_a_time(setup):
    it = item(setup, "vm1", created=NOW - timedelta(days=3))
    assert enqueue_due_backups(NOW) == 1
    job = backup_jobs(it).get()
    # The next day's slot comes while the first job still waits, then while it runs.
    assert enqueue_due_backups(NOW + timedelta(days=1)) == 0
    Job.objects.filter(pk=job.pk).update(status=Status.IN_PROGRESS)
    assert enqueue_due_backups(NOW + timedelta(days=1)) == 0
    Job.objects.filter(pk=job.pk).update(status=Status.CANCELLING)
    assert enqueue_due_backups(NOW + timedelta(days=1)) == 0
    # Once it finished, the latest slot runs (once).
    Job.objects.filter(pk=job.pk).update(status=Status.FAILED)
    assert enqueue_due_backups(NOW + timedelta(days=1)) == 1
    assert enqueue_due_backups(NOW + timedelta(days=1)) == 0


def test_backup_now_is_refused_while_a_scheduled_backup_is_queued(setup):
    from django.core.exceptions import ValidationError

    from jobs.backup_queue import backup_now

    it = item(setup, "vm1", created=NOW - timedelta(days=3))
    enqueue_due_backups(NOW)
    with pytest.raises(ValidationError, match="already queued"):
        backup_now(it, by=it.vault.created_by)
    runner.request_cancel(backup_jobs(it).get())
    backup_now(it, by=it.vault.created_by)


def test_a_new_protection_waits_for_its_first_slot(setup):
    created = datetime(2030, 3, 12, 9, 0, tzinfo=UTC)  # after today's 02:00 slot
    it = item(setup, "new", created=created, state=ItemState.INITIAL_BACKUP_PENDING)
    for now in (created + timedelta(minutes=1), datetime(2030, 3, 13, 1, 59, tzinfo=UTC)):
        assert enqueue_due_backups(now) == 0
    assert enqueue_due_backups(datetime(2030, 3, 13, 2, 0, tzinfo=UTC)) == 1
    assert backup_jobs(it).get().params["slot"] == "2030-03-13T02:00:00+00:00"


def test_after_downtime_only_the_latest_missed_slot_runs(setup):
    it = item(
        setup,
        "vm1",
        created=NOW - timedelta(days=30),
        last_slot=datetime(2030, 3, 7, 2, 0, tzinfo=UTC),
    )
    assert enqueue_due_backups(NOW) == 1
    assert backup_jobs(it).get().params["slot"] == "2030-03-12T02:00:00+00:00"
    backup_jobs(it).update(status=Status.COMPLETED)
    assert enqueue_due_backups(NOW + timedelta(hours=12)) == 0


@needs_e2fsprogs
def test_hourly_enhanced_policy_transfers_only_the_days_last_slot(tmp_path):
    from django.utils import timezone

    rep = {
        "kind": "enhanced",
        "schedule": {
            "frequency": "hourly",
            "window_start": "08:00",
            "window_hours": 12,
            "interval_hours": 4,
        },
        "instant_restore_days": 7,
        "retention": {"daily": {"days": 30}},
    }
    w = World(tmp_path, policy_rep=rep, freeze_command="true", thaw_command="true")
    # Two days of slots (08, 12, 16), starting tomorrow so the protection is older than them.
    day1 = (timezone.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    transferred = {}
    for day in (day1, day1 + timedelta(days=1)):
        for hour in (8, 12, 16):
            now = day + timedelta(hours=hour, minutes=1)
            assert tasks.dispatch(now=now)["backups"] == 1, now
            job = run(Job.objects.get(operation=Operation.BACKUP, status=Status.QUEUED))
            assert job.status == Status.COMPLETED, (job.error_message, job.warnings)
            rp = job.recovery_point
            transferred[(day.date().isoformat(), hour)] = rp.type
            sub = job.subtasks.get(name="Transfer data to vault")
            assert sub.status == Status.COMPLETED
    d1, d2 = day1.date().isoformat(), (day1 + timedelta(days=1)).date().isoformat()
    assert transferred == {
        # The very first backup goes to the vault too: there is no earlier vault copy.
        (d1, 8): "snapshot_and_vault",
        (d1, 12): "snapshot",
        (d1, 16): "snapshot_and_vault",
        (d2, 8): "snapshot",
        (d2, 12): "snapshot",
        (d2, 16): "snapshot_and_vault",
    }
    # Snapshot-only RPs carry no daily tag and expire with the instant-restore days.
    only_snapshot = w.item.recovery_points.filter(in_vault_tier=False)
    assert all(rp.tags == [] or "daily" not in rp.tags for rp in only_snapshot)
    assert not only_snapshot.filter(transfer_due=True).exists()
