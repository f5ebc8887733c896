"""A recovery point keeps the schedule slot its backup ran for; retention reads it there."""

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from jobs.models import Job, Operation
from tests import factories as f
from tests.lifecycle.conftest import needs_e2fsprogs
from vaults.models import RecoveryPoint


def slot(days_ago: int) -> datetime:
    now = timezone.now().replace(hour=2, minute=0, second=0, microsecond=0)
    return now - timedelta(days=days_ago)


@needs_e2fsprogs
def test_a_scheduled_backup_records_its_slot_and_an_on_demand_one_none(lab):
    item = lab.protect("web")
    scheduled = lab.scheduled_backup(item, slot(3))
    assert scheduled.slot == slot(3)
    assert lab.backup(item).slot is None


@needs_e2fsprogs
def test_retention_judges_the_slot_kept_on_the_recovery_point(lab, ops):
    """The job's parameters are not where the slot is read: without them, a policy cut still
    places each recovery point on its slot's day (run "now", they would all stay)."""
    item = lab.protect("web")
    rps = [lab.scheduled_backup(item, slot(d)) for d in (20, 10, 1)]
    Job.objects.filter(operation=Operation.BACKUP).update(params={})
    assert ops.edit_policy(lab.policy, lab.contributor, {"daily": {"days": 7}}) == ("ok",)
    binned = [RecoveryPoint.objects.get(pk=rp.pk).soft_deleted_at is not None for rp in rps]
    assert binned == [True, True, False]


@pytest.mark.django_db
def test_the_migration_fills_the_slot_of_existing_rows_from_their_backup_job(tmp_path):
    vault = f.make_vault("prod")
    item = f.make_protected_item(vault, f.make_vm(f.make_host(tmp_path)))
    when = datetime(2030, 3, 12, 2, 0, tzinfo=UTC)
    scheduled, on_demand, safety = (f.make_rp(item) for _ in range(3))
    f.make_job(
        vault,
        item,
        operation=Operation.BACKUP,
        recovery_point=scheduled,
        params={"slot": when.isoformat()},
    )
    f.make_job(vault, item, operation=Operation.BACKUP, recovery_point=on_demand, params={})
    f.make_job(vault, item, operation=Operation.RESTORE, recovery_point=safety, params={})
    migration = importlib.import_module("vaults.migrations.0006_recoverypoint_slot")
    migration.fill_slots(apps, None)
    slots = dict(RecoveryPoint.objects.values_list("pk", "slot"))
    assert slots == {scheduled.pk: when, on_demand.pk: None, safety.pk: None}
