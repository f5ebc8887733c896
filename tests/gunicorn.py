"""gunicorn started as `make run` starts it (portal/gunicorn_conf.py), for the tests that need
the real application server over a socket."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).parent / "gunicorn"


@contextmanager
def serving(app: str, env: dict[str, str], log: Path) -> Iterator[int]:
    """gunicorn serving the WSGI `app` ("module:callable") on a free port, with one worker,
    until the block ends; yields the port. Its output goes to `log`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**env, "LIFEBOAT_WEB_WORKERS": "1"}
    command = [str(GUNICORN), "-c", "python:portal.gunicorn_conf"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{port}", app],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
