"""Selective disk backup (enhanced policies): only the chosen disks are captured."""

import pytest

import engine
from jobs.models import Status
from tests.backups.conftest import World, aside, needs_e2fsprogs, run, same_bytes
from vaults.protection import protect_vm

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]

ENHANCED = {
    "kind": "enhanced",
    "schedule": {"frequency": "daily", "time": "02:00"},
    "instant_restore_days": 7,
    "retention": {"daily": {"days": 30}},
}


@pytest.mark.parametrize(
    "selection, included, excluded",
    [
        ({"included_luns": [1]}, [-1, 1], [0]),
        ({"excluded_luns": [1]}, [-1, 0], [1]),
    ],
)
def test_only_selected_disks_are_backed_up(tmp_path, selection, included, excluded):
    w = World(
        tmp_path,
        disks=((-1, 16), (0, 16), (1, 16)),
        policy_rep=ENHANCED,
        protect=False,
        freeze_command="true",
        thaw_command="true",
    )
    w.item = protect_vm(w.vault, by=w.admin, vm=w.vm, policy=w.policy, **selection)
    expected = {lun: aside(w.images[lun], "now") for lun in included}
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    rp = job.recovery_point
    assert (rp.included_luns, rp.excluded_luns) == (included, excluded)
    assert [d["lun"] for d in rp.disks] == included
    for store in (w.snapshot_store(), w.vault_store()):
        manifest = engine.get_recovery_point(store, str(rp.pk))
        assert [d.lun for d in manifest.disks] == included
    vstore = w.vault_store()
    for lun in included:
        assert same_bytes(w.restore(vstore, rp.pk, lun), expected[lun])
    with pytest.raises(engine.DiskNotFound):
        w.restore(vstore, rp.pk, excluded[0])
