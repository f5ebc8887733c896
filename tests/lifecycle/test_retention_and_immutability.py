"""Retention cuts send recovery points to the recycle bin and raising retention brings them back;
immutable vaults refuse every operation that would lose data early (409 naming the rule)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import tasks
from jobs.models import Job, Operation, Status
from tests import factories as f
from tests.lifecycle.conftest import needs_e2fsprogs, run
from vaults import lifecycle
from vaults.models import ProtectedVM, RecoveryPoint, Vault
from vaults.protection import stop_modes, stop_protection, update_item

pytestmark = needs_e2fsprogs

DAILY = {"daily": {"days": 30}}


def three_scheduled(lab, item):
    """Scheduled RPs of the slots 20, 10 and 1 days ago (daily 30 days: all alive)."""
    now = timezone.now().replace(hour=2, minute=0, second=0, microsecond=0)
    return [lab.scheduled_backup(item, now - timedelta(days=d)) for d in (20, 10, 1)]


def states(rps):
    out = []
    for rp in rps:
        rp.refresh_from_db()
        out.append("bin" if rp.soft_deleted_at else "live")
    return out


def test_a_policy_cut_bins_rps_and_raising_it_brings_them_back(lab, ops):
    item = lab.protect("web")
    old, mid, new = rps = three_scheduled(lab, item)
    assert old.expires_at - old.time < timedelta(days=11)  # judged by the slot, not run time
    assert ops.edit_policy(lab.policy, lab.contributor, {"daily": {"days": 7}}) == ("ok",)
    assert states(rps) == ["bin", "bin", "live"]
    assert (old.soft_delete_reason, old.soft_deleted_by) == ("retention_reduced", lab.contributor)
    assert old.purge_at == old.soft_deleted_at + timedelta(days=lab.vault.soft_delete_days)
    # Cleanup deletes nothing from the bin (the purge does, later).
    assert tasks.cleanup(now=timezone.now()) == 1
    run(Job.objects.get(operation=Operation.CLEANUP))
    assert RecoveryPoint.objects.count() == 3
    # The bin shows both, with the reason.
    bin_ = lifecycle.recycle_bin(lab.vault, user=lab.reader)
    assert [(e.kind, e.reason) for e in bin_] == [("recovery_point", "retention_reduced")] * 2

    # Raise retention to 15 days: the 10-day-old RP comes back, the 20-day-old stays.
    assert ops.edit_policy(lab.policy, lab.contributor, {"daily": {"days": 15}}) == ("ok",)
    assert states(rps) == ["bin", "live", "live"]
    mid.refresh_from_db()
    assert (mid.soft_delete_reason, mid.purge_at, mid.tags) == ("", None, ["daily"])
    assert ops.edit_policy(lab.policy, lab.contributor, DAILY) == ("ok",)
    assert states(rps) == ["live", "live", "live"]
    assert new.expires_at is not None


def test_moving_to_a_shorter_policy_bins_and_moving_back_returns(lab, ops):
    item = lab.protect("web")
    rps = three_scheduled(lab, item)
    short = f.make_policy(lab.vault, "Daily7", retention={"daily": {"days": 7}})
    assert ops.move(item, lab.contributor, short) == ("ok",)
    assert states(rps) == ["bin", "bin", "live"]
    assert ops.move(item, lab.contributor, lab.policy) == ("ok",)
    assert states(rps) == ["live", "live", "live"]


def test_binned_rps_are_purged_after_their_days(lab):
    item = lab.protect("web")
    rps = three_scheduled(lab, item)
    short = f.make_policy(lab.vault, "Daily7", retention={"daily": {"days": 7}})
    update_item(item, by=lab.admin, policy=short)
    RecoveryPoint.objects.filter(soft_deleted_at__isnull=False).update(
        purge_at=timezone.now() - timedelta(seconds=1)
    )
    assert tasks.purge() == 1
    job = run(Job.objects.get(operation=Operation.PURGE))
    assert job.status == Status.COMPLETED and job.result["recovery_points"] == 2
    assert list(RecoveryPoint.objects.values_list("pk", flat=True)) == [rps[-1].pk]
    assert ProtectedVM.objects.filter(pk=item.pk).exists()  # the item itself lives on
    assert [r.rp_id for r in __import__("engine").list_recovery_points(lab.vault_store())] == [
        str(rps[-1].pk)
    ]


@pytest.mark.parametrize("level", ["unlocked", "locked"])
def test_immutability_blocks_every_early_loss(lab, ops, level):
    item = lab.protect("web")
    rps = three_scheduled(lab, item)
    short = f.make_policy(lab.vault, "Daily7", retention={"daily": {"days": 7}})
    assert ops.settings(lab.vault, lab.contributor, immutability="unlocked") == ("ok",)
    if level == "locked":
        assert ops.settings(lab.vault, lab.contributor, immutability="locked") == ("ok",)
    lab.vault.refresh_from_db()
    blocked = ("blocked", "immutability")

    # Stop with delete data; reduce the policy's retention; move to a shorter policy.
    assert ops.stop(item, lab.admin, "delete_data") == blocked
    assert ops.edit_policy(lab.policy, lab.admin, {"daily": {"days": 7}}) == blocked
    assert ops.move(item, lab.admin, short) == blocked
    assert states(rps) == ["live", "live", "live"]
    # A missing role is still 403, not 409.
    assert ops.stop(item, lab.reader, "delete_data") == ("forbidden",)
    # Stop protection offers only the retain modes, and they work.
    assert stop_modes(lab.vault) == ["retain_forever", "retain_as_per_policy"]
    assert ops.stop(item, lab.contributor, "retain_as_per_policy") == ("ok",)
    # Raising retention is fine.
    assert ops.edit_policy(lab.policy, lab.contributor, {"daily": {"days": 60}}) == ("ok",)
    item.refresh_from_db()
    assert item.state == "protection_stopped"


def test_immutability_blocks_purging_items_deleted_before_it(lab, ops):
    item = lab.protect("web")
    lab.backup(item)
    Vault.objects.filter(pk=lab.vault.pk).update(soft_delete_state="disabled")
    stop_protection(item, by=lab.admin, mode="delete_data")
    Job.objects.filter(operation=Operation.DELETE_BACKUP_DATA).delete()  # not run yet
    ProtectedVM.objects.filter(pk=item.pk).update(
        deleted_soft_delete_state="enabled", purge_at=timezone.now() + timedelta(days=14)
    )
    assert ops.settings(lab.vault, lab.contributor, immutability="unlocked") == ("ok",)
    assert ops.purge_now(item, lab.admin) == ("blocked", "immutability")


def test_lock_order_and_irreversibility(lab, ops):
    # Locking needs unlocked first; locked is irreversible for everybody, superusers included.
    assert ops.settings(lab.vault, lab.admin, immutability="locked") == (
        "blocked",
        "immutability_lock_order",
    )
    assert ops.settings(lab.vault, lab.admin, immutability="unlocked") == ("ok",)
    assert ops.settings(lab.vault, lab.admin, immutability="disabled") == ("ok",)
    assert ops.settings(lab.vault, lab.admin, immutability="unlocked") == ("ok",)
    assert ops.settings(lab.vault, lab.admin, immutability="locked") == ("ok",)
    for value in ("unlocked", "disabled"):
        assert ops.settings(lab.vault, lab.admin, immutability=value) == (
            "blocked",
            "immutability_locked",
        )
    lab.vault.refresh_from_db()
    assert lab.vault.immutability == "locked"
    # Settings need the contributor role: 403 for an operator, before any rule.
    assert ops.settings(lab.vault, lab.operator, immutability="unlocked") == ("forbidden",)
