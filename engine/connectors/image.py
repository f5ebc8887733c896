"""The image connector: a VM is a set of raw disk image files on this host plus its
backup-extension configuration (scripts and freeze/thaw commands run on this host).

Power probe
-----------
Without ``probe_command`` the declared state is used ("running", "stopped", anything else
"unknown").  Otherwise ``/bin/sh -c probe_command`` runs with a timeout (10 s by default) and:

* exit 0 with stdout (trimmed, any case) ``running`` or ``stopped`` -> that state;
* exit 0 with empty stdout -> ``running``;  exit 3 (LSB "not running") -> ``stopped``;
* exit 0 with other output, any other exit, a timeout or a failure to start -> ``unknown``.

An "unknown" VM is snapshotted as if it were running (hooks run).

Snapshot flow and consistency
-----------------------------
stopped VM: no hooks, ``capture`` reads the live images, consistency ``crash``, method
``stopped``.  ``crash_only``: no validation, no hooks; a reflink clone if possible, else a live
read; consistency ``crash``.  Otherwise:

1. validation (see hooks.py).  A problem with ``continue_on_failure`` False raises HookFailed
   before anything runs.  With True it becomes a warning and disables the part it concerns:
   a script problem disables both scripts, a freeze problem disables the freeze.
2. pre-script (argv = path + params, ``script_timeout`` per attempt, ``script_retries`` extra
   attempts on failure or timeout, no delay).  Failure: HookFailed (capture is never called)
   or, with continue_on_failure, a warning ``pre_script_failed``/``pre_script_timeout``.
3. freeze (``freeze_enabled`` and a ``freeze_command``): ``/bin/sh -c freeze_command``.  The
   freeze window is hard-limited to ``freeze_timeout`` seconds counted from the start of the
   freeze command (which is itself bounded by it); when it expires a watchdog runs the thaw
   and the snapshot gets warning ``freeze_timeout`` and consistency ``crash``.  A failing
   freeze gives warning ``freeze_failed`` and consistency ``crash``; the thaw command is still
   run at once, best effort, since a freeze may fail half-way.
4. point-in-time view: every disk is reflinked into a private directory under ``workdir``.
   If the file system cannot reflink, ``capture`` is called right here with the live paths
   while the freeze is held (method ``frozen_read``); with no freeze held that is a live read
   (method ``live_read``, warning ``live_read``, consistency ``crash``).
5. thaw (exactly once, in a ``finally``; bounded by max(freeze_timeout, 10) s).  Failure:
   warning ``thaw_failed``, logged at ERROR; consistency unchanged.
6. post-script (same rules as the pre-script; failure is only ever a warning
   ``post_script_failed``/``post_script_timeout``; consistency unchanged).  Once the hook
   phase has begun, the post-script runs whatever happens later -- pre-script failure
   (including the HookFailed case), cancellation or a failing capture -- because its job is
   to undo the pre-script.
7. with clones: ``capture`` gets the clone paths, then the clones are deleted.

``freeze_seconds`` runs from the start of the freeze command to the end of the thaw.

Consistency: ``application`` when a pre-script is configured and succeeded, the freeze (if
one is configured) succeeded within its limit, and the view is point-in-time (reflink or
frozen read).  A pre-script success without any freeze step (disabled or no command) is
``application`` too, as Azure names script success on Linux.  ``file_system`` when the freeze
succeeded but there is no successful pre-script (none, only a post-script, failed, or
disabled by validation).  ``crash`` otherwise: stopped VM, crash_only, freeze failed or timed
out, no freeze and no pre-script, or a live read.

``cancel`` is polled before each step; it raises SnapshotCancelled after undoing what was
started (thaw, post-script, clone removal).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from engine.connectors.hooks import (
    AREA_FREEZE,
    AREA_GENERAL,
    AREA_SCRIPTS,
    RunResult,
    clean_env,
    describe,
    extension_problems,
    run_process,
    validate_extension,
)
from engine.connectors.reflink import ReflinkUnsupported, reflink_clone
from engine.connectors.spec import (
    FREEZE_FAILED,
    FREEZE_TIMEOUT,
    LIVE_READ,
    POWER_STATES,
    THAW_FAILED,
    ConnectorError,
    Consistency,
    DiskView,
    ExtensionStatus,
    HookConfig,
    HookFailed,
    Method,
    SnapshotCancelled,
    SnapshotOutcome,
    VMSpec,
)

T = TypeVar("T")
Cloner = Callable[[Path, Path], None]
# Runs one script attempt: (argv, timeout, phase, attempt) -> what happened.
ScriptExecutor = Callable[[Sequence[str], float, str, int], RunResult]

log = logging.getLogger("lifeboat.connectors.image")

PROBE_TIMEOUT = 10.0
MIN_THAW_TIMEOUT = 10
STOPPED_EXIT_CODE = 3


def probe_power_state(vm: VMSpec, *, timeout: float = PROBE_TIMEOUT) -> str:
    """ "running", "stopped" or "unknown"; see the module docstring for the probe protocol."""
    if not vm.probe_command.strip():
        declared = vm.declared_power_state
        return declared if declared in POWER_STATES else "unknown"
    r = run_process(
        ["/bin/sh", "-c", vm.probe_command], timeout=timeout, env=clean_env(vm.name, "probe")
    )
    if r.returncode == STOPPED_EXIT_CODE:
        return "stopped"
    if r.returncode != 0:
        return "unknown"
    word = r.stdout.strip().lower()
    if word in ("running", "stopped"):
        return word
    return "running" if not word else "unknown"


class HookRun:
    """Warnings and hook log of one snapshot, shared with the freeze watchdog thread.

    ``execute`` runs one script attempt: on this host by default; the libvirt connector runs
    it inside the guest through the QEMU guest agent."""

    def __init__(
        self,
        vm: VMSpec,
        cancel: Callable[[], bool] | None,
        execute: ScriptExecutor | None = None,
    ) -> None:
        self.vm = vm
        self.cancel = cancel
        self.execute = execute or self._run_here
        self.warnings: list[tuple[str, str]] = []
        self.log: list[str] = []
        self._lock = threading.Lock()

    def warn(self, code: str, message: str) -> None:
        with self._lock:
            self.warnings.append((code, message))
        log.warning("%s: %s: %s", self.vm.name, code, message)

    def lines(self, lines: Sequence[str]) -> None:
        with self._lock:
            self.log.extend(lines)

    def _run_here(self, argv: Sequence[str], timeout: float, phase: str, attempt: int) -> RunResult:
        return run_process(argv, timeout=timeout, env=clean_env(self.vm.name, phase, attempt))

    def fail(self, exc: ConnectorError) -> ConnectorError:
        # Share the lists: what happens while unwinding (thaw, post-script) still shows up.
        exc.warnings = self.warnings
        exc.hook_log = self.log
        return exc

    def check(self, step: str) -> None:
        if self.cancel is not None and self.cancel():
            self.lines([f"[cancel] cancelled before {step}"])
            raise self.fail(SnapshotCancelled(step))

    def script(
        self, phase: str, path: str, params: Sequence[str], *, cancellable: bool = True
    ) -> tuple[str, str] | None:
        """Run a pre/post script with retries; None on success, else (code, message).

        ``cancellable`` False is for the post-script run while unwinding: it must finish its
        retries whatever ``cancel`` says.
        """
        h = self.vm.hooks
        attempts = h.script_retries + 1
        for attempt in range(1, attempts + 1):
            if attempt > 1 and cancellable:
                self.check(f"{phase}-script attempt {attempt}")
            r = self.execute([path, *params], h.script_timeout, phase, attempt)
            self.lines(describe(phase, r, attempt=attempt, attempts=attempts))
            if r.ok:
                return None
        if r.timed_out:
            code = f"{phase}_script_timeout"
            what = f"timed out after {h.script_timeout}s"
        else:
            code = f"{phase}_script_failed"
            what = r.error or f"exited with {r.returncode}"
        tail = r.stderr.strip().splitlines()[-1:] or r.stdout.strip().splitlines()[-1:]
        detail = f": {tail[0]}" if tail else ""
        tries = f" on all {attempts} attempts" if attempts > 1 else ""
        return code, f"{phase}-script {path} {what}{tries}{detail}"


class _Freeze:
    """One freeze/thaw cycle with a watchdog that forces the thaw after freeze_timeout."""

    def __init__(self, run: HookRun, hooks: HookConfig) -> None:
        self.run = run
        self.hooks = hooks
        self.ok = False
        self.forced = False
        self.started = 0.0
        self.ended = 0.0
        self._thawed = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended - self.started) if self.started else 0.0

    def freeze(self) -> bool:
        h = self.hooks
        self.started = time.monotonic()
        r = run_process(
            ["/bin/sh", "-c", h.freeze_command],
            timeout=h.freeze_timeout,
            env=clean_env(self.run.vm.name, "freeze"),
        )
        self.run.lines(describe("freeze", r, label=h.freeze_command))
        if not r.ok:
            why = f"timed out after {h.freeze_timeout}s" if r.timed_out else None
            why = why or r.error or f"exited with {r.returncode}"
            tail = r.stderr.strip().splitlines()[-1:]
            detail = f": {tail[0]}" if tail else ""
            self.run.warn(FREEZE_FAILED, f"freeze command {h.freeze_command!r} {why}{detail}")
            self.thaw()
            return False
        self.ok = True
        remaining = h.freeze_timeout - (time.monotonic() - self.started)
        self._timer = threading.Timer(max(0.0, remaining), self._expire)
        self._timer.daemon = True
        self._timer.start()
        return True

    def _expire(self) -> None:
        with self._lock:
            if self._thawed:
                return
            self.forced = True
            self.run.warn(
                FREEZE_TIMEOUT,
                f"freeze held longer than freeze_timeout={self.hooks.freeze_timeout}s; "
                f"thaw forced while the snapshot was still being taken",
            )
            self._thaw_locked()

    def thaw(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if not self._thawed:
                self._thaw_locked()

    def _thaw_locked(self) -> None:
        self._thawed = True
        h = self.hooks
        r = run_process(
            ["/bin/sh", "-c", h.thaw_command],
            timeout=max(h.freeze_timeout, MIN_THAW_TIMEOUT),
            env=clean_env(self.run.vm.name, "thaw"),
        )
        self.ended = time.monotonic()
        self.run.lines(describe("thaw", r, label=h.thaw_command))
        if not r.ok:
            why = "timed out" if r.timed_out else (r.error or f"exited with {r.returncode}")
            tail = r.stderr.strip().splitlines()[-1:]
            detail = f": {tail[0]}" if tail else ""
            message = (
                f"THAW FAILED for VM {self.run.vm.name}: thaw command {h.thaw_command!r} {why}"
                f"{detail}; guest file systems may still be frozen"
            )
            log.error(message)
            self.run.lines([f"[thaw] !!! {message}"])
            self.run.warn(THAW_FAILED, message)


def _live_views(vm: VMSpec) -> list[DiskView]:
    return [DiskView(d.lun, Path(d.path), Path(d.path), False) for d in vm.disks]


def _clone_all(vm: VMSpec, into: Path, clone: Cloner) -> list[DiskView] | None:
    """Clone every disk into ``into``; None (and nothing left behind) if reflink is impossible."""
    views: list[DiskView] = []
    try:
        for i, d in enumerate(vm.disks):
            src = Path(d.path)
            dst = into / f"{i:02d}-lun{d.lun}-{src.name}"
            clone(src, dst)
            views.append(DiskView(d.lun, dst, src, True))
    except ReflinkUnsupported:
        for v in views:
            v.path.unlink(missing_ok=True)
        return None
    return views


def take_snapshot(
    vm: VMSpec,
    *,
    crash_only: bool,
    workdir: Path,
    capture: Callable[[list[DiskView]], T],
    cancel: Callable[[], bool] | None = None,
    clone: Cloner | None = None,
) -> SnapshotOutcome[T]:
    """Take a point-in-time snapshot of ``vm`` and hand it to ``capture``.

    ``clone`` replaces the reflink cloner (it must raise ReflinkUnsupported when it cannot
    clone); the default is :func:`reflink_clone`.  Raises HookFailed, SnapshotCancelled,
    ConnectorError("disk_not_found") or whatever ``capture`` raises.
    """
    run = HookRun(vm, cancel)
    run.check("start")
    missing = [str(d.path) for d in vm.disks if not Path(d.path).is_file()]
    if missing:
        raise run.fail(ConnectorError("disk_not_found", f"disk image(s) missing: {missing}"))
    power = probe_power_state(vm)
    if power == "stopped":
        run.lines(["[snapshot] VM is stopped: no hooks, reading the images directly"])
        result = capture(_live_views(vm))
        return SnapshotOutcome("crash", "stopped", power, result, run.warnings, 0.0, run.log)

    h = vm.hooks
    scripts_usable, freeze_usable = (False, False) if crash_only else _usable_hooks(run, h)
    freezer = _Freeze(run, h) if freeze_usable else None
    post = PostScript(run, h)
    pre_ok = False
    clone_dir: Path | None = None
    method: Method
    try:
        if scripts_usable:
            post.due = bool(h.post_script)
            pre_ok = run_pre_script(run, h)
        run.check("freeze")
        if freezer is not None:
            freezer.freeze()
        run.check("point-in-time view")
        workdir.mkdir(parents=True, exist_ok=True)
        clone_dir = Path(tempfile.mkdtemp(prefix="snap-", dir=workdir))
        views = _clone_all(vm, clone_dir, clone or reflink_clone)
        if views is None:
            # No clone: the images are read now, while the freeze (if any) is held.
            method = _live_method(run, freezer)
            result = capture(_live_views(vm))
        else:
            method = "reflink"
        if freezer is not None:
            freezer.thaw()
        post.run_once()
        if views is not None:
            run.check("capture")
            run.lines([f"[snapshot] reflink: capture reads {len(views)} clone(s)"])
            result = capture(views)
    finally:
        _unwind(freezer, post, clone_dir)

    return SnapshotOutcome(
        consistency=_consistency(crash_only, method, freezer, pre_ok),
        method=method,
        power_state=power,
        result=result,
        warnings=run.warnings,
        freeze_seconds=freezer.seconds if freezer is not None else 0.0,
        hook_log=run.log,
    )


def _usable_hooks(run: HookRun, h: HookConfig) -> tuple[bool, bool]:
    """(scripts usable, freeze usable) after validation. A problem stops the snapshot, or with
    continue_on_failure becomes a warning that disables the part it concerns."""
    problems = extension_problems(h)
    if problems and h.continue_on_failure is not True:
        raise run.fail(HookFailed(problems[0].code, problems[0].message))
    areas = {p.area for p in problems}
    for p in problems:
        effect = "scripts skipped" if p.area == AREA_SCRIPTS else "freeze skipped"
        run.warn(p.code, f"{p.message}; {effect}")
    scripts_usable = not areas & {AREA_SCRIPTS, AREA_GENERAL}
    freeze_usable = h.freeze_configured and not areas & {AREA_FREEZE, AREA_GENERAL}
    return scripts_usable, freeze_usable


def run_pre_script(run: HookRun, h: HookConfig) -> bool:
    """Run the pre-script, if any; True when it ran and succeeded. A failure stops the
    snapshot (HookFailed) unless continue_on_failure makes it a warning."""
    if not h.pre_script:
        return False
    failure = run.script("pre", h.pre_script, h.pre_script_params)
    if failure is None:
        return True
    if not h.continue_on_failure:
        raise run.fail(HookFailed(*failure))
    run.warn(*failure)
    return False


class PostScript:
    """The post-script runs at most once, and once the hook phase began it runs whatever
    happens later: its job is to undo the pre-script."""

    def __init__(self, run: HookRun, hooks: HookConfig) -> None:
        self.run = run
        self.hooks = hooks
        self.due = False

    def run_once(self, *, cancellable: bool = True) -> None:
        if not self.due:
            return
        self.due = False
        h = self.hooks
        failure = self.run.script(
            "post", h.post_script, h.post_script_params, cancellable=cancellable
        )
        if failure is not None:
            self.run.warn(*failure)


def _live_method(run: HookRun, freezer: _Freeze | None) -> Method:
    """How live images are read: under a held freeze, or while the VM runs (a warning)."""
    frozen = freezer is not None and freezer.ok
    method: Method = "frozen_read" if frozen else "live_read"
    if not frozen:
        run.warn(
            LIVE_READ,
            "no reflink support and no freeze held: images read while the VM runs; "
            "the backup is not a point-in-time copy",
        )
    run.lines([f"[snapshot] {method}: capture reads the live images"])
    return method


def _unwind(freezer: _Freeze | None, post: PostScript, clone_dir: Path | None) -> None:
    """Undo what a snapshot started, on success or failure: thaw (a no-op once thawed), the
    post-script if it is still due (not cancellable: it must finish), the clones."""
    try:
        if freezer is not None:
            freezer.thaw()
        post.run_once(cancellable=False)
    finally:
        if clone_dir is not None:
            shutil.rmtree(clone_dir, ignore_errors=True)


def _consistency(
    crash_only: bool, method: Method, freezer: _Freeze | None, pre_ok: bool
) -> Consistency:
    """See the module docstring: application, file_system or crash."""
    if crash_only or method == "live_read":
        return "crash"
    if freezer is not None and (not freezer.ok or freezer.forced):
        return "crash"
    if pre_ok:
        return "application"
    if freezer is not None:
        return "file_system"
    return "crash"


class ImageConnector:
    """Connector for VMs that are raw image files on this host."""

    kind = "image"

    def probe_power_state(self, vm: VMSpec) -> str:
        return probe_power_state(vm)

    def validate_extension(self, vm: VMSpec) -> ExtensionStatus:
        return validate_extension(vm)

    def take_snapshot(
        self,
        vm: VMSpec,
        *,
        crash_only: bool,
        workdir: Path,
        capture: Callable[[list[DiskView]], T],
        cancel: Callable[[], bool] | None = None,
    ) -> SnapshotOutcome[T]:
        return take_snapshot(
            vm, crash_only=crash_only, workdir=workdir, capture=capture, cancel=cancel
        )
