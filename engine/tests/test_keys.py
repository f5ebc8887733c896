"""Keys: wrong/missing key errors, rotation, snapshot tier sharing the vault's keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import (
    BackupRequest,
    DiskSource,
    KeyMismatch,
    KeyUnavailable,
    StoreExists,
    StoreNotFound,
    WrongKey,
    backup,
    init_store,
    kek_fingerprint,
    list_recovery_points,
    open_store,
    restore,
    rewrap_keys,
    transfer,
    verify,
)
from engine.tests.tools import run_engine, same_bytes


def _disk(tmp_path: Path) -> Path:
    p = tmp_path / "d.img"
    p.write_bytes(os.urandom(1 << 20) + bytes(1 << 20) + b"end")
    return p


def test_wrong_or_missing_key_fails_specifically_and_writes_nothing(
    tmp_path: Path, kek: bytes, key_file: Path
) -> None:
    store = init_store(tmp_path / "vault", kek)
    disk = _disk(tmp_path)
    rp = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm")).rp_id
    with pytest.raises(WrongKey):
        open_store(store.path, os.urandom(32))
    with pytest.raises(KeyUnavailable):
        open_store(store.path, b"short")
    with pytest.raises(StoreNotFound):
        open_store(tmp_path / "nowhere", kek)
    with pytest.raises(StoreExists):
        init_store(store.path, kek)

    wrong = tmp_path / "wrong.key"
    wrong.write_text(os.urandom(32).hex())
    target = tmp_path / "out.img"
    before = sorted(p.name for p in store.path.rglob("*"))
    r = run_engine(
        "restore", str(store.path), rp, "--disk", f"0={target}", key_file=wrong, check=False
    )
    assert r.returncode == 3 and "WrongKey" in r.stderr
    r = run_engine(
        "backup", str(store.path), "--vm", "x", "--disk", f"0={disk}", key_file=wrong, check=False
    )
    assert r.returncode == 3 and "WrongKey" in r.stderr
    r = run_engine("ls", str(store.path), key_file=tmp_path / "absent.key", check=False)
    assert r.returncode == 3 and "KeyUnavailable" in r.stderr
    assert not target.exists()
    assert sorted(p.name for p in store.path.rglob("*")) == before


def test_rotation_keeps_every_rp_readable_in_both_tiers(tmp_path: Path, kek: bytes) -> None:
    vault = init_store(tmp_path / "vault", kek, codec="zstd:3")
    snap = init_store(tmp_path / "snap", kek, codec="none", keys_from=vault.path)
    assert snap.require_keys() == vault.require_keys()
    disk = _disk(tmp_path)
    r1 = backup(BackupRequest(snap, [DiskSource(0, str(disk))], vm_name="vm")).rp_id
    transfer(snap, vault, r1)
    with open(disk, "r+b") as f:
        f.write(b"changed")
    r2 = backup(BackupRequest(vault, [DiskSource(0, str(disk))], vm_name="vm", parent=r1)).rp_id
    # the snapshot tier's chunk ids equal the vault's: the second transfer copies nothing new
    assert transfer(vault, snap, r2).chunks_copied == 1

    new = os.urandom(32)
    for s in (vault, snap):
        rewrap_keys(s.path, kek, new)
    for path in (vault.path, snap.path):
        with pytest.raises(WrongKey):
            open_store(path, kek)
        reopened = open_store(path, new)
        assert verify(reopened).ok
        assert {rp.rp_id for rp in list_recovery_points(reopened)} == {r1, r2}
        out = tmp_path / f"out-{path.name}.img"
        restore(reopened, r2, {0: out})
        assert same_bytes(disk, out)
    with pytest.raises(WrongKey):
        rewrap_keys(vault.path, kek, os.urandom(32))


def test_stores_with_different_keys_cannot_transfer(tmp_path: Path, kek: bytes) -> None:
    a = init_store(tmp_path / "a", kek)
    b = init_store(tmp_path / "b", kek)
    rp = backup(BackupRequest(a, [DiskSource(0, str(_disk(tmp_path)))], vm_name="vm")).rp_id
    with pytest.raises(KeyMismatch):
        transfer(a, b, rp)
    with pytest.raises(WrongKey):
        init_store(tmp_path / "c", os.urandom(32), keys_from=a.path)


def test_cli_uses_platform_master_key_by_default(tmp_path: Path) -> None:
    env_key = tmp_path / "keys" / "platform.key"
    os.environ["LIFEBOAT_MASTER_KEY_FILE"] = str(env_key)
    try:
        r = run_engine("init", str(tmp_path / "s"), check=False)
        assert r.returncode == 3 and "is missing" in r.stderr  # never created implicitly
        assert not env_key.exists() and not (tmp_path / "s").exists()
        created = run_engine("create-key").stdout
        assert env_key.stat().st_mode & 0o777 == 0o600
        assert kek_fingerprint(env_key.read_bytes()) in created
        r = run_engine("create-key", check=False)
        assert r.returncode == 3 and "never replaced" in r.stderr
        run_engine("init", str(tmp_path / "s"))
        disk = _disk(tmp_path)
        rp = run_engine("-q", "backup", str(tmp_path / "s"), "--vm", "vm", "--disk", f"0={disk}")
        rp_id = rp.stdout.strip()
        run_engine("-q", "restore", str(tmp_path / "s"), rp_id, "--disk", f"0={tmp_path / 'o.img'}")
        assert same_bytes(disk, tmp_path / "o.img")
    finally:
        del os.environ["LIFEBOAT_MASTER_KEY_FILE"]
