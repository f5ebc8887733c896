"""Backup-extension hooks: validation of the script configuration and running hook processes.

Validation mirrors Azure's Linux script plugin.  Checks run in this order and the first
problem found is reported:

1. ``invalid_configuration`` -- structure: ``script_timeout`` an int in 1..1800,
   ``script_retries`` an int in 0..5, ``freeze_timeout`` an int in 1..600, booleans are bools,
   params are a list/tuple of str without NUL (a bare string is rejected), params given for an
   absent script, script paths that are not absolute, commands that are not str, and a freeze
   command without a thaw command or the reverse (a freeze that can never be undone, or a thaw
   of nothing, is a configuration error).
2. For the pre-script, then the post-script (when configured):
   ``pre_script_not_found`` / ``post_script_not_found`` -- no regular file at the path
   (symlinks are followed);
   ``insecure_permissions`` -- the file, or any directory on the way to it (both the path as
   given and its symlink-resolved form), is not owned by root or by the user Lifeboat runs as,
   or is writable by group or others.  One exception: an *ancestor* directory with the sticky
   bit (``/tmp``) may be world-writable, because nobody else can rename entries in it; the
   script's own directory may never be.  Modes such as 0700 (Azure's requirement) or 0755 pass;
   0775, 0757 and 0777 do not.
   ``script_not_executable`` -- the file has no execute bit for us.

Processes are started in a new session (their own process group) with a clean environment:
``PATH`` (a fixed system path), ``LANG=C.UTF-8``, ``HOME`` (of the service user) and

* ``LIFEBOAT_VM``      -- the VM name,
* ``LIFEBOAT_PHASE``   -- ``pre``, ``post``, ``freeze``, ``thaw`` or ``probe``,
* ``LIFEBOAT_ATTEMPT`` -- 1-based attempt number (scripts are retried; other phases are 1).

On timeout the whole process group gets SIGTERM, then SIGKILL after a short grace.  Output
goes to temporary files rather than pipes so a background child that keeps a descriptor open
cannot hang the caller; the last lines of each stream end up in the hook log.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from engine.connectors.spec import (
    FREEZE_TIMEOUT_RANGE,
    INSECURE_PERMISSIONS,
    INVALID_CONFIGURATION,
    OK,
    POST_SCRIPT_NOT_FOUND,
    PRE_SCRIPT_NOT_FOUND,
    SCRIPT_NOT_EXECUTABLE,
    SCRIPT_RETRIES_RANGE,
    SCRIPT_TIMEOUT_RANGE,
    ExtensionStatus,
    HookConfig,
    VMSpec,
)

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE_SECONDS = 1.0
TAIL_LINES = 20
TAIL_BYTES = 4096

# Which part of the configuration a validation problem concerns: a broken script setup
# disables the scripts, a broken freeze setup disables the freeze.
AREA_SCRIPTS = "scripts"
AREA_FREEZE = "freeze"
AREA_GENERAL = "general"


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    area: str


# --------------------------------------------------------------------------- validation


def config_problems(h: HookConfig) -> list[Problem]:
    out: list[Problem] = []

    def bad(area: str, message: str) -> None:
        out.append(Problem(INVALID_CONFIGURATION, message, area))

    for name, (lo, hi), area in (
        ("script_timeout", SCRIPT_TIMEOUT_RANGE, AREA_SCRIPTS),
        ("script_retries", SCRIPT_RETRIES_RANGE, AREA_SCRIPTS),
        ("freeze_timeout", FREEZE_TIMEOUT_RANGE, AREA_FREEZE),
    ):
        value: object = getattr(h, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
            bad(area, f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    for name, area in (
        ("continue_on_failure", AREA_GENERAL),
        ("freeze_enabled", AREA_FREEZE),
    ):
        if not isinstance(getattr(h, name), bool):
            bad(area, f"{name} must be true or false, got {getattr(h, name)!r}")
    for script_name in ("pre_script", "post_script"):
        path: object = getattr(h, script_name)
        params: object = getattr(h, f"{script_name}_params")
        if not isinstance(path, str):
            bad(AREA_SCRIPTS, f"{script_name} must be a path string, got {path!r}")
            continue
        if path and (not os.path.isabs(path) or "\0" in path):
            bad(AREA_SCRIPTS, f"{script_name} must be an absolute path, got {path!r}")
        if not isinstance(params, list | tuple) or not all(
            isinstance(p, str) and "\0" not in p for p in params
        ):
            bad(AREA_SCRIPTS, f"{script_name}_params must be a list of strings, got {params!r}")
        elif params and not path:
            bad(AREA_SCRIPTS, f"{script_name}_params given but no {script_name} is configured")
    freeze: object = h.freeze_command
    thaw: object = h.thaw_command
    if not isinstance(freeze, str) or not isinstance(thaw, str):
        bad(AREA_FREEZE, "freeze_command and thaw_command must be strings")
    elif thaw.strip() and not freeze.strip():
        bad(AREA_FREEZE, "thaw_command is set but freeze_command is empty")
    elif freeze.strip() and not thaw.strip():
        bad(AREA_FREEZE, "freeze_command is set but thaw_command is empty; a freeze needs a thaw")
    return out


def _ancestors(path: str) -> list[str]:
    """Directories from the one holding ``path`` up to ``/``."""
    out: list[str] = []
    d = os.path.dirname(os.path.abspath(path))
    while True:
        out.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            return out
        d = parent


def _permission_problem(path: str) -> str | None:
    """Return why ``path`` (an existing regular file) is not trustworthy, or None."""
    allowed = {0, os.geteuid()}
    real = os.path.realpath(path)
    st = os.stat(real)
    if st.st_uid not in allowed:
        return f"{path} is owned by uid {st.st_uid}; it must be owned by root or uid {os.geteuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"use chmod 700"
        )
    checked: set[str] = set()
    for chain in (_ancestors(path), _ancestors(real)):
        for i, d in enumerate(chain):
            if d in checked:
                continue
            checked.add(d)
            ds = os.stat(d)
            if ds.st_uid not in allowed:
                return (
                    f"directory {d} holding {path} is owned by uid {ds.st_uid}; "
                    f"it must be owned by root or uid {os.geteuid()}"
                )
            writable = ds.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            sticky_ancestor = i > 0 and ds.st_mode & stat.S_ISVTX
            if writable and not sticky_ancestor:
                return (
                    f"directory {d} holding {path} is writable by group or others "
                    f"(mode {stat.S_IMODE(ds.st_mode):04o})"
                )
    return None


def _script_problem(path: str, not_found_code: str, label: str) -> Problem | None:
    try:
        st = os.stat(path)
    except OSError as exc:
        return Problem(not_found_code, f"{label} {path} not found ({exc.strerror})", AREA_SCRIPTS)
    if not stat.S_ISREG(st.st_mode):
        return Problem(not_found_code, f"{label} {path} is not a regular file", AREA_SCRIPTS)
    try:
        why = _permission_problem(path)
    except OSError as exc:
        why = f"cannot inspect {path} or its directories ({exc.strerror})"
    if why is not None:
        return Problem(INSECURE_PERMISSIONS, f"{label}: {why}", AREA_SCRIPTS)
    if not st.st_mode & 0o111 or not os.access(path, os.X_OK):
        return Problem(
            SCRIPT_NOT_EXECUTABLE,
            f"{label} {path} is not executable (mode {stat.S_IMODE(st.st_mode):04o})",
            AREA_SCRIPTS,
        )
    return None


def extension_problems(hooks: HookConfig) -> list[Problem]:
    """Every problem found, in reporting order (structural problems first)."""
    problems = config_problems(hooks)
    if any(p.area == AREA_SCRIPTS for p in problems):
        return problems  # paths are not inspected while the script setup itself is malformed
    for path, code, label in (
        (hooks.pre_script, PRE_SCRIPT_NOT_FOUND, "pre-script"),
        (hooks.post_script, POST_SCRIPT_NOT_FOUND, "post-script"),
    ):
        if path:
            p = _script_problem(path, code, label)
            if p is not None:
                problems.append(p)
    return problems


def validate_extension(vm: VMSpec) -> ExtensionStatus:
    """Check the VM's backup-extension configuration; see the module docstring for rules."""
    problems = extension_problems(vm.hooks)
    if problems:
        first = problems[0]
        return ExtensionStatus("failed", first.code, first.message)
    return ExtensionStatus("installed", OK, "backup extension configuration is valid")


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class RunResult:
    argv: tuple[str, ...]
    returncode: int | None  # None when it timed out or could not be started
    timed_out: bool
    seconds: float
    stdout: str  # tail
    stderr: str  # tail
    error: str = ""  # why it could not be started

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def clean_env(vm_name: str, phase: str, attempt: int = 1) -> dict[str, str]:
    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        home = "/"
    return {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "HOME": home,
        "LIFEBOAT_VM": vm_name,
        "LIFEBOAT_PHASE": phase,
        "LIFEBOAT_ATTEMPT": str(attempt),
    }


def _tail(f: IO[bytes]) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - TAIL_BYTES))
    text = f.read().decode("utf-8", "replace")
    lines = text.splitlines()
    if size > TAIL_BYTES and lines:
        lines = lines[1:]  # first line is probably cut
    return "\n".join(lines[-TAIL_LINES:])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone; make sure nothing it left in the group lingers.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return
    proc.wait()


def run_process(argv: Sequence[str], *, timeout: float, env: Mapping[str, str]) -> RunResult:
    """Run ``argv`` in its own process group; kill the group if it outlives ``timeout``."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env),
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return RunResult(tuple(argv), None, False, time.monotonic() - started, "", "", str(exc))
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        except BaseException:
            _kill_group(proc)
            raise
        return RunResult(
            argv=tuple(argv),
            returncode=None if timed_out else proc.returncode,
            timed_out=timed_out,
            seconds=time.monotonic() - started,
            stdout=_tail(out),
            stderr=_tail(err),
        )


def describe(
    phase: str, result: RunResult, *, label: str = "", attempt: int = 1, attempts: int = 1
) -> list[str]:
    """Hook-log lines for one run: a status line, then the output tails."""
    if result.error:
        status = f"could not start: {result.error}"
    elif result.timed_out:
        status = f"timed out after {result.seconds:.2f}s; process group killed"
    else:
        status = f"exit {result.returncode} after {result.seconds:.2f}s"
    tries = f" (attempt {attempt}/{attempts})" if attempts > 1 else ""
    what = label or (result.argv[0] if result.argv else "?")
    lines = [f"[{phase}] {what}: {status}{tries}"]
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        lines.extend(f"[{phase} {stream}] {line}" for line in text.splitlines())
    return lines
