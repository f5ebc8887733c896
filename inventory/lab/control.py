"""Run-time state of the lab's VMs, shared by the hook scripts, the writers and ``manage.py lab``.

Everything lives in files under ``<DEMO_ROOT>/run/`` so shell scripts can use it too:

``<vm>.pid``     the VM's writer process (written by the writer itself)
``<vm>.power``   ``running`` or ``stopped``: the VM's power switch (``lab start|stop``)
``<vm>.lock``    flock(1) lock taken by freeze/thaw and by churn/start/stop
``<vm>.frozen``  present between a backup's freeze and thaw; churn, start and stop wait for it
``writers.pid``  the ``lab writers`` supervisor, when it runs

Django-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from inventory.lab.writer import MARKER

REPO_ROOT = Path(__file__).resolve().parents[2]
FROZEN_WAIT = 120.0  # seconds churn/start/stop wait for a backup's freeze to end
STOP_WAIT = 5.0


class LabBusy(RuntimeError):
    """The VM is frozen by a backup (or locked) for longer than we are willing to wait."""


class Lab:
    """Paths of one lab under ``root`` (= DEMO_ROOT)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.disks = self.root / "disks"
        self.restores = self.root / "restores"
        self.snapshots = self.root / "snapshots"
        self.scripts = self.root / "scripts"
        self.run = self.root / "run"
        self.logs = self.root / "logs"

    def pid_file(self, vm: str) -> Path:
        return self.run / f"{vm}.pid"

    def power_file(self, vm: str) -> Path:
        return self.run / f"{vm}.power"

    def lock_file(self, vm: str) -> Path:
        return self.run / f"{vm}.lock"

    def frozen_file(self, vm: str) -> Path:
        return self.run / f"{vm}.frozen"

    def writer_log(self, vm: str) -> Path:
        return self.logs / f"{vm}.writer.log"

    @property
    def supervisor_pid_file(self) -> Path:
        return self.run / "writers.pid"

    def make_dirs(self) -> None:
        for d in (self.disks, self.restores, self.snapshots):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.scripts, self.run, self.logs):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)

    # -- power -------------------------------------------------------------------------------

    def power(self, vm: str) -> str | None:
        try:
            word = self.power_file(vm).read_text().strip()
        except FileNotFoundError:
            return None
        return word if word in ("running", "stopped") else None

    def set_power(self, vm: str, state: str) -> None:
        if state not in ("running", "stopped"):
            raise ValueError(state)
        self.run.mkdir(parents=True, exist_ok=True)
        tmp = self.power_file(vm).with_suffix(".power.tmp")
        tmp.write_text(f"{state}\n")
        os.replace(tmp, self.power_file(vm))

    # -- writers -----------------------------------------------------------------------------

    def writer_pid(self, vm: str) -> int | None:
        """Pid of the VM's live writer, or None (a stale pid file is ignored)."""
        pid = read_pid(self.pid_file(vm))
        return pid if pid is not None and is_writer(pid) else None

    def supervisor_pid(self) -> int | None:
        pid = read_pid(self.supervisor_pid_file)
        if pid is None or not alive(pid):
            return None
        return pid if b"lab" in cmdline(pid) else None

    def frozen(self, vm: str) -> bool:
        return self.frozen_file(vm).exists()

    @contextlib.contextmanager
    def locked(self, vm: str, *, wait: float = FROZEN_WAIT) -> Iterator[None]:
        """Hold the VM's lab lock at a moment when no backup has it frozen."""
        self.run.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        with open(self.lock_file(vm), "a") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    if not self.frozen(vm):
                        break
                    fcntl.flock(f, fcntl.LOCK_UN)
                if time.monotonic() > deadline:
                    raise LabBusy(
                        f"{vm} is frozen by a backup (or locked) for more than {wait:.0f}s; "
                        f"if no backup runs, remove {self.frozen_file(vm)}"
                    )
                time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def paused(self, vm: str, *, wait: float = FROZEN_WAIT) -> Iterator[int | None]:
        """Pause the VM's writer (SIGSTOP) under the lab lock; yields its pid (or None)."""
        with self.locked(vm, wait=wait):
            pid = self.writer_pid(vm)
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)
                wait_stopped(pid)
            try:
                yield pid
            finally:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)

    def spawn_writer(
        self, vm: str, images: Sequence[Path | str], *, rate: float | None = None, detach: bool
    ) -> subprocess.Popen[bytes]:
        """Start the VM's writer.  ``detach``: in its own session, outliving the caller."""
        self.logs.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", MARKER, *map(str, images), "--pid-file"]
        argv.append(str(self.pid_file(vm)))
        if rate is not None:
            argv += ["--rate", str(rate)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with open(self.writer_log(vm), "ab") as log:
            return subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
                close_fds=True,
            )

    def wait_for_writer(self, vm: str, proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
        """Wait until the spawned writer has written its pid file; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.writer_pid(vm) == proc.pid:
                return proc.pid
            if proc.poll() is not None:
                tail = _tail(self.writer_log(vm))
                raise RuntimeError(f"writer for {vm} exited with {proc.returncode}: {tail}")
            time.sleep(0.02)
        raise RuntimeError(f"writer for {vm} did not start within {timeout:.0f}s")

    def stop_writer(self, vm: str, *, timeout: float = STOP_WAIT) -> int | None:
        """SIGTERM the VM's writer (continuing it first if paused); its pid, or None."""
        pid = self.writer_pid(vm)
        if pid is None:
            return None
        terminate(pid, timeout=timeout)
        with contextlib.suppress(FileNotFoundError):
            if read_pid(self.pid_file(vm)) == pid:
                self.pid_file(vm).unlink()
        return pid


# --------------------------------------------------------------------------- processes


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    return proc_state(pid) == "Z"


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def is_writer(pid: int) -> bool:
    return alive(pid) and MARKER.encode() in cmdline(pid)


def proc_state(pid: int) -> str:
    """One-letter state from /proc/PID/stat ("R", "S", "T", "Z", ...) or "" if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while proc_state(pid) not in ("T", "t", ""):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} did not stop within {timeout:.0f}s")
        time.sleep(0.005)


def terminate(pid: int, *, timeout: float = STOP_WAIT) -> None:
    """SIGTERM + SIGCONT, wait, SIGKILL after ``timeout``; reaps it if it is our child."""
    for sig in (signal.SIGTERM, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.02)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
