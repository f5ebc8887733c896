"""Connectors: how Lifeboat reaches a VM's disks and its in-guest backup hooks.

Django-free.  The Django side maps a VirtualMachine row to :class:`VMSpec` and calls a
connector found with :func:`connector_for`: "image" (raw image files on this host, see
:mod:`engine.connectors.image`) or "libvirt" (KVM/QEMU domains through libvirt backup jobs, see
:mod:`engine.connectors.libvirt`; its bindings are imported on first use).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from engine.connectors.hooks import validate_extension
from engine.connectors.image import ImageConnector, probe_power_state, take_snapshot
from engine.connectors.libvirt import LibvirtConnector
from engine.connectors.nbd import NbdReader
from engine.connectors.reflink import ReflinkUnsupported, reflink_clone, reflink_supported
from engine.connectors.spec import (
    ConnectorError,
    DiskSpec,
    DiskView,
    DomainDisk,
    DomainInfo,
    ExtensionStatus,
    HookConfig,
    HookFailed,
    HostInfo,
    HypervisorSpec,
    ParentDisk,
    SnapshotCancelled,
    SnapshotOutcome,
    VMSpec,
)

T = TypeVar("T")

__all__ = [
    "CONNECTORS",
    "Connector",
    "ConnectorError",
    "DiskSpec",
    "DiskView",
    "DomainDisk",
    "DomainInfo",
    "ExtensionStatus",
    "HookConfig",
    "HookFailed",
    "HostInfo",
    "HypervisorSpec",
    "ImageConnector",
    "LibvirtConnector",
    "NbdReader",
    "ParentDisk",
    "ReflinkUnsupported",
    "SnapshotCancelled",
    "SnapshotOutcome",
    "UnknownConnector",
    "VMSpec",
    "connector_for",
    "probe_power_state",
    "reflink_clone",
    "reflink_supported",
    "take_snapshot",
    "validate_extension",
]


class Connector(Protocol):
    """What the jobs layer needs from any kind of VM host."""

    kind: str

    def probe_power_state(self, vm: VMSpec) -> str: ...

    def validate_extension(self, vm: VMSpec) -> ExtensionStatus: ...

    def take_snapshot(
        self,
        vm: VMSpec,
        *,
        crash_only: bool,
        workdir: Path,
        capture: Callable[[list[DiskView]], T],
        cancel: Callable[[], bool] | None = None,
    ) -> SnapshotOutcome[T]: ...


class UnknownConnector(LookupError):
    pass


CONNECTORS: dict[str, Callable[[], Connector]] = {
    "image": ImageConnector,
    "libvirt": LibvirtConnector,
}


def connector_for(kind: str) -> Connector:
    """The connector for ``kind`` ("image", "libvirt"); UnknownConnector lists the known kinds."""
    try:
        factory = CONNECTORS[kind]
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise UnknownConnector(f"unknown connector kind {kind!r}; known: {known}") from None
    return factory()
