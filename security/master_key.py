"""The platform master key: the key-encryption key of every vault without a customer-managed key.

It is created once, at installation (`manage.py bootstrap`, which `make run` runs, or
`manage.py master_key create`), never on demand: a new key would not open the stores the lost
one wraps, and whatever it wrapped meanwhile would be lost in turn once the original came back.
The database records the installed key's fingerprint, so afterwards a missing file, or a file
holding another key, is `engine.KeyUnavailable` (`WrongKey`) for every use of the key: backups,
transfers, restores, file recovery, garbage collection and the stores of a new vault. Jobs
report it as `key_unavailable`, and each vault that tries announces it
(`security.signals.key_unavailable`, on which `security.alerts` raises a Sev-0 alert). Putting
the right file back heals.

Besides the database, the key file is what an operator must back up:
`manage.py master_key export` prints it.
"""

import base64
import logging
import os
from pathlib import Path

from django.conf import settings

import engine
from portal.private import make_private
from security import signals
from security.models import MasterKey
from vaults.models import Encryption, RecoveryPoint, Vault

log = logging.getLogger(__name__)


def key_path() -> Path:
    return Path(str(settings.LIFEBOAT["MASTER_KEY_FILE"]))


def recorded_fingerprint() -> str | None:
    return MasterKey.objects.values_list("fingerprint", flat=True).first()


def _record(fingerprint: str) -> str:
    """Record the installed key's fingerprint unless one is; the recorded fingerprint."""
    row, _ = MasterKey.objects.get_or_create(pk=1, defaults={"fingerprint": fingerprint})
    return row.fingerprint


def kek() -> bytes:
    """The installed master key, or KeyUnavailable saying what is wrong; never creates it.

    An installation made before fingerprints were recorded records its key at the first use.
    """
    path = key_path()
    try:
        key = engine.platform_kek(path)
    except engine.KeyUnavailable as e:
        want = recorded_fingerprint()
        if want is None:
            raise engine.KeyUnavailable(
                f"{e} (a new installation creates it with `manage.py master_key create`)"
            ) from e
        raise engine.KeyUnavailable(
            f"{e}; the master key installed here has fingerprint {want}: put that file back"
        ) from e
    have = engine.kek_fingerprint(key)
    want = _record(have)
    if have != want:
        raise engine.WrongKey(
            f"master key fingerprint {have} does not match {want}, the master key installed "
            f"here: {path} holds another key; put the original file back"
        )
    _keep_private(path)
    return key


def _keep_private(path: Path) -> None:
    """A key file put back by hand (from an export, say) has the umask's mode: make it 0600.

    A file the service does not own keeps the mode its owner chose, and a file that cannot be
    changed (a read-only mount) is still used: this is hygiene, not a condition of the key.
    """
    try:
        if path.stat().st_uid == os.geteuid():
            make_private(path, 0o600)
    except OSError as e:
        log.warning("master key file %s: cannot make it 0600: %s", path, e.strerror)


def vault_kek(vault: Vault) -> bytes:
    """The master key for one of its vaults; when it cannot be used, `key_unavailable` is
    announced for the vault (its Sev-0 alert) and KeyUnavailable raised."""
    try:
        return kek()
    except engine.KeyUnavailable as e:
        signals.key_unavailable.send(
            sender=Vault,
            vault=vault,
            message=f"The master key is unavailable: backups, restores and file recovery in "
            f"vault {vault.name} fail until it is back. {e}",
        )
        raise


def install() -> str:
    """Create the master key at installation, or check the installed one; a line saying which.

    A key is created only when none was ever installed and no vault depends on one; a missing
    or different file is never replaced (KeyUnavailable, WrongKey).
    """
    path = key_path()
    if path.exists() or recorded_fingerprint() is not None:
        return f"Master key {path}: fingerprint {engine.kek_fingerprint(kek())}."
    dependents = _platform_vaults_with_data()
    if dependents:
        raise engine.KeyUnavailable(
            f"master key file {path} is missing, and the data of vault(s) "
            f"{', '.join(dependents)} is wrapped by it: put the original file back (a new key "
            "would not open it)"
        )
    try:
        key = engine.create_platform_kek(path)
    except FileExistsError:  # created a moment ago by another process
        key = kek()
    fingerprint = _record(engine.kek_fingerprint(key))
    return (
        f"Master key created: {path} (fingerprint {fingerprint}). Back it up now, apart from "
        "the vault stores: `manage.py master_key export` prints it."
    )


def _platform_vaults_with_data() -> list[str]:
    platform = Vault.objects.filter(encryption=Encryption.PLATFORM).order_by("name")
    with_points = set(
        RecoveryPoint.objects.filter(vault__in=platform).values_list("vault__name", flat=True)
    )
    return [v.name for v in platform if v.name in with_points or _has_store(v.store_path)]


def _has_store(path: Path) -> bool:
    return (Path(path) / "keys.json").exists()


def export() -> dict[str, str]:
    """The installed key in printable forms, with its fingerprint (KeyUnavailable if it is not
    the installed one: that file is not the one to keep)."""
    key = kek()
    return {
        "path": str(key_path()),
        "fingerprint": engine.kek_fingerprint(key),
        "base64": base64.b64encode(key).decode(),
        "hex": key.hex(),
    }
