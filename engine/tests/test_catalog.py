"""The store is the source of truth: ls lists every RP with its manifest fields."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import (
    KEEP,
    BackupRequest,
    DiskSource,
    ParentMissing,
    RecoveryPointExists,
    RecoveryPointNotFound,
    Store,
    backup,
    delete_recovery_point,
    get_recovery_point,
    list_recovery_points,
    update_manifest_metadata,
)
from engine.tests.tools import run_engine


def test_ls_lists_every_rp_with_manifest_fields(
    tmp_path: Path, store: Store, key_file: Path
) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(600_000))
    until = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    preset = "11111111-2222-4333-8444-555555555555"
    a = backup(
        BackupRequest(
            store,
            [DiskSource(2, str(disk))],
            vm_name="web1",
            consistency="application",
            tags=["daily"],
            retain_until=until,
            labels={"job": "42", "policy": "gold"},
            rp_id=preset,
        )
    )
    assert a.rp_id == preset
    b = run_engine(
        "-q",
        "backup",
        store.location,
        "--vm",
        "web1",
        "--disk",
        f"2={disk}",
        "--parent",
        preset,
        "--tag",
        "weekly",
        "--label",
        "job=43",
        key_file=key_file,
        store=store,
    ).stdout.strip()
    out = run_engine("ls", "--json", store.location, key_file=key_file, store=store).stdout
    rows = {r["rp_id"]: r for r in json.loads(out)}
    assert set(rows) == {preset, b}
    ra, rb = rows[preset], rows[b]
    assert ra["vm_name"] == "web1" and ra["consistency"] == "application"
    assert ra["tags"] == ["daily"] and ra["labels"] == {"job": "42", "policy": "gold"}
    assert ra["retain_until"] == "2031-01-02T03:04:05Z" and ra["parent"] is None
    assert ra["disks"][0]["lun"] == 2 and ra["disks"][0]["size"] == 600_000
    assert ra["disks"][0]["change_detection"] == "full"
    assert rb["parent"] == preset and rb["tags"] == ["weekly"] and rb["labels"] == {"job": "43"}
    assert rb["disks"][0]["change_detection"] == "full-read"
    assert rb["created"] and rb["completed"]
    text = run_engine("ls", store.location, key_file=key_file, store=store).stdout
    assert preset in text and b in text and "#daily" in text and "policy=gold" in text

    with pytest.raises(RecoveryPointExists):
        backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="x", rp_id=preset))


def test_update_metadata_and_delete(tmp_path: Path, store: Store) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(300_000))
    rp = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", tags=["t"])).rp_id
    when = datetime(2030, 5, 1, tzinfo=UTC)
    upd = update_manifest_metadata(store, rp, retain_until=when, labels={"legal": "hold"})
    assert upd.retain_until == when and upd.tags == ["t"] and upd.labels == {"legal": "hold"}
    again = update_manifest_metadata(store, rp, retain_until=None, tags=["x", "y"], labels=KEEP)
    assert (
        again.retain_until is None
        and again.tags == ["x", "y"]
        and again.labels == {"legal": "hold"}
    )
    assert get_recovery_point(store, rp) == again
    child = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", parent=rp)).rp_id
    delete_recovery_point(store, rp)
    assert [r.rp_id for r in list_recovery_points(store)] == [child]
    with pytest.raises(RecoveryPointNotFound):
        delete_recovery_point(store, rp)
    with pytest.raises(ParentMissing):
        backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", parent=rp))
    with pytest.raises(RecoveryPointNotFound):
        get_recovery_point(store, "../../etc/passwd")
