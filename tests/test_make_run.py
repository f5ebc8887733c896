"""`make run` on a fresh clone: it migrates, bootstraps the demo lab, serves through gunicorn
and answers; Ctrl-C (SIGINT to the terminal's process group) stops everything it started.

The clone is a copy of the repository's files (tracked and new, not ignored) in a temporary
directory, with the environment of a fresh shell: no DATABASE_URL (the embedded SQLite
default, in the clone's `var/`). The virtualenv is this one (`VENV=`; make is told it is up
to date, so nothing is installed).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.backups.conftest import needs_e2fsprogs

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent

pytestmark = [needs_e2fsprogs, pytest.mark.xdist_group("make-run")]


def fresh_clone(to: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    return to


def session_processes(sid: int) -> list[str]:
    """The processes still in session `sid` (pid and command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # state, ppid, pgrp, session
            found.append(f"{entry.name} {cmdline}")
    return found


def get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_make_run_serves_through_gunicorn_and_ctrl_c_stops_everything(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIFEBOAT_", "DJANGO_", "DATABASE_URL", "PYTEST", "SECRET_KEY"))
    }
    env["LIFEBOAT_WEB_WORKERS"] = "2"  # a small machine shared with the other tests
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        make = subprocess.Popen(
            ["make", "-o", f"{VENV}/.installed", "run", f"VENV={VENV}", f"PORT={port}"],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own session and process group, as a terminal's
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert make.poll() is None, log.read_text()[-3000:]
            try:
                status, headers = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        assert status == 200, log.read_text()[-3000:]
        assert headers["Server"] == "gunicorn"
        assert get(f"http://127.0.0.1:{port}/login/")[0] == 200
        assert get(f"http://127.0.0.1:{port}/static/css/lifeboat.css")[0] == 200
        assert (clone / "var" / "lifeboat.sqlite3").exists()  # the embedded default
        running = "\n".join(session_processes(make.pid))
        assert "gunicorn" in running and "manage.py worker" in running, running

        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C
        make.wait(timeout=60)
        deadline = time.monotonic() + 30
        while session_processes(make.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session_processes(make.pid) == []
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if make.poll() is None or session_processes(make.pid):
            try:
                os.killpg(make.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            make.wait()
