"""Web load: the development server against the application server, idle and while jobs run,
and ten concurrent writers on SQLite.

    .venv/bin/python bench/web_load.py [--clients 1,8,32] [--seconds 10]
        [--servers runserver,gunicorn] [--writers 10] [--writer-seconds 20] [--readme]
        [--only-writers] [--work DIR]

On the embedded default (SQLite, as `make run`) in `bench/work/web_load/`: migrate, bootstrap
(the demo lab), an API token and a session of the site administrator. Then:

The worker (`manage.py worker`, 4 job processes, reads capped at 2 MiB/s so the jobs last)
runs throughout, as under `make run`.

1. **Idle** (no job runs): each server in `--servers` in turn (`runserver` = `manage.py runserver --noreload`,
   what `make dev` serves; `gunicorn` = `make run`'s `portal/gunicorn_conf.py`; `granian` =
   granian's WSGI interface with as many workers and threads) under 1, 8 and 32 concurrent
   clients for `--seconds` each. Every client keeps one HTTP/1.1 connection and asks, in turn,
   the main lists: the API's vaults, protected items, jobs and VMs (token) and the pages of
   vaults, items, jobs and VMs (session).
2. **Jobs**: three backups (the lab's three VMs) and a restore of an earlier recovery point
   run; each step starts what is no longer running first. The same loads against each server; the
   columns say how many jobs ran and how many bytes they moved during the step.
3. **Writers**: `--writers` clients write at once for `--writer-seconds` against the last
   server: backup now on the lab's items (202, or 409 while one runs), policy edits
   (schedule time), and MUA approvals (a retention reduction in a vault with MUA on: 202, then
   a guard approver approves it, then the retention goes back up). Errors are 5xx answers,
   failed connections and any "database is locked" in the server's or the worker's log;
   the script exits 1 if there is one. `--only-writers` runs this case alone
   (`tests/test_web_load.py`).

Client and servers share the machine's two cores, as in production on a small host; the
table is one run. Each row also gives the server's CPU time per request (all its processes)
and the machine's load average, since other tenants of a shared machine take their share of
the cores. `--readme` rewrites the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work" / "web_load"
VENV_BIN = Path(sys.executable).parent
README = REPO / "bench" / "README.md"
VAULT = "demo-vault"
LAB_VMS = ("demo-app-01", "demo-db-01", "demo-old-01")
# As portal/gunicorn_conf.py sets them by default (granian gets as many).
WEB_WORKERS = 8
WEB_THREADS = 2


# -- the world --------------------------------------------------------------------------------


def environment(data: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LIFEBOAT_ENV", "DEBUG")
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PYTHONPATH": str(REPO),
            "SECRET_KEY": "bench-web-load-secret-key-shared-by-every-process",
            "LIFEBOAT_DATA_DIR": str(data),
            "LIFEBOAT_WORKERS": "4",
            "LIFEBOAT_THROTTLE_MIBPS": "2",
            "LIFEBOAT_WEB_WORKERS": str(WEB_WORKERS),
            "LIFEBOAT_WEB_THREADS": str(WEB_THREADS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def manage(env: dict[str, str], *argv: str) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *argv],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class Credentials:
    token: str  # the site administrator's API token
    session: str  # the site administrator's session cookie
    approver_token: str  # the MUA vault's guard approver
    host_id: int
    restore_root: Path


def prepare(data: Path) -> tuple[dict[str, str], Credentials]:
    """A fresh embedded install with the demo lab, credentials, and a vault with MUA on."""
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    env = environment(data)
    manage(env, "migrate", "--no-input")
    manage(env, "bootstrap")
    manage(env, "collectstatic", "--no-input", "-v", "0")
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    from inventory.models import Host
    from portal.models import ApiToken
    from vaults.models import GuardApprover, Vault

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    admin = User.objects.get(username="admin")
    _, token = ApiToken.issue(admin, "web-load")
    client = Client()
    client.force_login(admin)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    approver = User.objects.create_user("approver", password="bench-approver-1")
    _, approver_token = ApiToken.issue(approver, "web-load")
    guarded = Vault.create(name="guarded", owner=admin)
    Vault.objects.filter(pk=guarded.pk).update(mua_enabled=True)
    GuardApprover.objects.create(vault=guarded, user=approver, assigned_by=admin)
    host = Host.objects.get(name="demo-host")
    from django.db import connection

    connection.close()
    return env, Credentials(token, session, approver_token, host.pk, Path(host.allowed_roots[1]))


# -- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVERS = {
    "runserver": lambda port: [
        sys.executable,
        str(REPO / "manage.py"),
        "runserver",
        "--noreload",
        f"127.0.0.1:{port}",
    ],
    "gunicorn": lambda port: [
        str(VENV_BIN / "gunicorn"),
        "-c",
        "python:portal.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{port}",
        "portal.wsgi",
    ],
    "granian": lambda port: [
        str(VENV_BIN / "granian"),
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WEB_WORKERS),
        "--blocking-threads",
        str(WEB_THREADS),
        "--no-ws",
        "portal.wsgi:application",
    ],
}


class Process:
    """A server or worker in its own process group, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()


def cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time (user + system) of every process in `proc`'s process group so far."""
    group, ticks = os.getpgid(proc.pid), 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def start_server(kind: str, env: dict[str, str], log: Path) -> tuple[Process, str]:
    port = free_port()
    server = Process(SERVERS[kind](port), env, log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
                if r.status == 200:
                    return server, base
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise SystemExit(f"{kind} did not answer /healthz within 60 s; see {log}")


# -- the load ---------------------------------------------------------------------------------


def read_targets(creds: Credentials) -> list[tuple[str, dict[str, str]]]:
    api = {"Authorization": f"Token {creds.token}"}
    page = {"Cookie": f"sessionid={creds.session}"}
    return [
        ("/api/v1/vaults/", api),
        (f"/api/v1/vaults/{VAULT}/protected-items/", api),
        (f"/api/v1/vaults/{VAULT}/jobs/", api),
        ("/api/v1/vms/", api),
        ("/vaults/", page),
        (f"/vaults/{VAULT}/items/", page),
        (f"/vaults/{VAULT}/jobs/", page),
        ("/inventory/vms/", page),
    ]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    reconnects: int = 0  # kept-alive connections closed by the server, the GET sent again
    statuses: dict[int, int] = field(default_factory=dict)


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
) -> tuple[int, bool]:
    """The response's status, and whether the server closes the connection after it (a whole
    response with "Connection: close": the next request goes on a new connection)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length, chunked, close = 0, False, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.lower() == "close":
            close = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status, close


async def _client(base: str, targets: list, until: float, tally: Tally, offset: int) -> None:
    host, port = base.removeprefix("http://").split(":")
    conn = None
    i = offset
    while time.monotonic() < until:
        path, headers = targets[i % len(targets)]
        i += 1
        start = time.monotonic()
        reused = conn is not None
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, int(port))
            status, close = await _request(*conn, "GET", path, headers)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            if conn is not None:
                conn[1].close()
            conn = None
            if not reused:
                tally.errors += 1
                continue
            # A kept-alive connection the server closed meanwhile (a worker recycled, its
            # keep-alive timeout): an HTTP client sends an idempotent GET again on a new
            # connection (RFC 9110, 9.2.2), as browsers do; failing there is an error.
            tally.reconnects += 1
            try:
                conn = await asyncio.open_connection(host, int(port))
                status, close = await _request(*conn, "GET", path, headers)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                tally.errors += 1
                if conn is not None:
                    conn[1].close()
                conn = None
                continue
        if close:
            conn[1].close()
            conn = None
        tally.latencies.append(time.monotonic() - start)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status != 200:
            tally.errors += 1
    if conn is not None:
        conn[1].close()


def load(base: str, targets: list, clients: int, seconds: float) -> dict[str, Any]:
    tally = Tally()

    async def main() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client(base, targets, until, tally, n) for n in range(clients)))

    started = time.monotonic()
    asyncio.run(main())
    wall = time.monotonic() - started
    lat = sorted(tally.latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "clients": clients,
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50": pct(0.50),
        "p99": pct(0.99),
        "errors": tally.errors,
        "reconnects": tally.reconnects,
    }


# -- jobs while loading -----------------------------------------------------------------------


def api_call(base: str, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def job_states() -> dict[int, tuple[str, int]]:
    """Each backup's and restore's (status, bytes done), from the catalog."""
    from django.db import connection

    from jobs.models import Job

    found = {
        pk: (status, done)
        for pk, status, done in Job.objects.filter(operation__in=["backup", "restore"]).values_list(
            "pk", "status", "bytes_done"
        )
    }
    connection.close()
    return found


def progress(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]) -> str:
    """How many jobs were running during a step, how many of them moved on, how many ended."""
    from jobs.models import UNFINISHED

    running = [pk for pk, (status, _) in before.items() if status in UNFINISHED]
    moved = [pk for pk in running if after.get(pk) != before[pk]]
    ended = [pk for pk in running if after.get(pk, ("",))[0] not in UNFINISHED]
    return f"{len(running)} running, {len(moved)} progressed, {len(ended)} finished"


def running_jobs() -> set[str]:
    from django.db import connection

    from jobs.models import UNFINISHED, Job

    found = {
        (j.operation, j.vm_name)
        for j in Job.objects.filter(status__in=UNFINISHED, operation__in=["backup", "restore"])
    }
    connection.close()
    return {f"{op}:{vm}" for op, vm in found}


def first_recovery_point(base: str, creds: Credentials) -> str:
    """Back up demo-app-01 once (a recovery point for the restores) and wait for it."""
    status, body = api_call(
        base, creds.token, "POST", f"/api/v1/vaults/{VAULT}/protected-items/demo-app-01/backup/", {}
    )
    assert status == 202, (status, body)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        _, rps = api_call(
            base,
            creds.token,
            "GET",
            f"/api/v1/vaults/{VAULT}/protected-items/demo-app-01/recovery-points/",
        )
        if rps and rps.get("results"):
            return str(rps["results"][0]["id"])
        time.sleep(1)
    raise SystemExit("the first backup did not finish within 10 minutes")


def keep_jobs_running(base: str, creds: Credentials, rp_id: str, counter: list[int]) -> None:
    """Three backups and a restore: start whichever of them is not running now."""
    running = running_jobs()
    for vm in LAB_VMS:
        if f"backup:{vm}" not in running:
            api_call(
                base,
                creds.token,
                "POST",
                f"/api/v1/vaults/{VAULT}/protected-items/{vm}/backup/",
                {},
            )
    if "restore:demo-app-01" not in running:
        counter[0] += 1
        target = creds.restore_root / f"web-load-{counter[0]}"
        target.mkdir(parents=True, exist_ok=True)
        status, body = api_call(
            base,
            creds.token,
            "POST",
            f"/api/v1/vaults/{VAULT}/protected-items/demo-app-01/recovery-points/{rp_id}/restore/",
            {"kind": "restore_disks", "target": {"host": creds.host_id, "path": str(target)}},
        )
        assert status == 202, (status, body)


# -- writers ----------------------------------------------------------------------------------


def writers(base: str, creds: Credentials, count: int, seconds: float) -> dict[str, Any]:
    """`count` threads writing at once: backup now, policy edits, MUA approvals."""
    until = time.monotonic() + seconds
    lock = threading.Lock()
    result: dict[str, Any] = {"writes": 0, "errors": 0, "statuses": {}}

    def note(status: int) -> None:
        with lock:
            result["writes"] += 1
            result["statuses"][status] = result["statuses"].get(status, 0) + 1
            if status >= 500 or status == 0:
                result["errors"] += 1

    def call(token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            status, data = api_call(base, token, method, path, body)
        except (OSError, ValueError):
            status, data = 0, None
        note(status)
        return status, data

    def backup_now(n: int) -> None:
        vm = LAB_VMS[n % len(LAB_VMS)]
        while time.monotonic() < until:
            call(creds.token, "POST", f"/api/v1/vaults/{VAULT}/protected-items/{vm}/backup/", {})

    def policy_edit(n: int) -> None:
        path = f"/api/v1/vaults/{VAULT}/policies/DefaultPolicy/"
        i = 0
        while time.monotonic() < until:
            i += 1
            when = f"{(n + i) % 24:02d}:{(7 * i) % 60:02d}"
            call(creds.token, "PATCH", path, {"schedule": {"frequency": "daily", "time": when}})

    def approval(n: int) -> None:
        policy = "/api/v1/vaults/guarded/policies/DefaultPolicy/"
        while time.monotonic() < until:
            status, body = call(
                creds.token, "PATCH", policy, {"retention": {"daily": {"days": 20}}}
            )
            if status == 202 and body:
                call(
                    creds.approver_token,
                    "POST",
                    f"/api/v1/vaults/guarded/approvals/{body['approval']}/approve/",
                    {},
                )
            call(creds.token, "PATCH", policy, {"retention": {"daily": {"days": 30}}})

    kinds = [backup_now, policy_edit, approval]
    threads = [threading.Thread(target=kinds[n % 3], args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


# -- the table --------------------------------------------------------------------------------


def row(server: str, phase: str, r: dict[str, Any], extra: str = "") -> str:
    return (
        f"| {server} | {phase} | {r['clients']} | {r['rps']:.0f} | {r['p50']:.0f} ms | "
        f"{r['p99']:.0f} ms | {r['errors']} | {r['reconnects']} | {r['cpu_ms']:.1f} ms | {r['load']:.1f} | {extra} |"
    )


def measured(server: Process, base: str, targets: list, clients: int, seconds: float) -> dict:
    """`load`, with the server's CPU time per request and the machine's load average."""
    before = cpu_seconds(server.proc)
    r = load(base, targets, clients, seconds)
    r["cpu_ms"] = (cpu_seconds(server.proc) - before) * 1000 / max(1, r["requests"])
    r["load"] = os.getloadavg()[0]
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--servers", default="runserver,gunicorn")
    parser.add_argument("--writers", type=int, default=10)
    parser.add_argument("--writer-seconds", type=float, default=20)
    parser.add_argument(
        "--only-writers", action="store_true", help="skip the loads: the writers case alone"
    )
    parser.add_argument("--work", type=Path, default=WORK, help="where the install goes")
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    servers = args.servers.split(",")
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("*.log"):
        old.unlink()
    env, creds = prepare(work / "data")
    targets = read_targets(creds)
    lines = [
        "| server | phase | clients | req/s | p50 | p99 | errors | GETs sent again | server CPU "
        "per request | load average | jobs during the step |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    results: dict[tuple[str, str, int], dict[str, Any]] = {}

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    if args.only_writers:
        servers, lines = servers[-1:], []
    else:
        print("\n".join(lines), flush=True)
    # Every server runs from the start and they take turns at each load, so a change in what
    # the machine's other tenants do falls on all of them alike.
    started = {kind: start_server(kind, env, work / f"{kind}.log") for kind in servers}
    worker = Process([sys.executable, str(REPO / "manage.py"), "worker"], env, work / "worker.log")
    try:
        if not args.only_writers:
            idle_and_jobs(args, clients, started, targets, creds, results, emit)
        w = writers(started[servers[-1]][1], creds, args.writers, args.writer_seconds)
    finally:
        for server, _ in started.values():
            server.stop()
        worker.stop()
    locked = sum(
        log.read_text(errors="replace").count("database is locked") for log in work.glob("*.log")
    )
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(w["statuses"].items()))
    summary = [
        "",
        f"SQLite, {args.writers} concurrent writers for {args.writer_seconds:g} s on {servers[-1]} "
        f"(backup now, policy edits, MUA approvals): {w['writes']} writes ({statuses}), "
        f'{w["errors"]} errors, {locked} "database is locked" in the logs.',
    ]
    if len(servers) > 1 and (servers[0], "idle", max(clients)) in results:
        dev = results[(servers[0], "idle", max(clients))]["rps"]
        app = results[(servers[-1], "idle", max(clients))]["rps"]
        summary.append(
            f"At {max(clients)} clients {servers[-1]} serves {app / dev:.1f}x the requests/s of "
            f"{servers[0]}."
        )
    for line in summary:
        print(line)
    if args.readme:
        write_readme(args, lines + summary)
    sys.exit(1 if w["errors"] or locked else 0)


def idle_and_jobs(
    args: argparse.Namespace,
    clients: list[int],
    started: dict[str, tuple[Process, str]],
    targets: list,
    creds: Credentials,
    results: dict[tuple[str, str, int], dict[str, Any]],
    emit: Any,
) -> None:
    """The loads: idle (no job runs; the worker waits), then while three backups and a
    restore run."""
    for _, base in started.values():
        # Warm every process up (templates, URL resolver, first connections): gunicorn has
        # four to warm, the development server one.
        load(base, targets, 16, 8)
    for n in clients:
        for kind, (server, base) in started.items():
            r = measured(server, base, targets, n, args.seconds)
            results[(kind, "idle", n)] = r
            emit(row(kind, "idle", r))
    last = list(started)[-1]
    counter = [0]
    rp_id = first_recovery_point(started[last][1], creds)
    for n in clients:
        for kind, (server, base) in started.items():
            keep_jobs_running(base, creds, rp_id, counter)
            time.sleep(1)
            before = job_states()
            r = measured(server, base, targets, n, args.seconds)
            results[(kind, "jobs", n)] = r
            emit(row(kind, "3 backups + restore", r, progress(before, job_states())))


def write_readme(args: argparse.Namespace, lines: list[str]) -> None:
    start, end = "<!-- web_load:start -->", "<!-- web_load:end -->"
    cmd = (
        f".venv/bin/python bench/web_load.py --clients {args.clients} --seconds {args.seconds:g} "
        f"--servers {args.servers} --readme"
    )
    block = "\n".join([start, f"{date.today()}, `{cmd}`:", "", *lines, end])
    text = README.read_text()
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n## Web load\n\n" + block + "\n"
    README.write_text(text)


if __name__ == "__main__":
    main()
