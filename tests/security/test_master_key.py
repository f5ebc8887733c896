"""The platform master key: created once at installation, never on demand.

A missing master key file, or one that holds another key, fails every use of the key as
`key_unavailable` with a Sev-0 alert and writes nothing; putting the right file back heals.
"""

import base64
import os
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

import engine
from engine.keys import kek_fingerprint
from jobs.restore import request_restore
from security.models import Alert, MasterKey
from tests.backups.conftest import World, needs_e2fsprogs, run
from vaults import file_recovery, stores

pytestmark = pytest.mark.django_db


def files_under(*roots: Path) -> set[Path]:
    return {p for root in roots if root.exists() for p in root.rglob("*")}


@needs_e2fsprogs
@pytest.mark.django_db(transaction=True)
def test_a_missing_master_key_is_never_recreated(
    tmp_path, mailoutbox, django_capture_on_commit_callbacks
):
    key = Path(settings.LIFEBOAT["MASTER_KEY_FILE"])
    first = World(tmp_path / "a", power_state="stopped")
    assert run(first.backup_now()).status == "completed"
    rp = first.item.recovery_points.get()

    # The master key file goes away; then a new vault protects its first VM.
    hidden = key.with_name("master.key.away")
    key.rename(hidden)
    second = World(tmp_path / "b", power_state="stopped")
    roots = (Path(settings.LIFEBOAT["VAULT_STORE_ROOT"]), Path(second.host.snapshot_root))
    before = files_under(*roots)
    with django_capture_on_commit_callbacks(execute=True):
        failed = run(second.backup_now())
    assert failed.status == "failed" and failed.error_code == "key_unavailable"
    assert "master key" in failed.error_message and str(key) in failed.error_message
    # Nothing was written: no store, no chunk, no manifest, and no new key file.
    assert files_under(*roots) == before
    assert not second.vault.store_path.exists() and not key.exists()
    alert = Alert.objects.get(kind="key_unavailable", vault=second.vault, status="active")
    assert alert.severity == "sev0" and "master key" in alert.message
    assert any("Encryption key unavailable" in m.subject for m in mailoutbox)

    # Every other use of the key fails the same way, with the vault's Sev-0 alert.
    with pytest.raises(ValidationError, match="master key"):
        file_recovery.open_session(rp, by=first.admin)
    with pytest.raises(ValidationError, match="master key"):
        request_restore(
            rp,
            by=first.admin,
            kind="restore_disks",
            target={"host": first.host.pk, "path": first.host.allowed_roots[1]},
        )
    assert run(first.backup_now()).error_code == "key_unavailable"
    assert Alert.objects.get(kind="key_unavailable", vault=first.vault).severity == "sev0"
    assert not key.exists()

    # Putting the file back heals: the new vault's backup works and its alert resolves.
    hidden.rename(key)
    assert run(second.backup_now()).status == "completed"
    assert Alert.objects.get(kind="key_unavailable", vault=second.vault).status == "resolved"
    assert run(first.backup_now()).status == "completed"


@needs_e2fsprogs
@pytest.mark.django_db(transaction=True)
def test_another_key_in_the_master_key_file_is_named_as_such(tmp_path):
    key = Path(settings.LIFEBOAT["MASTER_KEY_FILE"])
    first = World(tmp_path / "a", power_state="stopped")
    assert run(first.backup_now()).status == "completed"
    right = kek_fingerprint(engine.platform_kek(key))

    key.rename(key.with_name("master.key.right"))
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    wrong = kek_fingerprint(engine.platform_kek(key))
    second = World(tmp_path / "b", power_state="stopped")
    for world in (first, second):
        failed = run(world.backup_now())
        assert failed.status == "failed" and failed.error_code == "key_unavailable"
        assert f"master key fingerprint {wrong} does not match {right}" in failed.error_message
    assert not second.vault.store_path.exists()
    assert Alert.objects.get(kind="key_unavailable", vault=second.vault).severity == "sev0"


# -- installation: created once, checked afterwards, printable for safekeeping -------------------


@pytest.fixture
def fresh_key(settings, tmp_path) -> Path:
    """A master key path where no key was ever installed."""
    path = tmp_path / "fresh" / "master.key"
    settings.LIFEBOAT = {**settings.LIFEBOAT, "MASTER_KEY_FILE": path}
    return path


def command(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def test_the_key_is_created_at_installation_and_never_again(fresh_key):
    assert "Master key created" in command("master_key", "create")
    key = fresh_key.read_bytes()
    assert stat.S_IMODE(fresh_key.stat().st_mode) == 0o600
    fingerprint = kek_fingerprint(key)
    assert MasterKey.objects.get().fingerprint == fingerprint
    assert fingerprint in command("master_key", "create")  # a check, not a new key
    assert fresh_key.read_bytes() == key

    hidden = fresh_key.with_name("away")
    fresh_key.rename(hidden)
    with pytest.raises(CommandError, match=f"missing.*fingerprint {fingerprint}"):
        command("master_key", "create")
    out = command("bootstrap", "--no-demo")  # what `make run` runs on every start
    assert "master key is unavailable" in out and "never recreated" in out
    assert not fresh_key.exists()
    with pytest.raises(CommandError, match="missing"):
        command("master_key", "fingerprint")

    fresh_key.write_bytes(os.urandom(32))  # another key is refused the same way
    with pytest.raises(CommandError, match=f"does not match {fingerprint}"):
        command("master_key", "create")
    with pytest.raises(CommandError, match=f"does not match {fingerprint}"):
        command("master_key", "export")
    hidden.replace(fresh_key)
    assert command("master_key", "fingerprint").strip() == fingerprint


def test_the_exported_key_puts_the_file_back(fresh_key):
    command("master_key", "create")
    key = fresh_key.read_bytes()
    out = command("master_key", "export")
    lines = dict(line.split(": ", 1) for line in out.splitlines() if not line.startswith("#"))
    assert lines["fingerprint"] == kek_fingerprint(key)
    assert base64.b64decode(lines["base64"]) == key and bytes.fromhex(lines["hex"]) == key
    fresh_key.unlink()
    fresh_key.write_text(lines["base64"] + "\n")
    assert command("master_key", "fingerprint").strip() == kek_fingerprint(key)


def test_bootstrap_creates_the_key_on_the_first_start(fresh_key):
    out = command("bootstrap", "--no-demo")
    assert f"Master key created: {fresh_key}" in out
    assert MasterKey.objects.get().fingerprint == kek_fingerprint(fresh_key.read_bytes())
    assert "Master key created" not in command("bootstrap", "--no-demo")


def test_a_key_that_was_there_before_fingerprints_were_recorded_is_adopted(fresh_key):
    engine.create_platform_kek(fresh_key)
    assert not MasterKey.objects.exists()
    assert kek_fingerprint(fresh_key.read_bytes()) in command("master_key", "create")
    assert MasterKey.objects.get().fingerprint == kek_fingerprint(fresh_key.read_bytes())


def test_no_key_is_created_for_an_install_whose_vaults_hold_data(fresh_key, rp):
    with pytest.raises(CommandError, match="vault\\(s\\) prod"):
        command("master_key", "create")
    assert not fresh_key.exists() and not MasterKey.objects.exists()


def test_nothing_creates_the_key_on_demand(fresh_key, vault, host):
    with pytest.raises(engine.KeyUnavailable, match="master_key create"):
        stores.open_or_create_vault_store(vault)
    assert not fresh_key.exists() and not vault.store_path.exists()
    alert = Alert.objects.get(kind="key_unavailable", vault=vault)
    assert alert.severity == "sev0"
