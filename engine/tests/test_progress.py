"""Progress says how far each disk is, in backups and transfers alike, and a transfer counts
the bytes its destination already held (what deduplication saved)."""

from __future__ import annotations

import os
from pathlib import Path

from engine import BackupRequest, DiskSource, Progress, backup, init_store, transfer

MIB = 1 << 20


def _disk(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _luns(calls: list[Progress]) -> dict[int, list[tuple[int, int]]]:
    seen: dict[int, list[tuple[int, int]]] = {}
    for p in calls:
        for lun, done, total in p.disks:
            seen.setdefault(lun, []).append((done, total))
    return seen


def test_backup_and_transfer_report_every_disk_and_the_bytes_the_vault_had(
    tmp_path: Path, kek: bytes
) -> None:
    vault = init_store(tmp_path / "vault", kek)
    snap = init_store(tmp_path / "snap", kek, codec="none", keys_from=vault.path)
    shared = os.urandom(4 * MIB)
    a = _disk(tmp_path / "a.img", shared + os.urandom(2 * MIB))
    b = _disk(tmp_path / "b.img", os.urandom(3 * MIB))

    calls: list[Progress] = []
    rp = backup(
        BackupRequest(snap, [DiskSource(-1, a), DiskSource(0, b)], vm_name="vm"),
        progress=calls.append,
    ).rp_id
    luns = _luns(calls)
    assert sorted(luns) == [-1, 0]
    assert luns[-1][-1] == (6 * MIB, 6 * MIB) and luns[0][-1] == (3 * MIB, 3 * MIB)
    for series in luns.values():  # each disk only moves forward
        assert [d for d, _ in series] == sorted(d for d, _ in series)

    calls.clear()
    first = transfer(snap, vault, rp, progress=calls.append)
    assert first.bytes_present == 0 and first.chunks_copied > 0
    final = _luns(calls)
    assert {lun: s[-1][0] == s[-1][1] for lun, s in final.items()} == {-1: True, 0: True}

    # A second VM holding the first disk's opening bytes: the vault needs none of them.
    c = _disk(tmp_path / "c.img", shared)
    rp2 = backup(BackupRequest(snap, [DiskSource(-1, c)], vm_name="other")).rp_id
    second = transfer(snap, vault, rp2)
    assert second.bytes_present == 4 * MIB and second.chunks_copied == 0
