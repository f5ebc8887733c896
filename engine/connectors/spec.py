"""Plain data handed to and returned by connectors.

The Django side turns a ``VirtualMachine`` row (and its disks) into these dataclasses; nothing
here knows about Django.  Field names follow the model so the mapping is mechanical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

from engine.model import SourceReader

T = TypeVar("T")

PowerState = Literal["running", "stopped", "unknown"]
Consistency = Literal["application", "file_system", "crash"]
# "live_read" is the honest fourth case: the VM runs, nothing could be frozen and the file
# system cannot reflink, so the capture read the images while the guest kept writing.
# "backup_job": a hypervisor backup job (libvirt pull mode) exports a point-in-time view that
# QEMU keeps by copying a block aside before the guest overwrites it.
Method = Literal["reflink", "frozen_read", "live_read", "stopped", "backup_job"]

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
# libvirt: the QEMU guest agent did not answer (no freeze, no in-guest scripts: crash-consistent).
AGENT_UNAVAILABLE = "agent_unavailable"

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
    """One disk of a VM.  ``lun`` -1 is the OS disk, 0.. are data disks.  For the image
    connector ``path`` is a raw image file; for libvirt it is the disk's source file as the
    domain names it and ``target`` its device name in the domain (``vda``)."""

    lun: int
    path: Path
    target: str = ""


@dataclass(frozen=True)
class ParentDisk:
    """What the parent recovery point holds of one disk (libvirt chain checks)."""

    size: int
    path: str


@dataclass(frozen=True)
class HypervisorSpec:
    """How to reach a libvirt domain, and the changed-block-tracking chain it is on.

    ``checkpoint_prefix`` + ``rp_id`` names the checkpoint a backup creates.
    ``parent_checkpoint`` is the checkpoint whose dirty bitmap covers every write since the
    parent recovery point (None: no usable chain, read in full); ``parent_disks`` what the
    parent holds per disk target, so a resized or replaced disk breaks the chain.
    """

    uri: str
    domain: str  # the domain's UUID
    rp_id: str
    parent_checkpoint: str | None = None
    parent_disks: Mapping[str, ParentDisk] = field(default_factory=dict)
    # Why the parent has no checkpoint, when it knows (e.g. "domain_restored").
    parent_chain_break: str = ""
    agent_timeout: float = 10.0


@dataclass(frozen=True)
class VMSpec:
    name: str
    declared_power_state: str = "unknown"
    probe_command: str = ""
    disks: Sequence[DiskSpec] = ()
    hooks: HookConfig = field(default_factory=HookConfig)
    hypervisor: HypervisorSpec | None = None  # set for libvirt hosts only


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


# How a disk's changes were found: "dirty_bitmap" (the hypervisor's changed-block tracking),
# "full_read" (every block read and compared with the parent's hashes), "full" (no parent).
ChangeDetection = Literal["dirty_bitmap", "full_read", "full"]


@dataclass(frozen=True)
class DiskView:
    """What ``capture`` reads: ``path`` is either a reflink clone (``cloned``) or the live
    image (read while frozen, while stopped, or live as a last resort).

    A libvirt disk is read through ``reader`` instead (``path`` is then the domain's source
    file, for the record); ``changed_extents`` (offset, length) are the dirty extents since
    the parent, None when the disk must be read in full; ``change_detection`` and
    ``change_reason`` (why not "dirty_bitmap") are reported per disk on the job.
    """

    lun: int
    path: Path
    source: Path
    cloned: bool
    reader: Callable[[], SourceReader] | None = None
    size: int | None = None  # known without a stat (reader disks)
    changed_extents: Sequence[tuple[int, int]] | None = None
    change_detection: ChangeDetection | None = None
    change_reason: str = ""
    target: str = ""


@dataclass
class SnapshotOutcome(Generic[T]):
    consistency: Consistency
    method: Method
    power_state: str
    result: T
    warnings: list[tuple[str, str]] = field(default_factory=list)
    freeze_seconds: float = 0.0
    hook_log: list[str] = field(default_factory=list)
    # libvirt: the checkpoint whose dirty bitmap covers every write after this snapshot (the
    # next backup's parent_checkpoint; None: the next backup reads in full), and the domain's
    # XML as it was, kept with the recovery point for restores.
    checkpoint: str | None = None
    domain_xml: str = ""


@dataclass(frozen=True)
class HostInfo:
    """A libvirt host as "Test connection" shows it."""

    uri: str
    hostname: str
    libvirt_version: str
    hypervisor_version: str


@dataclass(frozen=True)
class DomainDisk:
    """One file-backed disk (device='disk') of a domain, in the domain's order."""

    target: str
    path: str
    format: str  # the driver type: "qcow2", "raw", ...
    virtual_size: int
    boot: bool  # the disk the domain boots from (the first disk when none is marked)


@dataclass(frozen=True)
class DomainInfo:
    """A domain as discovery sees it."""

    name: str
    uuid: str
    power_state: str  # one of POWER_STATES
    disks: tuple[DomainDisk, ...]
    xml: str


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
