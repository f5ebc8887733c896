"""A 64 MiB smoke run of the changed-block tracking benchmark (bench/cbt.py) on real libvirtd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.kvm.conftest import REPO, virsh


def test_cbt_benchmark_smoke_run(libvirt_uri: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    before = set(virsh("list", "--all", "--name").stdout.split())
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "cbt.py"),
            "--size-gib",
            "0.0625",
            "--data-gib",
            "0.03",
            "--repeat",
            "1",
            "--work",
            str(work),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for row in (
        "| full over NBD (libvirt connector) |",
        "| full of the raw file (image connector) |",
        "| **scattered 64 KiB writes**",
        "| **contiguous run**",
        "| (a) incremental, dirty bitmap |",
        "| (b) incremental, full read |",
        "| (c) floor: dirty extents over NBD |",
        "| target | status | measured |",
    ):
        assert row in out, out
    assert out.count("| (a) incremental, dirty bitmap |") == 2, out
    # Every target line says PASS or FAIL; a bitmap incremental reads only the chunks its
    # dirty extents touch.
    targets = [line for line in out.splitlines() if "| PASS |" in line or "| FAIL |" in line]
    assert len(targets) == 7, out
    assert "contiguous run: bytes read <= 1.1 x dirty extents rounded to the engine's" in out
    line = next(line for line in out.splitlines() if line.startswith("| contiguous run: bytes"))
    assert "| PASS |" in line, line
    # The domain and the work folder are gone.
    after = set(virsh("list", "--all", "--name").stdout.split())
    assert not {n for n in after - before if n.startswith("t-bench-")}
    assert list(work.iterdir()) == []
