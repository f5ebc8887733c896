"""A 64 MiB smoke run of the benchmark against restic and borg."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.tests.tools import REPO, engine_env, require_tool


def test_benchmark_smoke_run(tmp_path: Path) -> None:
    for name in ("restic", "borg", "mkfs.ext4", "debugfs"):
        require_tool(name)
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "engine_vs_peers.py"),
            "--size",
            "64M",
            "--runs",
            "1",
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for row in ("| lifeboat |", "| restic |", "| borg |", "floor: BLAKE3", "floor: cp"):
        assert row in out, out
    assert "restore byte-identical | met" in out
    assert "peak RSS <= 300 MiB | met" in out
    lifeboat = next(line for line in out.splitlines() if line.startswith("| lifeboat |"))
    assert lifeboat.rstrip().endswith("| yes |")
