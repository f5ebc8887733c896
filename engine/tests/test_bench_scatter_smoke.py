"""A small smoke run of bench/scatter.py (Lifeboat only: restic and borg run in the real one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.tests.tools import REPO, engine_env, require_tool


def test_scatter_benchmark_smoke_run(tmp_path: Path) -> None:
    for name in ("mkfs.ext4", "debugfs"):
        require_tool(name)
    args = ["--size", "48M", "--file", "32M", "--scatter", "1M", "--contig", "4M"]
    args += ["--chain-size", "32M", "--gens", "2", "--runs", "1", "--skip-peers"]
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scatter.py"), *args, "--work", str(tmp_path)],
        cwd=REPO,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for row in ("| lifeboat |", "| lifeboat-whole |", "| whole chunks |", "| 64 of 256 |"):
        assert row in out, out
    assert "scattered incr. adds ≤ 3 × the bytes written | met" in out, out
    assert "restores byte-identical | met" in out, out
