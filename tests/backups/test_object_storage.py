"""Vaults whose stores live in object storage: the vault store in S3 (moto), the secondary copy
in Azure Blob (Azurite). A backup goes snapshot → S3 → Azure; restores are byte-identical from
S3 and, with S3 cut off, from Azure; purge deletes both copies; the vault page's storage
figures are the objects' listed sizes. Credentials come from the environment variables the
storage targets name, read where the stores are opened."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone

import engine
from engine.tests.objservers import (  # noqa: F401  (session fixtures)
    AZ_ACCOUNT,
    AZ_KEY,
    S3_CREDS,
    Outage,
    azurite_server,
    moto_server,
    new_bucket,
    new_container,
    s3_client,
)
from jobs.models import Job, Operation, Status
from jobs.purge import enqueue_due_purges
from jobs.restore import request_restore
from portal.units import iec
from tests.backups.conftest import World, aside, needs_e2fsprogs, run, same_bytes
from vaults.models import RecoveryPoint, Replication, StorageTarget
from vaults.storage import vault_storage
from vaults.stores import open_secondary_store, open_vault_store

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def s3_outage(moto_server):  # noqa: F811
    relay = Outage(moto_server.endpoint)
    yield relay
    relay.close()


@pytest.fixture
def object_world(tmp_path, monkeypatch, moto_server, azurite_server, s3_outage):  # noqa: F811
    monkeypatch.setenv("T_GEO_S3_ID", S3_CREDS["access_key_id"])
    monkeypatch.setenv("T_GEO_S3_SECRET", S3_CREDS["secret_access_key"])
    monkeypatch.setenv("T_GEO_AZ_ACCOUNT", AZ_ACCOUNT)
    monkeypatch.setenv("T_GEO_AZ_KEY", AZ_KEY)
    s3 = StorageTarget.objects.create(
        name="moto",
        kind="s3",
        endpoint=s3_outage.endpoint,
        region="us-east-1",
        path_style=True,
        credentials_env={"access_key_id": "T_GEO_S3_ID", "secret_access_key": "T_GEO_S3_SECRET"},
    )
    azure = StorageTarget.objects.create(
        name="azurite",
        kind="azure",
        endpoint=azurite_server.endpoint,
        credentials_env={"account_name": "T_GEO_AZ_ACCOUNT", "account_key": "T_GEO_AZ_KEY"},
    )
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    w.vault.store_location = f"s3://{new_bucket(moto_server.endpoint)}/vaults/{w.vault.name}"
    w.vault.storage_target = s3
    w.vault.secondary_location = f"az://{new_container(azurite_server.endpoint)}/copy"
    w.vault.secondary_target = azure
    w.vault.save()
    return w


def restore(w: World, rp: RecoveryPoint, into: str, **how) -> Path:
    directory = Path(w.host.allowed_roots[1]) / into
    directory.mkdir()
    job = request_restore(
        rp,
        by=w.admin,
        kind="restore_disks",
        target={"host": w.host.pk, "path": str(directory)},
        **how,
    )
    job = run(job)
    assert job.status == Status.COMPLETED, job.error_message
    return Path(job.result["targets"]["-1"])


def test_backup_to_s3_replicated_to_azure_restores_from_either(object_world, s3_outage):
    w = object_world
    expected = aside(w.images[-1], "now")
    backup = run(w.backup_now())
    assert backup.status == Status.COMPLETED, (backup.error_message, backup.warnings)
    rp = RecoveryPoint.objects.get()
    assert rp.in_vault_tier and rp.replication == Replication.PENDING
    assert open_vault_store(w.vault).has_manifest(str(rp.pk))

    replicate = run(Job.objects.get(operation=Operation.REPLICATE))
    assert replicate.status == Status.COMPLETED, replicate.error_message
    rp.refresh_from_db()
    assert rp.replication == Replication.REPLICATED
    secondary = open_secondary_store(w.vault)
    assert secondary.path is None and secondary.location.startswith("az://")
    assert secondary.has_manifest(str(rp.pk))

    assert same_bytes(restore(w, rp, "from-s3", tier="vault"), expected)

    # S3 is gone: the primary cannot be reached, the secondary still restores.
    s3_outage.cut()
    with pytest.raises(engine.EngineError):
        open_vault_store(w.vault).has_manifest(str(rp.pk))
    assert same_bytes(restore(w, rp, "from-azure", source="secondary"), expected)
    s3_outage.restore()

    # Purge deletes the copy in S3 and in Azure.
    now = timezone.now()
    RecoveryPoint.objects.filter(pk=rp.pk).update(
        soft_deleted_at=now - timedelta(days=15), purge_at=now - timedelta(days=1)
    )
    assert enqueue_due_purges() == 1
    purge = run(Job.objects.get(operation=Operation.PURGE))
    assert purge.status == Status.COMPLETED, (purge.error_message, purge.warnings)
    assert not open_vault_store(w.vault).has_manifest(str(rp.pk))
    assert not open_secondary_store(w.vault).has_manifest(str(rp.pk))


def test_a_missing_credential_variable_fails_the_backup_naming_it(object_world, monkeypatch):
    w = object_world
    monkeypatch.delenv("T_GEO_S3_SECRET")
    backup = run(w.backup_now())
    assert backup.status == Status.FAILED
    assert "T_GEO_S3_SECRET" in backup.error_message


def _s3_chunk_sizes(endpoint: str, location: str) -> list[int]:
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    pages = s3_client(endpoint).get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    return [
        o["Size"]
        for page in pages.paginate(Bucket=bucket, Prefix=f"{prefix}/chunks/")
        for o in page.get("Contents", [])
    ]


def _azure_chunk_sizes(endpoint: str, location: str) -> list[int]:
    from azure.storage.blob import BlobServiceClient

    container, prefix = location.removeprefix("az://").split("/", 1)
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
        f"BlobEndpoint={endpoint};"
    )
    blobs = BlobServiceClient.from_connection_string(conn).get_container_client(container)
    return [b.size for b in blobs.list_blobs(name_starts_with=f"{prefix}/chunks/")]


def test_storage_figures_of_object_stores_are_their_listed_sizes(
    object_world,
    moto_server,  # noqa: F811
    azurite_server,  # noqa: F811
    monkeypatch,
    client,
):
    w = object_world
    assert run(w.backup_now()).status == Status.COMPLETED
    assert run(Job.objects.get(operation=Operation.REPLICATE)).status == Status.COMPLETED
    rp = RecoveryPoint.objects.get()
    cache.clear()
    storage = vault_storage(w.vault)
    vault_tier, snapshot_tier, secondary = storage.tiers
    assert (vault_tier.label, secondary.label) == ("Vault tier", "Secondary copy")
    on_s3 = _s3_chunk_sizes(moto_server.endpoint, w.vault.store_location)
    on_azure = _azure_chunk_sizes(azurite_server.endpoint, w.vault.secondary_location)
    for tier, listed in ((vault_tier, on_s3), (secondary, on_azure)):
        assert tier.error == ""
        assert listed and tier.stats.exists
        assert (tier.stats.chunks, tier.stats.stored_bytes) == (len(listed), sum(listed))
        assert tier.stats.recovery_points == 1 and tier.stats.disks == 1
        assert tier.stats.logical_bytes == rp.size_bytes
        # The same chunks as the snapshot tier, zstd-compressed: fewer bytes, same data.
        assert tier.stats.unique_bytes == snapshot_tier.stats.unique_bytes > 0
        assert 0 < tier.stats.stored_bytes < snapshot_tier.stats.stored_bytes
        assert tier.stats.garbage_chunks == tier.stats.missing_chunks == 0
    assert storage.stored_bytes == sum(on_s3) + sum(on_azure) + snapshot_tier.stats.stored_bytes

    # The vault page shows them.
    client.force_login(w.admin)
    html = client.get(f"/vaults/{w.vault.name}/").content.decode()
    assert f'id="storage-stored">{iec(storage.stored_bytes)}' in html
    assert "Not measured" not in html

    # Credentials this process cannot read: the tier says so, and names the variable.
    monkeypatch.delenv("T_GEO_AZ_KEY")
    cache.clear()
    secondary = vault_storage(w.vault).tiers[2]
    assert not secondary.stats.exists
    assert secondary.error.startswith("Not measured by the web server")
    assert "T_GEO_AZ_KEY" in secondary.error
    assert "T_GEO_AZ_KEY" in client.get(f"/vaults/{w.vault.name}/").content.decode()
