"""The vault overview's storage figures: `engine.stats` on hand-made and real stores, and the
cached Django-side wrapper."""

import struct
from pathlib import Path

import pytest
from django.core.cache import cache

from engine.stats import INDEX_HEADER, store_stats
from jobs import runner
from jobs.backup_queue import backup_now
from vaults.storage import vault_storage

MIB = 1 << 20


def _index(size: int, shift: int, ids: list[bytes]) -> bytes:
    head = INDEX_HEADER.pack(b"LBINDEX\x00", 1, 0, shift, 32, size, len(ids))
    return head + b"".join(ids) + bytes(32)


def _store(
    root: Path, rps: dict[str, list[tuple[int, int, list[bytes]]]], chunks: dict[bytes, int]
):
    (root / "manifests").mkdir(parents=True)
    (root / "store.json").write_text("{}")
    for rp, disks in rps.items():
        (root / "manifests" / f"{rp}.json").write_text("{}")
        (root / "indexes" / rp).mkdir(parents=True)
        for lun, size, ids in disks:
            (root / "indexes" / rp / f"{lun}.idx").write_bytes(_index(size, 20, ids))
    for cid, nbytes in chunks.items():
        d = root / "chunks" / cid.hex()[:2]
        d.mkdir(parents=True, exist_ok=True)
        (d / cid.hex()).write_bytes(b"x" * nbytes)
    return root


def cid(n: int) -> bytes:
    return bytes([n]) * 32


def test_store_stats_counts_unique_referenced_and_garbage(tmp_path):
    zero = bytes(32)
    # Disk of 2.5 MiB: chunks of 1 MiB, 1 MiB (all zero, not stored) and a short 0.5 MiB.
    size = 2 * MIB + MIB // 2
    root = _store(
        tmp_path / "store",
        {
            "rp-a": [(-1, size, [cid(1), zero, cid(2)])],
            "rp-b": [(-1, size, [cid(1), zero, cid(3)]), (0, MIB, [cid(1)])],
        },
        {cid(1): 1000, cid(2): 400, cid(3): 600, cid(9): 50},  # 9 is referenced by nothing
    )
    # An unfinished write and an index directory without a manifest are not counted.
    (root / "chunks" / "01" / ".tmp-123").write_bytes(b"y" * 999)
    (root / "indexes" / "rp-gone").mkdir()
    (root / "indexes" / "rp-gone" / "-1.idx").write_bytes(_index(MIB, 20, [cid(4)]))

    s = store_stats(root)
    assert s.exists and s.recovery_points == 2 and s.disks == 3
    assert (s.chunks, s.stored_bytes) == (4, 2050)
    assert s.logical_bytes == 2 * size + MIB
    assert s.unique_chunks == 3
    assert s.unique_bytes == MIB + MIB // 2 + MIB // 2
    assert s.referenced_chunks == 5
    assert s.referenced_bytes == 3 * MIB + 2 * (MIB // 2)
    assert (s.garbage_chunks, s.garbage_bytes, s.missing_chunks) == (1, 50, 0)
    assert s.live_stored_bytes == 2000
    assert s.dedup_ratio == pytest.approx(4 / 2)
    assert s.compression_ratio == pytest.approx(2 * MIB / 2000)


def test_store_stats_of_a_missing_store_is_empty(tmp_path):
    s = store_stats(tmp_path / "nothing")
    assert not s.exists and s.dedup_ratio is None and s.compression_ratio is None


def test_a_damaged_index_is_reported_not_raised(tmp_path):
    root = _store(tmp_path / "store", {"rp-a": [(-1, MIB, [cid(1)])]}, {cid(1): 10})
    (root / "indexes" / "rp-a" / "-1.idx").write_bytes(b"LBINDEX\x00" + struct.pack("<H", 9))
    s = store_stats(root)
    assert s.unreadable == ("indexes/rp-a/-1.idx",)
    assert s.garbage_chunks == 1


def _chunk_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "chunks").rglob("*") if p.is_file())


@pytest.mark.django_db(transaction=True)
def test_overview_shows_logical_stored_dedup_and_compression(
    login, reader, admin_user, vault, real_rp
):
    rp, _, image = real_rp
    # The same disk again: every chunk is already stored, so the data doubles and dedup is 2×.
    job = backup_now(rp.protected_item, by=admin_user)
    runner.run_job(job.pk)
    cache.clear()
    response = login(reader).get("/vaults/prod/")
    storage = response.context["storage"]
    assert storage.logical_bytes == 2 * image.stat().st_size
    vault_tier, snapshot_tier = storage.tiers
    assert vault_tier.stats.recovery_points == snapshot_tier.stats.recovery_points == 2
    assert vault_tier.stats.stored_bytes == _chunk_bytes(vault.store_path)
    assert storage.stored_bytes == vault_tier.stats.stored_bytes + snapshot_tier.stats.stored_bytes
    assert storage.dedup_ratio == pytest.approx(2.0)
    # zstd in the vault tier shrinks the text files; the snapshot tier stores chunks raw.
    assert storage.compression_ratio > 1.2
    assert snapshot_tier.stats.compression_ratio < 1.0
    html = response.content.decode()
    assert 'id="storage-dedup">2.00×' in html
    assert "Snapshot tier on host1" in html


@pytest.mark.django_db(transaction=True)
def test_store_figures_are_cached_for_a_minute(vault, real_rp):
    cache.clear()
    first = vault_storage(vault)
    extra = vault.store_path / "chunks" / "ff" / ("ff" * 32)
    extra.parent.mkdir(exist_ok=True)
    extra.write_bytes(b"z" * 4096)
    assert vault_storage(vault).stored_bytes == first.stored_bytes
    cache.clear()
    assert vault_storage(vault).stored_bytes == first.stored_bytes + 4096


def test_an_empty_vault_shows_dashes(login, reader, vault):
    cache.clear()
    html = login(reader).get("/vaults/prod/").content.decode()
    assert 'id="storage-dedup">—' in html
    assert "Nothing stored yet." in html
