"""Bit rot and tampering: verify and scrub name the damage; restore never writes wrong data."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import (
    BackupRequest,
    CorruptionError,
    DiskSource,
    Store,
    backup,
    open_disk,
    restore,
    scrub,
    verify,
)
from engine.store import chunk_key, index_key, manifest_key
from engine.tests.tools import flip_object, object_size, run_engine


def _two_rps(store: Store, tmp_path: Path) -> tuple[Path, str, str]:
    disk = tmp_path / "d.img"
    with open(disk, "wb") as f:
        f.write(os.urandom(4 << 20))
        f.truncate(8 << 20)
    a = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm")).rp_id
    b = backup(BackupRequest(store, [DiskSource(1, str(disk))], vm_name="vm2")).rp_id
    return disk, a, b


@pytest.mark.parametrize("where", ["header", "middle", "tail"])
def test_flipped_chunk_byte_is_named_and_restore_refuses(
    tmp_path: Path, store: Store, key_file: Path, where: str
) -> None:
    disk, a, b = _two_rps(store, tmp_path)
    idx = store.load_index(a, store.read_manifest(a)["disks"][0])
    victim = idx.digest(5)  # the chunk at offset 5 * 256 KiB
    key = chunk_key(victim)
    size = object_size(store, key)
    flip_object(store, key, {"header": 5, "middle": size // 2, "tail": size - 1}[where])

    rep = verify(store)
    assert not rep.ok
    places = {(d.rp_id, d.lun, d.offset) for d in rep.damage}
    assert places == {(a, 0, 5 * (256 << 10)), (b, 1, 5 * (256 << 10))}
    assert all(d.chunk_id == victim.hex() for d in rep.damage)
    keyless = scrub(store)
    assert {(d.rp_id, d.lun, d.offset) for d in keyless.damage} == places
    assert not verify(store, [a]).ok and len(verify(store, [a]).damage) == 1

    # restore fails loudly and leaves neither a partial file nor a changed target
    target = tmp_path / "restored.img"
    with pytest.raises(CorruptionError) as ei:
        restore(store, a, {0: target})
    assert ei.value.details[0].offset == 5 * (256 << 10)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if "lifeboat-restore" in p.name]
    target.write_bytes(b"precious old content")
    with pytest.raises(CorruptionError):
        restore(store, a, {0: target})
    assert target.read_bytes() == b"precious old content"

    # the reader refuses the damaged chunk but serves the others
    with open_disk(store, a, 0) as rd:
        assert rd.read_at(0, 100) == disk.read_bytes()[:100]
        with pytest.raises(CorruptionError):
            rd.read_at(5 * (256 << 10), 10)

    # CLI: verify exits 1 and prints the damage, keyed and keyless
    loc = store.location
    r = run_engine("verify", loc, key_file=key_file, check=False, store=store)
    assert r.returncode == 1 and a in r.stdout and "offset=1310720" in r.stdout
    r = run_engine("verify", "--keyless", loc, check=False, store=store)
    assert r.returncode == 1 and b in r.stdout
    r = run_engine(
        "restore", loc, a, "--disk", f"0={target}", key_file=key_file, check=False, store=store
    )
    assert r.returncode == 1 and "offset 1310720" in r.stderr
    assert target.read_bytes() == b"precious old content"


def test_missing_chunk_is_named(tmp_path: Path, store: Store) -> None:
    _disk, a, _b = _two_rps(store, tmp_path)
    idx = store.load_index(a, store.read_manifest(a)["disks"][0])
    store.backend.delete(chunk_key(idx.digest(0)))
    rep = verify(store, [a])
    assert [(d.lun, d.offset, d.reason) for d in rep.damage] == [(0, 0, "missing")]
    assert [(d.offset, d.reason) for d in scrub(store).damage if d.rp_id == a] == [(0, "missing")]


def test_flipped_index_byte(tmp_path: Path, store: Store) -> None:
    _disk, a, b = _two_rps(store, tmp_path)
    flip_object(store, index_key(a, 0), 100)
    for rep in (verify(store), scrub(store)):
        assert [(d.rp_id, d.lun, d.kind) for d in rep.damage] == [(a, 0, "index")]
    target = tmp_path / "t.img"
    with pytest.raises(CorruptionError):
        restore(store, a, {0: target})
    assert not target.exists()
    restore(store, b, {1: target})  # the other RP is unaffected


def test_flipped_manifest_byte(tmp_path: Path, store: Store) -> None:
    _disk, a, _b = _two_rps(store, tmp_path)
    key = manifest_key(a)
    text = store.backend.get(key)
    pos = text.index(b'"vm_name"') + len(b'"vm_name": "')
    flip_object(store, key, pos)  # "vm" -> "wm": still valid JSON, detected by checksum and MAC
    for rep in (verify(store), scrub(store)):
        assert [(d.rp_id, d.kind) for d in rep.damage] == [(a, "manifest")]
    target = tmp_path / "t.img"
    with pytest.raises(CorruptionError):
        restore(store, a, {0: target})
    assert not target.exists()
    flip_object(store, key, 0)  # now not even JSON
    assert [(d.rp_id, d.kind) for d in verify(store).damage] == [(a, "manifest")]


def test_tampered_manifest_with_recomputed_checksum_fails_mac(tmp_path: Path, store: Store) -> None:
    import json

    import blake3

    from engine.formats import canonical

    _disk, a, _b = _two_rps(store, tmp_path)
    key = manifest_key(a)
    doc = json.loads(store.backend.get(key))
    doc["body"]["vm_name"] = "evil"
    doc["blake3"] = blake3.blake3(canonical(doc["body"])).hexdigest()
    store.backend.put(key, json.dumps(doc).encode())
    assert scrub(store).ok  # keyless cannot see deliberate tampering...
    assert [(d.rp_id, d.reason) for d in verify(store).damage] == [(a, "authentication failed")]


def test_transfer_refuses_to_copy_damaged_chunks(
    tmp_path: Path, store: Store, make_store: Callable[..., Store]
) -> None:
    from engine import transfer

    _disk, a, _b = _two_rps(store, tmp_path)
    idx = store.load_index(a, store.read_manifest(a)["disks"][0])
    flip_object(store, chunk_key(idx.digest(3)), 40)
    dst = make_store("dst", keys_from=store)
    with pytest.raises(CorruptionError) as ei:
        transfer(store, dst, a)
    assert ei.value.details[0].offset == 3 * (256 << 10)
    assert dst.list_rp_ids() == []
    assert not dst.has_chunk(idx.digest(3))
    assert store.keys_doc() == dst.keys_doc()
