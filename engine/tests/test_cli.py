"""The CLI end to end: init (both tiers), backup with progress, transfer, verify, gc, delete."""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.tests.tools import run_engine, same_bytes


def test_cli_workflow(tmp_path: Path, key_file: Path) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(3 << 20) + bytes(2 << 20))
    vault, snap = tmp_path / "vault", tmp_path / "snap"
    run_engine("init", str(vault), "--codec", "zstd:3", "--chunk-size", "256K", key_file=key_file)
    run_engine("init", str(snap), "--codec", "none", "--keys-from", str(vault), key_file=key_file)
    r = run_engine("backup", str(snap), "--vm", "vm1", "--disk", f"0={disk}", key_file=key_file)
    rp = r.stdout.strip()
    assert "backup" in r.stderr and "100.0%" in r.stderr  # plain-text progress on stderr
    r = run_engine("--json", "transfer", str(snap), str(vault), rp, "-q", key_file=key_file)
    assert json.loads(r.stdout)["chunks_copied"] == 3  # the snapshot store has 1 MiB chunks
    out = tmp_path / "o.img"
    run_engine("-q", "restore", str(vault), rp, "--disk", f"0={out}", key_file=key_file)
    assert same_bytes(disk, out)
    assert "OK" in run_engine("-q", "verify", str(vault), rp, key_file=key_file).stdout
    assert "OK" in run_engine("-q", "scrub", str(snap)).stdout
    run_engine("delete", str(snap), rp, key_file=key_file)
    r = run_engine("--json", "gc", str(snap), "--grace", "0", key_file=key_file)
    assert json.loads(r.stdout)["chunks_swept"] == 3
    assert json.loads(run_engine("--json", "ls", str(snap), key_file=key_file).stdout) == []
    r = run_engine("restore", str(snap), rp, "--disk", f"0={out}", key_file=key_file, check=False)
    assert r.returncode == 3 and "RecoveryPointNotFound" in r.stderr


def test_cli_counts_chunks_stored_whole_and_as_deltas(tmp_path: Path, key_file: Path) -> None:
    disk = tmp_path / "d.img"
    data = bytearray(os.urandom(4 << 20))
    disk.write_bytes(bytes(data))
    snap, vault = tmp_path / "snap", tmp_path / "vault"
    run_engine("init", str(snap), "--codec", "none", key_file=key_file)
    run_engine("init", str(vault), "--keys-from", str(snap), key_file=key_file)
    first = run_engine(
        "-q", "backup", str(snap), "--vm", "db", "--disk", f"0={disk}", key_file=key_file
    )
    for chunk in range(3):  # one 4 KiB page in three of the four 1 MiB chunks
        at = chunk * (1 << 20) + 8192
        data[at : at + 4096] = os.urandom(4096)
    disk.write_bytes(bytes(data))
    r = run_engine(
        "backup",
        str(snap),
        "--vm",
        "db",
        "--disk",
        f"0={disk}",
        "--parent",
        first.stdout.strip(),
        key_file=key_file,
    )
    assert "3 new chunks (0 whole, 3 as deltas saving" in r.stderr, r.stderr
    r = run_engine(
        "--json",
        "transfer",
        str(snap),
        str(vault),
        r.stdout.strip().splitlines()[-1],
        "-q",
        key_file=key_file,
    )
    assert json.loads(r.stdout)["chunks_delta"] == 3
    r = run_engine("stats", str(snap), key_file=key_file)
    assert "stored whole: 4, as deltas: 3 (saving 3.0 MiB)" in r.stdout, r.stdout
    st = json.loads(run_engine("--json", "stats", str(vault), key_file=key_file).stdout)
    assert (st["delta_chunks"], st["base_chunks"], st["garbage_chunks"]) == (3, 3, 0)
