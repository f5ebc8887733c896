"""Image connector: validation, power probe and the snapshot flow, with real scripts and files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.connectors import (
    Connector,
    ConnectorError,
    DiskSpec,
    DiskView,
    HookConfig,
    HookFailed,
    ImageConnector,
    ReflinkUnsupported,
    SnapshotCancelled,
    UnknownConnector,
    VMSpec,
    connector_for,
    probe_power_state,
    reflink_clone,
    reflink_supported,
    take_snapshot,
    validate_extension,
)

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers


class Box:
    """Scripts, disks and marker files of one test VM."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scripts = root / "scripts"
        self.scripts.mkdir(mode=0o700)
        self.marks = root / "marks"
        self.marks.mkdir()
        self.disks_dir = root / "disks"
        self.disks_dir.mkdir()
        self.workdir = root / "work"
        self.disks = []
        for lun, content in ((-1, b"os-disk" * 1000), (0, b"data-disk" * 500)):
            p = self.disks_dir / f"lun{lun}.img"
            p.write_bytes(content)
            self.disks.append(DiskSpec(lun, p))

    def script(self, name: str, body: str, mode: int = 0o700) -> str:
        p = self.scripts / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(mode)
        return str(p)

    def stamp(self, name: str, extra: str = "") -> str:
        """Shell snippet appending a wall-clock timestamp to marks/<name>."""
        return f"date +%s.%N >> {self.marks / name}{extra}"

    def marker_script(self, name: str, rc: int = 0) -> str:
        return self.script(f"{name}.sh", f"{self.stamp(name)}\nexit {rc}")

    def times(self, name: str) -> list[float]:
        p = self.marks / name
        return [float(x) for x in p.read_text().split()] if p.exists() else []

    def ran(self, name: str) -> bool:
        return (self.marks / name).exists()

    def vm(self, state: str = "running", probe: str = "", **hooks: Any) -> VMSpec:
        return VMSpec(
            name="vm1",
            declared_power_state=state,
            probe_command=probe,
            disks=self.disks,
            hooks=HookConfig(**hooks),
        )

    def freeze_thaw(self, freeze_rc: int = 0, thaw_rc: int = 0) -> dict[str, Any]:
        return {
            "freeze_command": f"{self.stamp('freeze')}; exit {freeze_rc}",
            "thaw_command": f"{self.stamp('thaw')}; exit {thaw_rc}",
        }


class Recorder:
    def __init__(self, sleep: float = 0.0) -> None:
        self.calls: list[tuple[float, list[DiskView], list[bytes]]] = []
        self.sleep = sleep

    def __call__(self, views: list[DiskView]) -> str:
        t = time.time()
        data = [v.path.read_bytes() for v in views]
        if self.sleep:
            time.sleep(self.sleep)
        self.calls.append((t, views, data))
        return "captured"


def no_reflink(src: Path, dst: Path) -> None:
    raise ReflinkUnsupported(95, "test file system without reflink")


def copy_clone(src: Path, dst: Path) -> None:
    """A real (if not copy-on-write) point-in-time copy, standing in for a reflink."""
    shutil.copyfile(src, dst)


def codes(warnings: list[tuple[str, str]]) -> list[str]:
    return [c for c, _ in warnings]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


# --------------------------------------------------------------------------- validation


def test_valid_configuration_is_installed(box: Box) -> None:
    vm = box.vm(
        pre_script=box.marker_script("pre"),
        pre_script_params=["--db", "main"],
        post_script=box.marker_script("post"),
        **box.freeze_thaw(),
    )
    status = validate_extension(vm)
    assert (status.state, status.code, status.ok) == ("installed", "ok", True)
    assert validate_extension(box.vm()).ok  # nothing configured is valid too


def test_script_readable_by_others_but_not_writable_is_accepted(box: Box) -> None:
    assert validate_extension(box.vm(pre_script=box.marker_script("pre"))).ok
    os.chmod(box.scripts / "pre.sh", 0o755)
    assert validate_extension(box.vm(pre_script=str(box.scripts / "pre.sh"))).ok


@pytest.mark.parametrize("which", ["pre", "post"])
def test_script_not_found(box: Box, which: str) -> None:
    missing = str(box.scripts / "nope.sh")
    status = validate_extension(box.vm(**{f"{which}_script": missing}))
    assert (status.state, status.code) == ("failed", f"{which}_script_not_found")
    assert missing in status.message


def test_directory_instead_of_script_is_not_found(box: Box) -> None:
    status = validate_extension(box.vm(pre_script=str(box.scripts)))
    assert status.code == "pre_script_not_found"


def test_script_not_executable(box: Box) -> None:
    path = box.script("pre.sh", "exit 0", mode=0o600)
    status = validate_extension(box.vm(post_script=path))
    assert status.code == "script_not_executable"
    assert path in status.message


@pytest.mark.parametrize("mode", [0o777, 0o720, 0o702])
def test_script_writable_by_group_or_others_is_insecure(box: Box, mode: int) -> None:
    path = box.script("pre.sh", "exit 0", mode=mode)
    status = validate_extension(box.vm(pre_script=path))
    assert status.code == "insecure_permissions"
    assert path in status.message


@pytest.mark.parametrize("mode", [0o770, 0o1777])
def test_script_directory_writable_by_others_is_insecure(box: Box, mode: int) -> None:
    path = box.script("pre.sh", "exit 0")
    box.scripts.chmod(mode)  # sticky does not save the script's own directory
    status = validate_extension(box.vm(pre_script=path))
    assert status.code == "insecure_permissions"
    assert str(box.scripts) in status.message


def test_sticky_world_writable_ancestor_is_accepted(box: Box) -> None:
    sticky = box.root / "shared"
    sticky.mkdir()
    sticky.chmod(0o1777)
    inner = sticky / "mine"
    inner.mkdir(mode=0o700)
    path = inner / "pre.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o700)
    assert validate_extension(box.vm(pre_script=str(path))).ok
    sticky.chmod(0o777)  # without the sticky bit the same ancestor is a hole
    assert validate_extension(box.vm(pre_script=str(path))).code == "insecure_permissions"


def test_symlink_to_insecure_location_is_insecure(box: Box) -> None:
    open_dir = box.root / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    target = open_dir / "real.sh"
    target.write_text("#!/bin/sh\nexit 0\n")
    target.chmod(0o700)
    link = box.scripts / "pre.sh"
    link.symlink_to(target)
    assert validate_extension(box.vm(pre_script=str(link))).code == "insecure_permissions"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_script_owned_by_someone_else_is_insecure(box: Box) -> None:
    path = box.script("pre.sh", "exit 0")
    os.chown(path, 65534, 65534)
    status = validate_extension(box.vm(pre_script=path))
    assert status.code == "insecure_permissions"
    assert "owned by uid 65534" in status.message
    os.chown(path, 0, 0)
    os.chown(box.scripts, 65534, 65534)
    assert validate_extension(box.vm(pre_script=path)).code == "insecure_permissions"


@pytest.mark.parametrize(
    "hooks",
    [
        {"script_timeout": 0},
        {"script_timeout": 1801},
        {"script_timeout": True},
        {"script_retries": 6},
        {"script_retries": -1},
        {"freeze_timeout": 0},
        {"freeze_timeout": "60"},
        {"thaw_command": "echo thaw"},
        {"freeze_command": "echo freeze"},
        {"pre_script_params": "--all"},
        {"pre_script_params": ["ok", 3]},
        {"post_script_params": ["x"]},  # params without a script
        {"pre_script": "relative/pre.sh"},
        {"continue_on_failure": "yes"},
        {"freeze_enabled": 1},
    ],
)
def test_invalid_configuration(box: Box, hooks: dict[str, Any]) -> None:
    hooks = dict(hooks)
    if "pre_script_params" in hooks:
        hooks["pre_script"] = box.marker_script("pre")
    status = validate_extension(box.vm(**hooks))
    assert (status.state, status.code) == ("failed", "invalid_configuration")
    key = next(iter(hooks))
    assert key.split("_")[0] in status.message


def test_boundary_values_are_valid(box: Box) -> None:
    bounds: list[dict[str, Any]] = [
        {"script_timeout": 1, "script_retries": 0, "freeze_timeout": 1},
        {"script_timeout": 1800, "script_retries": 5, "freeze_timeout": 600},
    ]
    for hooks in bounds:
        assert validate_extension(box.vm(**hooks)).ok


# --------------------------------------------------------------------------- power probe


@pytest.mark.parametrize(
    ("command", "state"),
    [
        ("echo running", "running"),
        ("echo '  Stopped '", "stopped"),
        ("true", "running"),
        ("exit 3", "stopped"),
        ("echo running; exit 3", "stopped"),
        ("echo 'shut off'", "unknown"),
        ("exit 1", "unknown"),
        ("/nonexistent/probe", "unknown"),
    ],
)
def test_probe_command(box: Box, command: str, state: str) -> None:
    assert probe_power_state(box.vm(state="running", probe=command)) == state


def test_probe_timeout_is_unknown(box: Box) -> None:
    started = time.monotonic()
    assert probe_power_state(box.vm(probe="sleep 10"), timeout=0.3) == "unknown"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("declared", "state"),
    [("running", "running"), ("stopped", "stopped"), ("unknown", "unknown"), ("off", "unknown")],
)
def test_probe_without_command_uses_declared_state(box: Box, declared: str, state: str) -> None:
    assert probe_power_state(box.vm(state=declared)) == state


def test_probe_sees_clean_environment(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFEBOAT_SECRET", "leak")
    cmd = '[ -z "$LIFEBOAT_SECRET" ] && [ "$LIFEBOAT_PHASE" = probe ] && echo running'
    assert probe_power_state(box.vm(probe=cmd)) == "running"


# --------------------------------------------------------------------------- snapshot flow


def test_pre_ok_and_freeze_ok_is_application_frozen_read(box: Box) -> None:
    vm = box.vm(
        pre_script=box.marker_script("pre"),
        post_script=box.marker_script("post"),
        **box.freeze_thaw(),
    )
    cap = Recorder(sleep=0.05)
    out = take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap, clone=no_reflink)
    assert (out.consistency, out.method, out.result) == ("application", "frozen_read", "captured")
    assert out.warnings == []
    ((t, views, data),) = cap.calls
    assert [v.path for v in views] == [d.path for d in box.disks]
    assert not any(v.cloned for v in views)
    assert data == [d.path.read_bytes() for d in box.disks]
    (pre,), (freeze,), (thaw,), (post,) = (box.times(n) for n in ("pre", "freeze", "thaw", "post"))
    assert pre <= freeze <= t <= thaw <= post  # capture happened inside the freeze
    assert out.freeze_seconds >= 0.05
    assert any(line.startswith("[pre]") for line in out.hook_log)


def test_default_cloner_picks_reflink_or_frozen_read(box: Box) -> None:
    vm = box.vm(**box.freeze_thaw())
    cap = Recorder()
    out = take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap)
    ((t, views, data),) = cap.calls
    (freeze,), (thaw,) = box.times("freeze"), box.times("thaw")
    assert data == [d.path.read_bytes() for d in box.disks]
    if reflink_supported(box.disks_dir):
        assert out.method == "reflink"
        assert all(v.cloned for v in views) and t >= thaw
        assert not any(v.path.exists() for v in views)
    else:
        assert out.method == "frozen_read"
        assert not any(v.cloned for v in views) and freeze <= t <= thaw
    assert out.consistency == "file_system"
    assert list(box.workdir.iterdir()) == []


def test_reflink_path_captures_clones_after_thaw_and_post_then_deletes_them(box: Box) -> None:
    vm = box.vm(
        pre_script=box.marker_script("pre"),
        post_script=box.marker_script("post"),
        **box.freeze_thaw(),
    )
    cap = Recorder()
    out = take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap, clone=copy_clone)
    assert (out.consistency, out.method) == ("application", "reflink")
    ((t, views, data),) = cap.calls
    assert all(v.cloned and v.path != v.source for v in views)
    assert all(v.path.is_relative_to(box.workdir) for v in views)
    assert [v.lun for v in views] == [-1, 0]
    assert data == [d.path.read_bytes() for d in box.disks]
    assert box.times("thaw")[0] <= box.times("post")[0] <= t
    assert not any(v.path.exists() for v in views)
    assert list(box.workdir.iterdir()) == []


def test_real_reflink_clone_or_unsupported(box: Box) -> None:
    src = box.disks[0].path
    dst = box.root / "clone.img"
    try:
        reflink_clone(src, dst)
    except ReflinkUnsupported:
        assert not dst.exists()
        assert not reflink_supported(box.disks_dir)
    else:
        assert dst.read_bytes() == src.read_bytes()
        assert reflink_supported(box.disks_dir)


def test_no_scripts_freeze_ok_is_file_system(box: Box) -> None:
    cap = Recorder()
    out = take_snapshot(
        box.vm(**box.freeze_thaw()),
        crash_only=False,
        workdir=box.workdir,
        capture=cap,
        clone=no_reflink,
    )
    assert (out.consistency, out.method, out.warnings) == ("file_system", "frozen_read", [])


def test_only_post_script_and_freeze_is_file_system(box: Box) -> None:
    vm = box.vm(post_script=box.marker_script("post"), **box.freeze_thaw())
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert out.consistency == "file_system"
    assert box.ran("post")


def test_pre_fails_with_continue_is_file_system_with_warning(box: Box) -> None:
    vm = box.vm(
        pre_script=box.script("pre.sh", "echo 'database refused' >&2; exit 7"),
        post_script=box.marker_script("post"),
        **box.freeze_thaw(),
    )
    cap = Recorder()
    out = take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap, clone=no_reflink)
    assert out.consistency == "file_system"
    assert codes(out.warnings) == ["pre_script_failed"]
    message = out.warnings[0][1]
    assert "pre.sh" in message and "7" in message and "database refused" in message
    assert "[pre stderr] database refused" in out.hook_log
    assert len(cap.calls) == 1 and box.ran("post")


def test_pre_fails_without_continue_raises_and_captures_nothing(box: Box) -> None:
    vm = box.vm(
        pre_script=box.script("pre.sh", "exit 1"),
        post_script=box.marker_script("post"),
        continue_on_failure=False,
        **box.freeze_thaw(),
    )
    cap = Recorder()
    with pytest.raises(HookFailed) as info:
        take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap, clone=no_reflink)
    assert info.value.code == "pre_script_failed"
    assert "pre.sh" in info.value.message
    assert cap.calls == []
    assert not box.ran("freeze")
    assert box.ran("post")  # the post-script undoes whatever the pre-script did


def test_pre_script_timeout_kills_process_group(box: Box) -> None:
    pid_file, child_file = box.marks / "pid", box.marks / "child"
    body = f"sleep 30 &\necho $! > {child_file}\necho $$ > {pid_file}\nwait"
    vm = box.vm(pre_script=box.script("pre.sh", body), script_timeout=1, **box.freeze_thaw())
    started = time.monotonic()
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert time.monotonic() - started < 5
    assert codes(out.warnings) == ["pre_script_timeout"]
    assert "timed out after 1s" in out.warnings[0][1]
    assert out.consistency == "file_system"
    assert gone(int(pid_file.read_text())) and gone(int(child_file.read_text()))


def test_pre_script_timeout_without_continue(box: Box) -> None:
    vm = box.vm(
        pre_script=box.script("pre.sh", "exec sleep 30"),
        script_timeout=1,
        continue_on_failure=False,
    )
    with pytest.raises(HookFailed) as info:
        take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=Recorder())
    assert info.value.code == "pre_script_timeout"


def test_retries_then_success(box: Box) -> None:
    counter = box.marks / "count"
    body = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}\n"
        f'echo "attempt $LIFEBOAT_ATTEMPT" >> {box.marks / "attempts"}\n'
        '[ "$n" -ge 2 ]'
    )
    vm = box.vm(pre_script=box.script("pre.sh", body), script_retries=2, **box.freeze_thaw())
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert counter.read_text().strip() == "2"
    assert (box.marks / "attempts").read_text().split("\n")[:2] == ["attempt 1", "attempt 2"]
    assert (out.consistency, out.warnings) == ("application", [])
    assert any("(attempt 1/3)" in line for line in out.hook_log)


def test_retries_exhausted(box: Box) -> None:
    counter = box.marks / "count"
    body = f"echo x >> {counter}; exit 2"
    vm = box.vm(pre_script=box.script("pre.sh", body), script_retries=1, **box.freeze_thaw())
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert len(counter.read_text().split()) == 2
    assert codes(out.warnings) == ["pre_script_failed"]
    assert "all 2 attempts" in out.warnings[0][1]


def test_freeze_failure_is_crash_and_thaw_still_runs(box: Box) -> None:
    vm = box.vm(pre_script=box.marker_script("pre"), **box.freeze_thaw(freeze_rc=1))
    cap = Recorder()
    out = take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap, clone=copy_clone)
    assert out.consistency == "crash"
    assert codes(out.warnings) == ["freeze_failed"]
    assert box.ran("thaw") and len(cap.calls) == 1


def test_thaw_failure_is_loud_warning_and_keeps_consistency(
    box: Box, caplog: pytest.LogCaptureFixture
) -> None:
    vm = box.vm(pre_script=box.marker_script("pre"), **box.freeze_thaw(thaw_rc=4))
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert out.consistency == "application"
    assert codes(out.warnings) == ["thaw_failed"]
    assert "may still be frozen" in out.warnings[0][1]
    assert any("THAW FAILED" in r.message and r.levelname == "ERROR" for r in caplog.records)
    assert any("!!!" in line for line in out.hook_log)


@pytest.mark.parametrize(
    ("body", "code"), [("exit 5", "post_script_failed"), ("exec sleep 30", "post_script_timeout")]
)
def test_post_script_failure_is_warning(box: Box, body: str, code: str) -> None:
    vm = box.vm(
        pre_script=box.marker_script("pre"),
        post_script=box.script("post.sh", body),
        script_timeout=1,
        **box.freeze_thaw(),
    )
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert (out.consistency, codes(out.warnings)) == ("application", [code])


def test_freeze_hard_timeout_forces_thaw(box: Box) -> None:
    vm = box.vm(pre_script=box.marker_script("pre"), freeze_timeout=1, **box.freeze_thaw())
    cap = Recorder(sleep=2.5)
    out = take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap, clone=no_reflink)
    done = time.time()
    ((start, _, _),) = cap.calls
    (freeze,), (thaw,) = box.times("freeze"), box.times("thaw")  # thawed exactly once
    assert start < thaw < done - 0.3  # thaw came while capture was still reading
    assert 0.9 < thaw - freeze < 2.0
    assert codes(out.warnings) == ["freeze_timeout"]
    assert out.consistency == "crash"


def test_stopped_vm_runs_no_hooks(box: Box) -> None:
    hooks = {
        "pre_script": box.marker_script("pre"),
        "post_script": box.marker_script("post"),
        **box.freeze_thaw(),
    }
    for vm in (box.vm(state="stopped", **hooks), box.vm(probe="exit 3", **hooks)):
        cap = Recorder()
        out = take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap)
        assert (out.consistency, out.method, out.power_state) == ("crash", "stopped", "stopped")
        assert [v.path for v in cap.calls[0][1]] == [d.path for d in box.disks]
    assert not any(box.ran(n) for n in ("pre", "post", "freeze", "thaw"))


def test_crash_only_runs_no_hooks(box: Box) -> None:
    vm = box.vm(
        pre_script=box.marker_script("pre"),
        post_script=box.marker_script("post"),
        **box.freeze_thaw(),
    )
    out = take_snapshot(
        vm, crash_only=True, workdir=box.workdir, capture=Recorder(), clone=copy_clone
    )
    assert (out.consistency, out.method, out.warnings) == ("crash", "reflink", [])
    assert not any(box.ran(n) for n in ("pre", "post", "freeze", "thaw"))
    out = take_snapshot(
        vm, crash_only=True, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert (out.consistency, out.method, codes(out.warnings)) == (
        "crash",
        "live_read",
        ["live_read"],
    )


def test_scripts_ok_without_freeze(box: Box) -> None:
    pre = box.marker_script("pre")
    for vm in (
        box.vm(pre_script=pre),
        box.vm(pre_script=pre, freeze_enabled=False, **box.freeze_thaw()),
    ):
        out = take_snapshot(
            vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=copy_clone
        )
        assert (out.consistency, out.method, out.freeze_seconds) == ("application", "reflink", 0.0)
        out = take_snapshot(
            vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
        )
        assert (out.consistency, out.method) == ("crash", "live_read")
    assert not box.ran("freeze")


def test_nothing_configured_is_crash(box: Box) -> None:
    out = take_snapshot(
        box.vm(), crash_only=False, workdir=box.workdir, capture=Recorder(), clone=copy_clone
    )
    assert (out.consistency, out.method, out.warnings) == ("crash", "reflink", [])


def test_unknown_power_state_runs_hooks(box: Box) -> None:
    vm = box.vm(state="unknown", pre_script=box.marker_script("pre"), **box.freeze_thaw())
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert (out.power_state, out.consistency) == ("unknown", "application")


def test_script_environment_and_params(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFEBOAT_SECRET", "leak")
    env_out = box.marks / "env"
    body = f'env > {env_out}\nfor a in "$@"; do echo "arg:$a" >> {box.marks / "args"}; done'
    vm = box.vm(
        pre_script=box.script("pre.sh", body),
        pre_script_params=["--db", "two words"],
    )
    take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=copy_clone)
    env = dict(line.split("=", 1) for line in env_out.read_text().splitlines() if "=" in line)
    assert env["LIFEBOAT_VM"] == "vm1" and env["LIFEBOAT_PHASE"] == "pre"
    assert env["LIFEBOAT_ATTEMPT"] == "1" and "LIFEBOAT_SECRET" not in env
    assert (box.marks / "args").read_text().splitlines() == ["arg:--db", "arg:two words"]


def test_invalid_extension_with_continue_skips_scripts_keeps_freeze(box: Box) -> None:
    vm = box.vm(
        pre_script=box.script("pre.sh", f"{box.stamp('pre')}", mode=0o777),
        post_script=box.marker_script("post"),
        **box.freeze_thaw(),
    )
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=no_reflink
    )
    assert codes(out.warnings) == ["insecure_permissions"]
    assert out.consistency == "file_system"
    assert not box.ran("pre") and not box.ran("post") and box.ran("freeze")


def test_invalid_freeze_config_with_continue_skips_freeze(box: Box) -> None:
    vm = box.vm(pre_script=box.marker_script("pre"), thaw_command=box.stamp("thaw"))
    out = take_snapshot(
        vm, crash_only=False, workdir=box.workdir, capture=Recorder(), clone=copy_clone
    )
    assert codes(out.warnings) == ["invalid_configuration"]
    assert out.consistency == "application" and not box.ran("thaw")


def test_invalid_extension_without_continue_raises_before_anything(box: Box) -> None:
    vm = box.vm(
        pre_script=str(box.scripts / "missing.sh"),
        post_script=box.marker_script("post"),
        continue_on_failure=False,
        **box.freeze_thaw(),
    )
    cap = Recorder()
    with pytest.raises(HookFailed) as info:
        take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=cap)
    assert info.value.code == "pre_script_not_found"
    assert cap.calls == [] and not box.ran("post") and not box.ran("freeze")


def test_cancel_after_freeze_still_thaws_and_runs_post(box: Box) -> None:
    vm = box.vm(
        pre_script=box.marker_script("pre"),
        post_script=box.marker_script("post"),
        **box.freeze_thaw(),
    )
    cap = Recorder()
    with pytest.raises(SnapshotCancelled) as info:
        take_snapshot(
            vm,
            crash_only=False,
            workdir=box.workdir,
            capture=cap,
            cancel=lambda: box.ran("freeze"),
        )
    assert info.value.step == "point-in-time view"
    assert cap.calls == []
    assert box.ran("thaw") and box.ran("post")
    assert any("[post]" in line for line in info.value.hook_log)
    assert not box.workdir.exists() or list(box.workdir.iterdir()) == []


def test_cancelled_unwinding_runs_every_post_script_retry(box: Box) -> None:
    vm = box.vm(
        post_script=box.script("post.sh", f"{box.stamp('post')}; exit 1"),
        script_retries=1,
        **box.freeze_thaw(),
    )
    with pytest.raises(SnapshotCancelled) as info:
        take_snapshot(
            vm,
            crash_only=False,
            workdir=box.workdir,
            capture=Recorder(),
            cancel=lambda: box.ran("freeze"),
        )
    assert len(box.times("post")) == 2 and box.ran("thaw")
    assert codes(info.value.warnings) == ["post_script_failed"]
    assert not box.workdir.exists() or list(box.workdir.iterdir()) == []


def test_cancel_at_start_runs_nothing(box: Box) -> None:
    vm = box.vm(pre_script=box.marker_script("pre"), **box.freeze_thaw())
    with pytest.raises(SnapshotCancelled):
        take_snapshot(
            vm, crash_only=False, workdir=box.workdir, capture=Recorder(), cancel=lambda: True
        )
    assert not box.ran("pre") and not box.ran("freeze")


def test_failing_capture_still_thaws_and_cleans_up(box: Box) -> None:
    vm = box.vm(post_script=box.marker_script("post"), **box.freeze_thaw())

    def boom(views: list[DiskView]) -> None:
        raise RuntimeError("vault unavailable")

    for clone in (no_reflink, copy_clone):
        with pytest.raises(RuntimeError):
            take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=boom, clone=clone)
    assert len(box.times("thaw")) == 2 and len(box.times("post")) == 2
    assert list(box.workdir.iterdir()) == []


def test_missing_disk_is_an_error(box: Box) -> None:
    box.disks[1].path.unlink()
    with pytest.raises(ConnectorError) as info:
        take_snapshot(box.vm(), crash_only=False, workdir=box.workdir, capture=Recorder())
    assert info.value.code == "disk_not_found"


# --------------------------------------------------------------------------- lookup


def test_connector_for() -> None:
    c: Connector = connector_for("image")
    assert isinstance(c, ImageConnector) and c.kind == "image"
    with pytest.raises(UnknownConnector, match="image"):
        connector_for("qemu")


def test_image_connector_methods(box: Box) -> None:
    c = connector_for("image")
    vm = box.vm(probe="echo stopped")
    assert c.probe_power_state(vm) == "stopped"
    assert c.validate_extension(vm).ok
    out = c.take_snapshot(vm, crash_only=False, workdir=box.workdir, capture=len)
    assert (out.method, out.result) == ("stopped", 2)


def test_connectors_import_without_django() -> None:
    code = (
        "import sys, engine.connectors\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'vaults', 'jobs',"
        " 'inventory', 'policies', 'portal')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
