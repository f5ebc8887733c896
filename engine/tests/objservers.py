"""Object-store servers for the engine's tests: moto (S3) and Azurite (Azure Blob).

Each server runs once per session on a free port, bound to 127.0.0.1, and is stopped (by its
own pid) at the end. Tests get a fresh bucket or container each. A missing server skips the
test with the reason (a failure under LIFEBOAT_REQUIRE_ALL): `pip install -e '.[dev]'` brings
moto, `npm ci` at the repository root brings Azurite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.backends import ObjectTarget

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft).
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_CREDS = {"access_key_id": "testing", "secret_access_key": "testing"}


def _missing(msg: str) -> None:
    if os.environ.get("LIFEBOAT_REQUIRE_ALL"):
        pytest.fail(f"{msg} and LIFEBOAT_REQUIRE_ALL is set")
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within 60 s")


@dataclass
class Server:
    kind: str  # "s3" | "azure"
    endpoint: str
    proc: subprocess.Popen[bytes]
    workdir: Path

    def pids(self) -> list[int]:
        """The server's processes: its own and its children (gunicorn's worker)."""
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            kids = ""
        return [self.proc.pid, *map(int, kids.split())]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_moto() -> Server:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        _missing("moto[server] is not installed (pip install -e '.[dev]')")
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="lifeboat-moto-"))
    log = work / "moto.log"
    # One process (moto keeps its objects in it), its threads serving kept-alive connections.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "32",
            "--keep-alive",
            "75",
            "--graceful-timeout",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--pythonpath",
            str(REPO),
            "engine.tests.moto_wsgi:app",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=work,
        env={**os.environ, "MOTO_PORT": str(port)},
    )
    _wait_port(port, proc, "moto server", log)
    return Server("s3", f"http://127.0.0.1:{port}", proc, work)


def start_azurite(*, in_memory: bool = False) -> Server:
    """Azurite on a free port. `in_memory`: blobs and their metadata live in the process, as
    moto keeps its objects (nothing survives a restart); otherwise every blob is a file and
    the metadata a LokiJS database in a fresh folder."""
    if not AZURITE.exists():
        _missing("Azurite is not installed (npm ci at the repository root)")
    port = free_port()
    # A fresh folder per run: Azurite keeps deleted blobs' data until it restarts.
    work = Path(tempfile.mkdtemp(prefix="lifeboat-azurite-"))
    log = work / "azurite.log"
    keeps = ["--inMemoryPersistence"] if in_memory else ["--location", str(work / "data")]
    proc = subprocess.Popen(
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            *keeps,
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    _wait_port(port, proc, "Azurite", log)
    return Server("azure", f"http://127.0.0.1:{port}/{AZ_ACCOUNT}", proc, work)


def s3_target(endpoint: str, *, object_lock: bool = False) -> ObjectTarget:
    return ObjectTarget(endpoint, "us-east-1", True, dict(S3_CREDS), object_lock)


def azure_target(endpoint: str) -> ObjectTarget:
    return ObjectTarget(endpoint, None, True, {"account_name": AZ_ACCOUNT, "account_key": AZ_KEY})


def s3_client(endpoint: str) -> object:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}),
    )


def new_bucket(endpoint: str, *, object_lock: bool = False) -> str:
    name = f"t-{uuid.uuid4().hex[:20]}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)  # type: ignore[attr-defined]
    return name


def new_container(endpoint: str) -> str:
    from azure.storage.blob import BlobServiceClient

    name = f"t-{uuid.uuid4().hex[:20]}"
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
        f"BlobEndpoint={endpoint};"
    )
    BlobServiceClient.from_connection_string(conn).create_container(name)
    return name


class Outage:
    """A TCP relay in front of a server: `cut()` refuses and drops every connection (the
    service is gone as far as clients can tell), `restore()` serves again; the server behind
    keeps its data, as a real service does across an outage."""

    def __init__(self, upstream: str) -> None:
        host_port = upstream.split("//", 1)[1].split("/", 1)
        self.up_host, up_port = host_port[0].split(":")
        self.up_port = int(up_port)
        self.path = "/" + host_port[1] if len(host_port) > 1 else ""
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}{self.path}"
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection((self.up_host, self.up_port))
            except OSError:
                c.close()
                continue
            with self._lock:
                self._conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave that
            # call to take one more connection through.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.cut()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Server]:
    srv = start_moto()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Server]:
    # In memory, as moto is: no test restarts the server and expects its data back.
    srv = start_azurite(in_memory=True)
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Place:
    """Where a test's store goes: a location and how to reach it (None for a local path)."""

    kind: str  # "local" | "s3" | "azure"
    location: str
    target: ObjectTarget | None


def object_place(request: pytest.FixtureRequest, kind: str, tmp_path: Path, name: str) -> Place:
    """A fresh place for a store of the given kind (servers started on first use)."""
    if kind == "local":
        return Place(kind, str(tmp_path / name), None)
    if kind == "s3":
        srv: Server = request.getfixturevalue("moto_server")
        return Place(kind, f"s3://{new_bucket(srv.endpoint)}/{name}", s3_target(srv.endpoint))
    srv = request.getfixturevalue("azurite_server")
    return Place(kind, f"az://{new_container(srv.endpoint)}/{name}", azure_target(srv.endpoint))
