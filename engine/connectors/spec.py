"""Plain data handed to and returned by connectors.

The Django side turns a ``VirtualMachine`` row (and its disks) into these dataclasses; nothing
here knows about Django.  Field names follow the model so the mapping is mechanical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

PowerState = Literal["running", "stopped", "unknown"]
Consistency = Literal["application", "file_system", "crash"]
# "live_read" is the honest fourth case: the VM runs, nothing could be frozen and the file
# system cannot reflink, so the capture read the images while the guest kept writing.
Method = Literal["reflink", "frozen_read", "live_read", "stopped"]

POWER_STATES: tuple[str, ...] = ("running", "stopped", "unknown")

# Validation and runtime codes (the words are part of the API; the UI and jobs match on them).
OK = "ok"
PRE_SCRIPT_NOT_FOUND = "pre_script_not_found"
POST_SCRIPT_NOT_FOUND = "post_script_not_found"
SCRIPT_NOT_EXECUTABLE = "script_not_executable"
INSECURE_PERMISSIONS = "insecure_permissions"
INVALID_CONFIGURATION = "invalid_configuration"
PRE_SCRIPT_TIMEOUT = "pre_script_timeout"
POST_SCRIPT_TIMEOUT = "post_script_timeout"
PRE_SCRIPT_FAILED = "pre_script_failed"
POST_SCRIPT_FAILED = "post_script_failed"
FREEZE_FAILED = "freeze_failed"
THAW_FAILED = "thaw_failed"
# Warnings that are not hook failures as such.
FREEZE_TIMEOUT = "freeze_timeout"  # the hard freeze limit expired and thaw was forced
LIVE_READ = "live_read"  # no point-in-time view was possible; images were read live

# Bounds enforced by validate_extension (inclusive).
SCRIPT_TIMEOUT_RANGE = (1, 1800)
SCRIPT_RETRIES_RANGE = (0, 5)
FREEZE_TIMEOUT_RANGE = (1, 600)


@dataclass(frozen=True)
class HookConfig:
    """The backup-extension settings of one VM (Azure's VMSnapshotScriptPluginConfig).

    ``pre_script``/``post_script`` are absolute paths of executables run directly (no shell)
    with their params as argv.  ``freeze_command``/``thaw_command`` are shell command strings
    run with ``/bin/sh -c``; either both are set or neither.  Params are typed as sequences of
    str, but the values come from a JSON field, so validate_extension checks them at runtime.
    """

    pre_script: str = ""
    pre_script_params: Sequence[str] = ()
    post_script: str = ""
    post_script_params: Sequence[str] = ()
    script_timeout: int = 30
    script_retries: int = 0
    continue_on_failure: bool = True
    freeze_enabled: bool = True
    freeze_command: str = ""
    thaw_command: str = ""
    freeze_timeout: int = 60

    @property
    def freeze_configured(self) -> bool:
        """True when a freeze step will be attempted (enabled and a command exists)."""
        return bool(self.freeze_enabled and self.freeze_command)


@dataclass(frozen=True)
class DiskSpec:
    """One raw disk image on the host.  ``lun`` -1 is the OS disk, 0.. are data disks."""

    lun: int
    path: Path


@dataclass(frozen=True)
class VMSpec:
    name: str
    declared_power_state: str = "unknown"
    probe_command: str = ""
    disks: Sequence[DiskSpec] = ()
    hooks: HookConfig = field(default_factory=HookConfig)


@dataclass(frozen=True)
class ExtensionStatus:
    """Result of validate_extension: ``state`` is "installed" or "failed"; code "ok" or a code
    from the list above; message is for humans and names the offending path or field."""

    state: Literal["installed", "failed"]
    code: str
    message: str

    @property
    def ok(self) -> bool:
        return self.state == "installed"


@dataclass(frozen=True)
class DiskView:
    """What ``capture`` reads: ``path`` is either a reflink clone (``cloned``) or the live
    image (read while frozen, while stopped, or live as a last resort)."""

    lun: int
    path: Path
    source: Path
    cloned: bool


@dataclass
class SnapshotOutcome(Generic[T]):
    consistency: Consistency
    method: Method
    power_state: str
    result: T
    warnings: list[tuple[str, str]] = field(default_factory=list)
    freeze_seconds: float = 0.0
    hook_log: list[str] = field(default_factory=list)


class ConnectorError(Exception):
    """Base of the connector's own errors; carries what happened before the failure."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.warnings: list[tuple[str, str]] = []
        self.hook_log: list[str] = []


class HookFailed(ConnectorError):
    """A hook failed and ``continue_on_failure`` is False: nothing was captured."""


class SnapshotCancelled(ConnectorError):
    """``cancel()`` returned True between two steps; everything started was undone."""

    def __init__(self, step: str) -> None:
        super().__init__("cancelled", f"snapshot cancelled before {step}")
        self.step = step
