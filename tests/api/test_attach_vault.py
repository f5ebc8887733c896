"""A catalog rebuilt from the store: back up, drop the database, attach, restore byte-identical;
a master key that does not open the store is refused with a clear error, creating nothing."""

import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

import engine
from jobs.models import Status
from security import master_key
from tests import factories as f
from tests.api.conftest import needs_mkfs, same_bytes
from tests.catalog_loss import inventory_of, reregister
from vaults.models import ItemState, RecoveryPoint, RetentionMode, Vault

pytestmark = [needs_mkfs, pytest.mark.django_db(transaction=True)]


def _lose_the_server(item) -> dict:
    """Everything an operator re-registers (hosts, VMs) kept aside; then the database dropped."""
    kept = {"location": item.vault.vault_location, **inventory_of(item.vm)}
    call_command("flush", interactive=False, verbosity=0)
    assert not Vault.objects.exists() and not RecoveryPoint.objects.exists()
    return kept


def test_attach_rebuilds_the_catalog_and_restores_work(
    backed_up, real_disks, item, api, run_job, capsys
):
    before = RecoveryPoint.objects.get(pk=backed_up.pk)
    assert before.in_vault_tier
    kept = _lose_the_server(item)
    admin, host = reregister(kept)
    call_command("attach_vault", "prod", kept["location"], "--as", "admin2")
    assert "1 recovery point(s)" in capsys.readouterr().out
    vault = Vault.objects.get(name="prod")
    (back,) = vault.recovery_points.all()
    assert back.pk == before.pk
    assert back.tags == before.tags and back.expires_at == before.expires_at
    assert back.slot == before.slot and back.consistency == before.consistency
    assert (back.in_vault_tier, back.in_snapshot_tier) == (True, False)
    assert back.size_bytes == before.size_bytes
    restored_item = back.protected_item
    assert restored_item.state == ItemState.PROTECTION_STOPPED
    assert restored_item.retention_mode == RetentionMode.RETAIN_FOREVER
    # A restore from the attached vault gives the original disks back, byte for byte.
    target = Path(host.allowed_roots[1])
    for leftover in target.iterdir():
        leftover.unlink()
    r = api(admin).post(
        reverse("api-recovery-point-restore", args=["prod", kept["vm"], back.pk]),
        {
            "kind": "restore_disks",
            "tier": "vault",
            "target": {"host": host.pk, "path": str(target)},
        },
    )
    assert r.status_code == 202, r.data
    job = run_job(r.data["id"])
    assert job.status == Status.COMPLETED, (job.error_code, job.error_message)
    for lun, path in job.params["files"].items():
        assert same_bytes(path, real_disks[int(lun)]), lun
    # Attaching twice is refused by name.
    with pytest.raises(CommandError, match="name: A vault named prod exists already"):
        call_command("attach_vault", "prod", kept["location"], "--as", "admin2")


def test_a_wrong_master_key_is_refused_clearly(backed_up, item):
    kept = _lose_the_server(item)
    reregister(kept)
    # The fresh install got a new master key instead of the exported one.
    path = master_key.key_path()
    path.write_bytes(os.urandom(32))
    with pytest.raises(CommandError) as refused:
        call_command("attach_vault", "prod", kept["location"], "--as", "admin2")
    message = str(refused.value)
    assert message.startswith("key: The installed master key (fingerprint ")
    assert "does not open the vault store at" in message
    assert engine.kek_fingerprint(path.read_bytes()) in message
    assert not Vault.objects.exists() and not RecoveryPoint.objects.exists()


def test_missing_vms_are_named(backed_up, item):
    kept = _lose_the_server(item)
    f.make_user("admin2", superuser=True)
    with pytest.raises(
        CommandError, match=f"Register these VMs in the inventory first: {kept['vm']}"
    ):
        call_command("attach_vault", "prod", kept["location"], "--as", "admin2")
    assert not Vault.objects.exists()


def test_the_site_admin_page_attaches(backed_up, item, client):
    kept = _lose_the_server(item)
    admin, _ = reregister(kept)
    client.force_login(admin)
    assert b"Attach a vault store" in client.get(reverse("vault-list")).content
    r = client.post(reverse("vault-attach"), {"name": "prod", "location": "/nowhere"})
    assert r.status_code == 200 and b"No vault store at /nowhere" in r.content
    r = client.post(reverse("vault-attach"), {"name": "prod", "location": kept["location"]})
    assert r.status_code == 302 and r["Location"] == reverse("vault-detail", args=["prod"])
    page = client.get(reverse("item-detail", args=["prod", kept["vm"]])).content.decode()
    assert "Protection stopped" in page and f"rp-{backed_up.pk}" in page
