"""A customer-managed key change re-wraps a vault's stores on object storage too: the vault
store in S3 (moto server, real requests) opens with the new key and not the old one, and a
restore from it works once the old key file is gone."""

from pathlib import Path

import pytest

import engine
from engine.tests.objservers import S3_CREDS, moto_server, new_bucket  # noqa: F401
from jobs.models import Operation, Status
from jobs.restore import request_restore
from security import keys
from security.models import VaultKey
from tests.backups.conftest import World, aside, needs_e2fsprogs, run, same_bytes
from tests.security.test_keys import key_file
from vaults import stores
from vaults.models import RecoveryPoint, StorageTarget
from vaults.protection import protect_vm
from vaults.services.vaults import update_vault

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def s3_world(tmp_path, monkeypatch, moto_server):  # noqa: F811
    monkeypatch.setenv("T_KEYS_S3_ID", S3_CREDS["access_key_id"])
    monkeypatch.setenv("T_KEYS_S3_SECRET", S3_CREDS["secret_access_key"])
    s3 = StorageTarget.objects.create(
        name="moto",
        kind="s3",
        endpoint=moto_server.endpoint,
        region="us-east-1",
        path_style=True,
        credentials_env={
            "access_key_id": "T_KEYS_S3_ID",
            "secret_access_key": "T_KEYS_S3_SECRET",
        },
    )
    w = World(tmp_path, protect=False, disks=((-1, 16),), power_state="stopped")
    w.vault.store_location = f"s3://{new_bucket(moto_server.endpoint)}/vaults/{w.vault.name}"
    w.vault.storage_target = s3
    w.vault.save()
    return w


def test_rotation_rewraps_the_vault_store_in_s3(s3_world, tmp_path):
    w = s3_world
    old_path = key_file(tmp_path / "keys" / "k1-v1.key")
    key = keys.register_key(by=w.admin, name="k1", path=str(old_path))
    update_vault(w.vault, by=w.admin, encryption="customer_managed", encryption_key="k1")
    w.vault.refresh_from_db()
    w.item = protect_vm(w.vault, by=w.admin, vm=w.vm, policy=w.policy)
    backup = run(w.backup_now())
    assert backup.status == Status.COMPLETED, (backup.error_message, backup.warnings)
    rp = RecoveryPoint.objects.get()
    assert rp.in_vault_tier
    expected = aside(w.images[-1], "rp")
    old = old_path.read_bytes()

    new_path = key_file(tmp_path / "keys" / "k1-v2.key")
    [job] = keys.rotate_key(key, by=w.admin, path=str(new_path))
    assert job.operation == Operation.UPDATE_KEY
    job = run(job)
    assert job.status == Status.COMPLETED, job.error_message
    assert job.result["stores_rewrapped"] == 2  # the vault store in S3 + the snapshot store
    assert VaultKey.objects.get(vault=w.vault).version == 2

    new = new_path.read_bytes()
    target = stores.object_target(w.vault.storage_target)
    engine.open_store(w.vault.vault_location, new, target=target)
    with pytest.raises(engine.WrongKey):
        engine.open_store(w.vault.vault_location, old, target=target)

    # A re-run finds every store already under the new key and accepts it.
    again = run(keys._update_key_job(w.vault, key, by=w.admin))
    assert again.status == Status.COMPLETED, again.error_message

    # The old key is gone: a restore from the vault store in S3 still works.
    old_path.unlink()
    directory = Path(w.host.allowed_roots[1]) / "from-s3"
    directory.mkdir()
    restore = run(
        request_restore(
            rp,
            by=w.admin,
            kind="restore_disks",
            target={"host": w.host.pk, "path": str(directory)},
            tier="vault",
        )
    )
    assert restore.status == Status.COMPLETED, restore.error_message
    assert same_bytes(Path(restore.result["targets"]["-1"]), expected)
