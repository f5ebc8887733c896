"""Fixtures for the backup-flow tests: real ext4 images, real hook scripts, real stores.

Everything here runs the real parts: `mkfs.ext4 -d` images, `debugfs -w` churn, hook scripts
executed by the image connector, the engine's chunk stores and, where a test says so, a real
django-q2 worker process. Nothing that is named in a test is mocked.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from inventory.lab import images

MISSING = images.missing_tools()
needs_e2fsprogs = pytest.mark.skipif(
    bool(MISSING), reason=f"e2fsprogs tools missing: {', '.join(MISSING)}"
)
REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def make_ext4(path: Path, mib: int = 16, *, files: dict[str, bytes] | None = None) -> Path:
    """A real ext4 image (`mkfs.ext4 -d`) holding `files` (plus the lab's ring file)."""
    rng = random.Random(str(path))
    files = files or {
        "/etc/hostname": path.stem.encode() + b"\n",
        "/data/a.bin": rng.randbytes(3 * MIB),
        "/data/b.txt": b"".join(b"line %d of %s\n" % (i, path.name.encode()) for i in range(20000)),
    }
    images.make_image(path, mib, path.stem[:16], files)
    return path


def churn(image: Path, mib: float, tag: str) -> int:
    """Write `mib` MiB of new random files into the image with `debugfs -w`; bytes written."""
    debugfs = images.find_tool("debugfs")
    total = int(mib * MIB)
    local = image.parent / f".churn-{tag}.bin"
    local.write_bytes(random.randbytes(total))
    try:
        r = subprocess.run(
            [debugfs, "-w", "-R", f"write {local} churn-{tag}.bin", str(image)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
    finally:
        local.unlink()
    return total


def aside(image: Path, label: str) -> Path:
    """A copy of the image as it is now, to compare restores with."""
    copy = image.with_name(f"{image.stem}.{label}.expected")
    shutil.copyfile(image, copy)
    return copy


def same_bytes(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def write_script(directory: Path, name: str, body: str, mode: int = 0o700) -> Path:
    """A real hook script (a 0700 file in a 0700 directory, as Azure's plugin requires)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, mode)
    return path


@pytest.fixture
def hooks_dir(tmp_path) -> Path:
    d = tmp_path / "hooks"
    d.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o700)
    return d


@pytest.fixture
def small_disk():
    """`small_disk(path, size)` mounts a tmpfs of `size` (e.g. "1m") at `path`: a real file
    system that fills up, so writes fail with ENOSPC as on a full disk. Needs root."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "1m") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs (needs root): {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def lifeboat_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a subprocess that shares this test's database and stores."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "postgresql":
        user = s.get("USER") or ""
        password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        port = f":{s['PORT']}" if s.get("PORT") else ""
        url = f"postgres://{auth}{s.get('HOST') or ''}{port}/{s['NAME']}"
    else:
        url = f"sqlite:///{s['NAME']}"
    lb = django_settings.LIFEBOAT
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        # django-q2 signs its messages with SECRET_KEY: the worker must share ours.
        "SECRET_KEY": django_settings.SECRET_KEY,
        "LIFEBOAT_VAULT_STORE_ROOT": str(lb["VAULT_STORE_ROOT"]),
        "LIFEBOAT_MASTER_KEY_FILE": str(lb["MASTER_KEY_FILE"]),
        "LIFEBOAT_DEMO_ROOT": str(lb["DEMO_ROOT"]),
        "LIFEBOAT_DRILL_SCRATCH_ROOT": str(lb["DRILL_SCRATCH_ROOT"]),
        "LIFEBOAT_DATA_DIR": str(Path(lb["VAULT_STORE_ROOT"]).parent / "data"),
        "LIFEBOAT_WORKERS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


@pytest.fixture
def shared_db(transactional_db, django_db_blocker, tmp_path):
    """A committed database that a subprocess can open too.

    PostgreSQL: the test database itself (its name carries xdist's `_gwN` suffix). SQLite:
    pytest-django's test database is in memory, invisible to other processes, so the test's
    connection is pointed at a migrated file database for the duration of the test; the
    in-memory connection is kept aside (closing it would destroy that database) and put back.
    """
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor != "sqlite":
        yield connection
        return
    connection.ensure_connection()
    saved_conn, saved_name = connection.connection, connection.settings_dict["NAME"]
    connection.connection = None
    connection.settings_dict["NAME"] = str(tmp_path / "shared.sqlite3")
    try:
        call_command("migrate", verbosity=0, interactive=False)
        yield connection
    finally:
        if connection.connection is not None:
            connection.connection.close()
        connection.connection = saved_conn
        connection.settings_dict["NAME"] = saved_name


class Worker:
    """A real `manage.py qcluster` (or any manage.py command) in its own process group."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), *argv],
            cwd=REPO,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = 9) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def start_worker(tmp_path):
    """`start_worker(argv, env)` starts a manage.py process; its whole group is killed after."""
    started: list[Worker] = []

    def start(argv: list[str], env: dict[str, str]) -> Worker:
        w = Worker(argv, env, tmp_path / f"worker-{len(started)}.log")
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


class World:
    """One vault, one host, one VM whose disks are real ext4 images, and its protection."""

    def __init__(self, root: Path, *, disks=((-1, 16),), policy_rep=None, protect=True, **vm):
        from inventory.models import Disk, VirtualMachine
        from tests import factories as f
        from vaults.protection import protect_vm

        self.admin = f.make_user(f"admin-{root.name}"[:30], superuser=True)
        self.vault = f.make_vault(owner=self.admin)
        self.host = f.make_host(root / "host")
        self.vault.linked_hosts.add(self.host)
        vm.setdefault("power_state", "running")
        self.vm = VirtualMachine.objects.create(
            name=vm.pop("name", f"vm-{self.vault.pk}"), host=self.host, **vm
        )
        self.images: dict[int, Path] = {}
        for lun, mib in disks:
            path = make_ext4(Path(self.host.allowed_roots[0]) / f"{self.vm.name}-lun{lun}.img", mib)
            Disk.objects.create(vm=self.vm, lun=lun, path=str(path), size=path.stat().st_size)
            self.images[lun] = path
        if policy_rep is not None:
            self.policy = f.make_policy(self.vault, **policy_rep)
        else:
            self.policy = self.vault.policies.get()
        self.item = None
        if protect:
            self.item = protect_vm(self.vault, by=self.admin, vm=self.vm, policy=self.policy)

    def snapshot_store(self):
        from vaults.stores import open_or_create_snapshot_store

        return open_or_create_snapshot_store(self.vault, self.host)

    def vault_store(self):
        from vaults.stores import open_or_create_vault_store

        return open_or_create_vault_store(self.vault)

    def restore(self, store, rp_id, lun: int) -> Path:
        import engine

        target = Path(self.host.allowed_roots[1]) / f"{rp_id}-lun{lun}.img"
        engine.restore(store, str(rp_id), {lun: target})
        return target

    def backup_now(self):
        from jobs.backup_queue import backup_now

        return backup_now(self.item, by=self.admin)


def run(job):
    """Run a job in this process, as a worker would, and return it refreshed."""
    from jobs import runner

    runner.run_job(job.pk)
    job.refresh_from_db()
    return job
