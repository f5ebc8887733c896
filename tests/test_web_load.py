"""bench/web_load.py's SQLite case: ten clients writing at once (backup now, policy edits,
MUA approvals) through gunicorn, with the worker running the backups they start, on the
embedded SQLite default: no write fails, no "database is locked" anywhere in the logs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backups.conftest import needs_e2fsprogs

REPO = Path(__file__).resolve().parents[1]

pytestmark = [needs_e2fsprogs, pytest.mark.xdist_group("web-load")]


def test_ten_sqlite_writers_meet_no_lock_error(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIFEBOAT_", "DJANGO_", "DATABASE_URL", "SECRET_KEY", "PYTEST"))
    }
    r = subprocess.run(
        [
            sys.executable,
            "bench/web_load.py",
            "--only-writers",
            "--servers",
            "gunicorn",
            "--writers",
            "10",
            "--writer-seconds",
            "10",
            "--work",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr[-3000:]
    assert r.returncode == 0, out
    assert ' 0 errors, 0 "database is locked" in the logs.' in r.stdout, out
    # Every kind of write happened: accepted backups, edits, approvals asked and approved.
    assert "202:" in r.stdout and "200:" in r.stdout, out
