"""A 64 MiB smoke run of the restore benchmark (bench/restore.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.tests.tools import REPO, engine_env, require_tool


def test_restore_benchmark_smoke_run(tmp_path: Path) -> None:
    for name in ("mkfs.ext4", "cp", "cmp", "sync"):
        require_tool(name)
    work = tmp_path / "work"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "restore.py"),
            "--size",
            "64M",
            "--runs",
            "1",
            "--work",
            str(work),
            "--warm",  # dropping the page cache of a shared machine is for real runs
        ],
        cwd=REPO,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for shape in ("sparse, 5% data", "small extents", "incompressible", "ext4 image"):
        for name in ("snapshot tier", "vault tier", "cp --sparse=always + sync"):
            line = next(row for row in rows if row.startswith(f"| {shape}") and name in row)
            assert line.rstrip().endswith("| yes |"), line
    for stage in ("read chunk file", "decrypt + authenticate", "decompress", "fsync"):
        assert any(row.startswith(f"| {stage}") for row in rows), out
    assert "first listed directory" in out
    # each profile names its bottleneck
    assert out.count("Bottleneck: the ") == 2, out
    assert "| restores byte-identical | MET |" in out
    assert list(work.iterdir()) == []  # the work dir is cleaned up
