"""libvirt hosts: test the connection and discover their domains (site administrators only).

Discovery makes the inventory follow the hypervisor: a new domain becomes a VM, a known one
(matched by its domain UUID, never by name) gets its disks updated, a domain that is gone marks
its VM vanished (never deleted: its protection and backups stay until an administrator
decides), and one that comes back is cleared. What changed is kept on each VM
(`discovery_changes`) and in one audit event per discovery.

Disk paths here are the hypervisor's: they are not bound by the host's allowed roots (those
still bound restore targets), and LUNs, once given, are never renumbered.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, cast

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from engine.connectors import UnknownConnector, connector_for
from engine.connectors.spec import ConnectorError, DomainDisk, DomainInfo, HostInfo
from inventory.models import (
    Connector,
    Disk,
    Host,
    PowerState,
    VirtualMachine,
    libvirt_uri_problem,
    name_validator,
    not_reserved,
)
from jobs.models import vm_name_holder
from vaults import access, audit

MAX_LUN = 63

ChangeKind = Literal[
    "disk_added", "disk_removed", "disk_resized", "disk_replaced", "vanished", "returned"
]


class Change(TypedDict):
    """One thing the last discovery changed on a VM (stored in `discovery_changes`)."""

    change: ChangeKind
    target: str
    detail: str


class DiscoveredDisk(TypedDict):
    target: str
    path: str
    format: str
    virtual_size: int
    lun: int


@dataclass(frozen=True)
class DiscoveredVM:
    """One VM as this discovery left it: `domain` is the domain's name on the hypervisor."""

    vm: VirtualMachine
    domain: str
    power_state: str
    disks: list[DiscoveredDisk]
    changes: list[Change]


@dataclass(frozen=True)
class Conflict:
    """A domain discovery could not register, and why (for example: its name is taken)."""

    domain: str
    uuid: str
    reason: str


@dataclass
class DiscoveryResult:
    host: Host
    new: list[DiscoveredVM] = field(default_factory=list)
    changed: list[DiscoveredVM] = field(default_factory=list)
    vanished: list[DiscoveredVM] = field(default_factory=list)
    unchanged: list[DiscoveredVM] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "new": len(self.new),
            "changed": len(self.changed),
            "vanished": len(self.vanished),
            "unchanged": len(self.unchanged),
            "conflicts": len(self.conflicts),
        }


class HostConnector(Protocol):
    """What a connector offers for hosts (libvirt): the connection test and discovery."""

    def test_connection(self, uri: str) -> HostInfo: ...

    def discover(self, uri: str) -> list[DomainInfo]: ...


# -- connector ----------------------------------------------------------------------------------


def _require_libvirt(host: Host, what: str) -> None:
    if host.connector != Connector.LIBVIRT:
        label = Connector(host.connector).label if host.connector in Connector else host.connector
        raise ValidationError(
            {
                "connector": f"Host {host.name} uses the {host.connector} connector ({label}); "
                f"only libvirt hosts support {what}."
            }
        )
    problem = libvirt_uri_problem(host.libvirt_uri)
    if problem:
        raise ValidationError({"libvirt_uri": problem})


def _connector() -> HostConnector:
    try:
        connector = connector_for(Connector.LIBVIRT)
    except UnknownConnector as exc:
        raise ValidationError(
            {"connector": f"The libvirt connector is not available on this server ({exc})."}
        ) from None
    return cast(HostConnector, connector)


def _connector_error(exc: ConnectorError) -> ValidationError:
    """libvirt's own message, on the field the administrator can fix."""
    if exc.code == "connect_failed":
        return ValidationError({"libvirt_uri": f"Cannot connect: {exc.message}"})
    return ValidationError({"connector": f"{exc.code}: {exc.message}"})


def test_connection(host: Host, *, by: User, request: HttpRequest | None = None) -> HostInfo:
    """Connect to the host's libvirt and report its versions; audited, whether it worked or
    not. Raises ValidationError on `libvirt_uri` with libvirt's exact message."""
    access.require_site(by, "manage_inventory")
    _require_libvirt(host, "a connection test")
    try:
        info = _connector().test_connection(host.libvirt_uri)
    except ConnectorError as exc:
        audit.record(
            "host.test_connection",
            actor=by,
            request=request,
            obj=host,
            after={"uri": host.libvirt_uri, "ok": False, "error": exc.message},
        )
        raise _connector_error(exc) from None
    audit.record(
        "host.test_connection",
        actor=by,
        request=request,
        obj=host,
        after={
            "uri": info.uri,
            "ok": True,
            "hostname": info.hostname,
            "libvirt_version": info.libvirt_version,
            "hypervisor_version": info.hypervisor_version,
        },
    )
    return info


def discover_host(host: Host, *, by: User, request: HttpRequest | None = None) -> DiscoveryResult:
    """Ask the host's hypervisor for its domains and apply them (see `apply_discovery`)."""
    access.require_site(by, "manage_inventory")
    _require_libvirt(host, "discovery")
    try:
        domains = _connector().discover(host.libvirt_uri)
    except ConnectorError as exc:
        raise _connector_error(exc) from None
    return apply_discovery(host, domains, by=by, request=request)


# -- applying what was found --------------------------------------------------------------------


def _power_state(value: str) -> str:
    return value if value in PowerState.values else PowerState.UNKNOWN


def _name_problem(name: str, taken: set[str]) -> str | None:
    if len(name) > 63:
        return "longer than 63 characters"
    try:
        name_validator(name)
        not_reserved(name)
    except ValidationError as exc:
        return " ".join(exc.messages)
    if name in taken:
        return "taken by another VM"
    holder = vm_name_holder(name)
    if holder is not None:
        return f"held by restore job {holder.pk}"
    return None


def _vm_name(domain: DomainInfo, host: Host, taken: set[str]) -> tuple[str | None, str]:
    """The domain's name, else `<domain>-<host>`; (None, why) when neither can be used."""
    first = _name_problem(domain.name, taken)
    if first is None:
        return domain.name, ""
    fallback = f"{domain.name}-{host.name}"
    second = _name_problem(fallback, taken)
    if second is None:
        return fallback, ""
    return None, f"VM name {domain.name!r} is {first}, and {fallback!r} is {second}."


def _initial_luns(disks: Sequence[DomainDisk]) -> list[int]:
    """The boot disk is the OS disk (-1); the others count from 0 in the domain's order."""
    boot = next((i for i, d in enumerate(disks) if d.boot), 0)
    luns, n = [], 0
    for i in range(len(disks)):
        if i == boot:
            luns.append(Disk.OS_LUN)
        else:
            luns.append(n)
            n += 1
    return luns


def _free_lun(used: set[int]) -> int | None:
    return next((lun for lun in range(MAX_LUN + 1) if lun not in used), None)


def _disk_row(vm: VirtualMachine, lun: int, disk: DomainDisk) -> Disk:
    return Disk(
        vm=vm,
        lun=lun,
        path=disk.path,
        size=disk.virtual_size,
        target=disk.target,
        format=disk.format,
    )


def _shown(disks: Sequence[Disk]) -> list[DiscoveredDisk]:
    return [
        {
            "target": d.target,
            "path": d.path,
            "format": d.format,
            "virtual_size": d.size,
            "lun": d.lun,
        }
        for d in sorted(disks, key=lambda d: d.lun)
    ]


def _size_text(n: int) -> str:
    return f"{n} bytes ({n / (1 << 30):.2f} GiB)"


def _sync_disks(vm: VirtualMachine, domain: DomainInfo) -> tuple[list[Disk], list[Change]]:
    """Bring a known VM's disk rows in line with its domain's disks, matched by target.

    Removed disks free their LUN; added ones take the lowest free LUN (the OS disk's if the
    boot disk is added while there is none); existing LUNs never move.
    """
    rows = {d.target: d for d in vm.disks.all()}
    # Rows without a target (registered by hand) are matched by their file.
    untargeted = {d.path: d for t, d in list(rows.items()) if not t}
    rows.pop("", None)
    changes: list[Change] = []
    seen: set[str] = set()
    for disk in domain.disks:
        row = rows.get(disk.target) or untargeted.pop(disk.path, None)
        if row is None:
            continue
        seen.add(disk.target)
        rows[disk.target] = row
        updates: list[str] = []
        if row.path != disk.path or (row.format and row.format != disk.format):
            changes.append(
                {
                    "change": "disk_replaced",
                    "target": disk.target,
                    "detail": f"{row.path} ({row.format or '?'}) → {disk.path} ({disk.format})",
                }
            )
            updates += ["path", "format"]
        if row.size != disk.virtual_size:
            changes.append(
                {
                    "change": "disk_resized",
                    "target": disk.target,
                    "detail": f"{_size_text(row.size)} → {_size_text(disk.virtual_size)}",
                }
            )
            updates.append("size")
        if row.target != disk.target or row.format != disk.format:
            updates += ["target", "format"]
        if updates:
            row.path, row.format, row.size = disk.path, disk.format, disk.virtual_size
            row.target = disk.target
            row.save(update_fields=sorted(set(updates)))
    for target, row in list(rows.items()):
        if target not in seen:
            changes.append(
                {
                    "change": "disk_removed",
                    "target": target,
                    "detail": f"LUN {row.lun} ({row.path}) freed",
                }
            )
            row.delete()
            del rows[target]
    for row in untargeted.values():
        changes.append(
            {"change": "disk_removed", "target": "", "detail": f"LUN {row.lun} ({row.path}) freed"}
        )
        row.delete()
    used = {r.lun for r in rows.values()}
    for disk in domain.disks:
        if disk.target in seen:
            continue
        lun = Disk.OS_LUN if disk.boot and Disk.OS_LUN not in used else _free_lun(used)
        if lun is None:
            changes.append(
                {
                    "change": "disk_added",
                    "target": disk.target,
                    "detail": f"not registered: no free LUN (0–{MAX_LUN})",
                }
            )
            continue
        row = _disk_row(vm, lun, disk)
        row.save()
        used.add(lun)
        rows[disk.target] = row
        changes.append(
            {
                "change": "disk_added",
                "target": disk.target,
                "detail": f"LUN {lun}: {disk.path} ({disk.format}, {_size_text(disk.virtual_size)})",
            }
        )
    return list(rows.values()), changes


def _create(host: Host, domain: DomainInfo, name: str) -> tuple[VirtualMachine, list[Disk]]:
    vm = VirtualMachine.objects.create(
        name=name,
        host=host,
        domain_uuid=domain.uuid.lower(),
        power_state=_power_state(domain.power_state),
    )
    rows = [
        _disk_row(vm, lun, d)
        for lun, d in zip(_initial_luns(domain.disks), domain.disks, strict=True)
    ]
    Disk.objects.bulk_create(rows)
    return vm, rows


def apply_discovery(
    host: Host,
    domains: Sequence[DomainInfo],
    *,
    by: User,
    request: HttpRequest | None = None,
) -> DiscoveryResult:
    """Make the host's VMs follow `domains` (what the hypervisor reported); one audit event.

    VMs of the host without a domain UUID (registered by hand) are left alone.
    """
    access.require_site(by, "manage_inventory")
    if host.connector != Connector.LIBVIRT:
        _require_libvirt(host, "discovery")
    result = DiscoveryResult(host=host)
    now = timezone.now()
    with transaction.atomic():
        # Two discoveries of one host run one after the other (each sees the other's VMs).
        Host.objects.select_for_update().filter(pk=host.pk).first()
        known = {
            vm.domain_uuid: vm
            for vm in VirtualMachine.objects.filter(host=host)
            .exclude(domain_uuid="")
            .prefetch_related("disks")
        }
        taken = set(VirtualMachine.objects.values_list("name", flat=True))
        found: set[str] = set()
        for domain in domains:
            uuid = domain.uuid.lower()
            if uuid in found:
                continue
            found.add(uuid)
            vm = known.get(uuid)
            if vm is None:
                name, why = _vm_name(domain, host, taken)
                if name is None:
                    result.conflicts.append(Conflict(domain.name, uuid, why))
                    continue
                taken.add(name)
                vm, rows = _create(host, domain, name)
                result.new.append(
                    DiscoveredVM(vm, domain.name, vm.power_state, _shown(rows), changes=[])
                )
                continue
            rows, changes = _sync_disks(vm, domain)
            if vm.vanished_at is not None:
                changes.insert(
                    0,
                    {
                        "change": "returned",
                        "target": "",
                        "detail": f"back on the host since {vm.vanished_at:%Y-%m-%d %H:%M} UTC",
                    },
                )
                vm.vanished_at = None
            vm.power_state = _power_state(domain.power_state)
            vm.discovery_changes = list(changes)
            vm.save(update_fields=["vanished_at", "power_state", "discovery_changes"])
            entry = DiscoveredVM(vm, domain.name, vm.power_state, _shown(rows), list(changes))
            (result.changed if changes else result.unchanged).append(entry)
        for uuid, vm in known.items():
            if uuid in found:
                continue
            changes = []
            if vm.vanished_at is None:
                vm.vanished_at = now
                changes = [
                    Change(change="vanished", target="", detail="the domain is gone from the host")
                ]
            vm.discovery_changes = list(changes)
            # Whatever it was, nothing runs it now that the hypervisor no longer knows it.
            vm.power_state = PowerState.UNKNOWN
            vm.save(update_fields=["vanished_at", "power_state", "discovery_changes"])
            # The domain's name is not kept: the VM's name stands for it.
            result.vanished.append(
                DiscoveredVM(vm, vm.name, vm.power_state, _shown(list(vm.disks.all())), changes)
            )
        audit.record(
            "host.discover",
            actor=by,
            request=request,
            obj=host,
            after=_audit_summary(result),
        )
    return result


def _audit_summary(result: DiscoveryResult) -> dict[str, Any]:
    return {
        **result.counts(),
        "new_vms": [e.vm.name for e in result.new],
        "changed_vms": [e.vm.name for e in result.changed],
        "vanished_vms": [e.vm.name for e in result.vanished if e.changes],
        "conflict_domains": [c.domain for c in result.conflicts],
    }
