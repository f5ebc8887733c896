"""Which recovery points get a retried transfer: the job conditions hold for one job."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.backup_queue import enqueue_pending_transfers
from jobs.models import Job, Operation, Status
from tests import factories as f


@pytest.fixture
def waiting_rp(item):
    rp = f.make_rp(item, transfer_due=True, in_snapshot_tier=True, in_vault_tier=False)
    f.make_job(
        item.vault, item, operation=Operation.TRANSFER, status=Status.FAILED, recovery_point=rp
    )
    return rp


def test_a_running_restore_does_not_hold_back_a_failed_transfer(waiting_rp, item):
    f.make_job(
        item.vault,
        item,
        operation=Operation.RESTORE,
        status=Status.IN_PROGRESS,
        recovery_point=waiting_rp,
    )
    assert enqueue_pending_transfers(timezone.now() + timedelta(hours=1)) == 1
    assert Job.objects.filter(
        operation=Operation.TRANSFER, status=Status.QUEUED, recovery_point=waiting_rp
    ).exists()


def test_a_running_transfer_of_the_same_rp_is_not_doubled(waiting_rp, item):
    f.make_job(
        item.vault,
        item,
        operation=Operation.TRANSFER,
        status=Status.IN_PROGRESS,
        recovery_point=waiting_rp,
    )
    assert enqueue_pending_transfers(timezone.now() + timedelta(hours=1)) == 0
