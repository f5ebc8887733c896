"""docs/deploy.md holds: its unit files parse (`systemd-analyze verify`), and its commands,
then the web and worker units' own command lines, run on PostgreSQL with the example
environment file and answer `/healthz` with every check ok."""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "deploy.md"
UNITS = REPO / "deploy" / "systemd"
PREFIX = "/opt/lifeboat"
VENV = Path(sys.executable).parent.parent

pytestmark = pytest.mark.xdist_group("deploy")


def installed_here(text: str, root: Path) -> str:
    """A unit or command as installed under `root` instead of /opt/lifeboat."""
    return text.replace(f"{PREFIX}/.venv", str(VENV)).replace(PREFIX, str(root))


@pytest.mark.parametrize(
    "unit", ["lifeboat-web.service", "lifeboat-worker.service", "lifeboat-host-worker@.service"]
)
def test_the_unit_files_parse(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    name = unit.replace("@.", "@kvm1.")  # a template is verified as one of its instances
    (tmp_path / name).write_text(installed_here((UNITS / unit).read_text(), REPO))
    r = subprocess.run(
        [analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # Unknown keys and bad values are only warnings: none is allowed either.
    assert name not in r.stderr, r.stderr


def documented_commands() -> str:
    text = DOC.read_text()
    block = text[text.index("<!-- deploy:commands -->") : text.index("<!-- deploy:end -->")]
    (script,) = re.findall(r"```sh\n(.*?)```", block, re.S)
    return script


def exec_start(unit: str) -> list[str]:
    line = next(ln for ln in (UNITS / unit).read_text().splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def postgres_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        pytest.skip("the deployment is checked on PostgreSQL (DATABASE_URL, as in CI)")
    return url


@pytest.fixture
def scratch_database():
    import psycopg

    url = urlparse(postgres_url())
    name = f"lifeboat_deploy_{os.getpid()}"
    admin = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment_file(path: Path, database_url: str, root: Path) -> dict[str, str]:
    """deploy/lifeboat.env.example with this test's database and directories."""
    values = {
        "DATABASE_URL": database_url,
        "LIFEBOAT_DATA_DIR": str(root / "data"),
        "LIFEBOAT_VAULT_STORE_ROOT": str(root / "vaults"),
        "LIFEBOAT_MASTER_KEY_FILE": str(root / "etc" / "master.key"),
        "SECRET_KEY": "a-secret-key-for-the-deployment-test-" + "x" * 20,
    }
    lines, env = [], {}
    for line in (REPO / "deploy" / "lifeboat.env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            value = values.get(name, value)
            env[name] = value
            line = f"{name}={value}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return env


def test_the_documented_commands_run_on_postgresql(scratch_database, tmp_path):
    env_file = tmp_path / "etc" / "lifeboat.env"
    env_file.parent.mkdir()
    settings = environment_file(env_file, scratch_database, tmp_path)
    script = installed_here(documented_commands(), REPO)
    script = script.replace("/etc/lifeboat/lifeboat.env", str(env_file))
    script = script.replace(".venv/bin/", f"{VENV}/bin/")
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIFEBOAT_", "DJANGO_", "DATABASE_URL", "SECRET_KEY", "PYTEST"))
    }
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "System check identified no issues" in r.stdout
    assert "site administrator created" in r.stdout

    # The units' commands, with the unit's environment (EnvironmentFile= and Environment=).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**clean, **settings, "LIFEBOAT_BIND": f"127.0.0.1:{port}", "LIFEBOAT_WEB_WORKERS": "2"}
    started = []
    try:
        for unit in ("lifeboat-web.service", "lifeboat-worker.service"):
            argv = [installed_here(a, REPO) for a in exec_start(unit)]
            log = open(tmp_path / f"{unit}.log", "wb")
            started.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 120
        body = ""
        while time.monotonic() < deadline:
            try:
                # As the proxy forwards it (production redirects plain HTTP, but not /healthz).
                with urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://127.0.0.1:{port}/healthz",
                        headers={"Host": "backup.example.com"},
                    ),
                    timeout=10,
                ) as response:
                    body = response.read().decode()
                if '"workers": "ok"' in body:
                    break
            except OSError:
                pass
            time.sleep(1)
        logs = "".join(p.read_text()[-2000:] for p in tmp_path.glob("*.service.log"))
        assert '"status": "ok"' in body and "fail" not in body, body + logs
        # Each request is one structured line in the log; gunicorn writes it once the response
        # has gone, so the client may read the body before the line is there.
        line = re.compile(r'event=request remote=127\.0\.0\.1 method=GET path="/healthz"')
        web_log = tmp_path / "lifeboat-web.service.log"
        deadline = time.monotonic() + 10
        while not line.search(web_log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert line.search(web_log.read_text()), web_log.read_text()[-2000:]
    finally:
        for proc in started:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=60)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
