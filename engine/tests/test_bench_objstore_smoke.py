"""Small smoke runs of the object-store benchmarks (bench/objstore.py, bench/object_clients.py),
so the scripts behind bench/README.md's tables keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.tests.objservers import Server
from engine.tests.tools import REPO, engine_env, require_tool


def _run(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_object_clients_benchmark_smoke_run(moto_server: Server, azurite_server: Server) -> None:
    # The fixtures only make sure both servers can start (the script starts its own).
    out = _run(
        str(REPO / "bench" / "object_clients.py"), "--objects", "8", "--small", "5", "--runs", "1"
    )
    rows = [line for line in out.splitlines() if line.startswith("| S3") or line.startswith("| Az")]
    clients = [row.split("|")[2].strip() for row in rows]
    assert clients == ["obstore", "boto3", "obstore", "azure-storage-blob"], out
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c) > 0 for c in cells[2:4] + cells[7:9] + cells[12:]), row


def test_objstore_benchmark_smoke_run(
    tmp_path: Path, moto_server: Server, azurite_server: Server
) -> None:
    for name in ("mkfs.ext4", "debugfs", "cmp"):
        require_tool(name)
    work = tmp_path / "work"
    work.mkdir()
    out = _run(
        str(REPO / "bench" / "objstore.py"),
        "--size",
        "32M",
        "--runs",
        "1",
        "--work",
        str(work),
    )
    for store in ("local", "s3 (moto)", "azure (Azurite)"):
        assert any(line.startswith(store) for line in out.splitlines()), out
    assert "requests <= 1.2 x new + 20" in out
    assert list(work.iterdir()) == []  # the work dir is cleaned up
