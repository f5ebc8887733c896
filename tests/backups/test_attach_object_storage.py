"""A catalog rebuilt from a vault store on object storage: a vault backed up to S3 (moto) or
Azure Blob (Azurite), the database dropped, the storage target registered again, the store
attached through it (command and page), a restore byte-identical; a master key that does not
open the store, a missing target or one of the wrong kind is refused with nothing created."""

import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from engine.tests.objservers import (  # noqa: F401  (session fixtures)
    AZ_ACCOUNT,
    AZ_KEY,
    S3_CREDS,
    azurite_server,
    free_port,
    moto_server,
    new_bucket,
    new_container,
)
from jobs.models import Status
from jobs.restore import request_restore
from security import master_key
from tests.backups.conftest import World, aside, needs_e2fsprogs, run, same_bytes
from tests.catalog_loss import inventory_of, reregister
from vaults.models import ItemState, RecoveryPoint, StorageTarget, Vault

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]

# Each kind: the target's fields (credentials from these variables) and a fresh location.
TARGETS = {
    "s3": {
        "kind": "s3",
        "region": "us-east-1",
        "path_style": True,
        "credentials_env": {"access_key_id": "T_AT_S3_ID", "secret_access_key": "T_AT_S3_KEY"},
    },
    "azure": {
        "kind": "azure",
        "credentials_env": {"account_name": "T_AT_AZ_NAME", "account_key": "T_AT_AZ_KEY"},
    },
}


@pytest.fixture(params=["s3", "azure"])
def kind(request, monkeypatch):
    monkeypatch.setenv("T_AT_S3_ID", S3_CREDS["access_key_id"])
    monkeypatch.setenv("T_AT_S3_KEY", S3_CREDS["secret_access_key"])
    monkeypatch.setenv("T_AT_AZ_NAME", AZ_ACCOUNT)
    monkeypatch.setenv("T_AT_AZ_KEY", AZ_KEY)
    return request.param


@pytest.fixture
def endpoint(kind, request) -> str:
    server = "moto_server" if kind == "s3" else "azurite_server"
    return request.getfixturevalue(server).endpoint


def make_target(kind: str, endpoint: str, name: str = "cloud") -> StorageTarget:
    return StorageTarget.objects.create(name=name, endpoint=endpoint, **TARGETS[kind])


@pytest.fixture
def backed_up(tmp_path, kind, endpoint):
    """A vault whose store is in object storage, one backup in it; what an operator keeps."""
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    if kind == "s3":
        location = f"s3://{new_bucket(endpoint)}/vaults/{w.vault.name}"
    else:
        location = f"az://{new_container(endpoint)}/vaults/{w.vault.name}"
    w.vault.store_location = location
    w.vault.storage_target = make_target(kind, endpoint)
    w.vault.save()
    expected = aside(w.images[-1], "backed-up")
    backup = run(w.backup_now())
    assert backup.status == Status.COMPLETED, (backup.error_message, backup.warnings)
    rp = RecoveryPoint.objects.get()
    assert rp.in_vault_tier
    kept = {
        "location": location,
        "rp": rp.pk,
        "tags": rp.tags,
        "expires_at": rp.expires_at,
        "size": rp.size_bytes,
        **inventory_of(w.vm),
        "expected": expected,
    }
    # The server is lost: every catalog row goes, storage targets included.
    call_command("flush", interactive=False, verbosity=0)
    assert not Vault.objects.exists() and not StorageTarget.objects.exists()
    return kept


def test_attach_through_a_target_rebuilds_the_catalog_and_restores(
    backed_up, kind, endpoint, capsys
):
    admin, host = reregister(backed_up)
    target = make_target(kind, endpoint)
    call_command(
        "attach_vault", "prod", backed_up["location"], "--target", "cloud", "--as", "admin2"
    )
    assert "1 recovery point(s)" in capsys.readouterr().out
    vault = Vault.objects.get(name="prod")
    assert (vault.store_location, vault.storage_target) == (backed_up["location"], target)
    (rp,) = vault.recovery_points.all()
    assert rp.pk == backed_up["rp"] and rp.tags == backed_up["tags"]
    assert rp.expires_at == backed_up["expires_at"] and rp.size_bytes == backed_up["size"]
    assert (rp.in_vault_tier, rp.in_snapshot_tier) == (True, False)
    assert rp.protected_item.state == ItemState.PROTECTION_STOPPED
    event = vault.audit_events.get(action="vault.attach")
    assert event.after["storage_target"] == "cloud"

    # The vault tier is the object store: the restore reads it through the target.
    directory = Path(host.allowed_roots[1]) / "attached"
    directory.mkdir()
    job = request_restore(
        rp,
        by=admin,
        kind="restore_disks",
        tier="vault",
        target={"host": host.pk, "path": str(directory)},
    )
    job = run(job)
    assert job.status == Status.COMPLETED, job.error_message
    assert same_bytes(Path(job.result["targets"]["-1"]), backed_up["expected"])

    # The same store under another name would be two vaults sharing one store.
    with pytest.raises(CommandError, match="would share the store"):
        call_command(
            "attach_vault", "prod2", backed_up["location"], "--target", "cloud", "--as", "admin2"
        )


def test_a_wrong_master_key_is_refused_with_nothing_created(backed_up, kind, endpoint):
    reregister(backed_up)
    make_target(kind, endpoint)
    path = master_key.key_path()
    path.write_bytes(os.urandom(32))
    with pytest.raises(CommandError) as refused:
        call_command(
            "attach_vault", "prod", backed_up["location"], "--target", "cloud", "--as", "admin2"
        )
    assert str(refused.value).startswith("key: The installed master key (fingerprint ")
    assert "does not open the vault store at " + backed_up["location"] in str(refused.value)
    assert not Vault.objects.exists() and not RecoveryPoint.objects.exists()


def test_a_missing_or_wrong_target_is_refused_with_nothing_created(
    backed_up, kind, endpoint, monkeypatch
):
    reregister(backed_up)
    location = backed_up["location"]
    with pytest.raises(CommandError, match="storage_target: Choose the storage target that holds"):
        call_command("attach_vault", "prod", location, "--as", "admin2")
    with pytest.raises(CommandError, match="--target: no storage target named cloud"):
        call_command("attach_vault", "prod", location, "--target", "cloud", "--as", "admin2")
    other = "azure" if kind == "s3" else "s3"
    make_target(other, endpoint, name="other-kind")
    with pytest.raises(CommandError, match="storage_target: Storage target other-kind is "):
        call_command("attach_vault", "prod", location, "--target", "other-kind", "--as", "admin2")
    # The right target whose credentials this process cannot read names the variable.
    make_target(kind, endpoint)
    variable = next(iter(TARGETS[kind]["credentials_env"].values()))
    monkeypatch.delenv(variable)
    with pytest.raises(CommandError, match=variable):
        call_command("attach_vault", "prod", location, "--target", "cloud", "--as", "admin2")
    # A bucket or container with no store in it.
    monkeypatch.setenv(variable, S3_CREDS["access_key_id"] if kind == "s3" else AZ_ACCOUNT)
    empty = location.rsplit("/", 1)[0] + "/nothing-here"
    with pytest.raises(CommandError, match="location: No vault store at "):
        call_command("attach_vault", "prod", empty, "--target", "cloud", "--as", "admin2")
    # A service that does not answer.
    path = endpoint.split("//", 1)[1].partition("/")[2]
    dead = f"http://127.0.0.1:{free_port()}" + (f"/{path}" if path else "")
    make_target(kind, dead, name="dead")
    with pytest.raises(CommandError, match="location: The vault store at .* cannot be read: "):
        call_command("attach_vault", "prod", location, "--target", "dead", "--as", "admin2")
    assert not Vault.objects.exists() and not RecoveryPoint.objects.exists()


def test_the_attach_page_takes_a_target(backed_up, kind, endpoint, client):
    admin, _ = reregister(backed_up)
    make_target(kind, endpoint)
    client.force_login(admin)
    page = client.get(reverse("vault-attach")).content.decode()
    assert 'name="storage_target"' in page and '<option value="cloud">' in page
    r = client.post(reverse("vault-attach"), {"name": "prod", "location": backed_up["location"]})
    assert r.status_code == 200 and "Choose the storage target that holds" in r.content.decode()
    assert not Vault.objects.exists()
    r = client.post(
        reverse("vault-attach"),
        {"name": "prod", "location": backed_up["location"], "storage_target": "cloud"},
    )
    assert r.status_code == 302 and r["Location"] == reverse("vault-detail", args=["prod"])
    page = client.get(reverse("item-detail", args=["prod", backed_up["vm"]])).content.decode()
    assert "Protection stopped" in page and f"rp-{backed_up['rp']}" in page
