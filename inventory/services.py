"""Registering hosts and VMs (site administrators only).

They name files and commands on the server, so every disk path must resolve inside the
host's allowed roots and exist; disk sizes are read from the files, never taken from input.
Rule violations raise `ValidationError` keyed by the field at fault; every change is audited.
"""

import os
import stat
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypedDict, Unpack

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest

# Discovery lives in its own module; re-exported so callers find every inventory operation here.
from inventory.discovery import Conflict as Conflict
from inventory.discovery import DiscoveredVM as DiscoveredVM
from inventory.discovery import DiscoveryResult as DiscoveryResult
from inventory.discovery import apply_discovery as apply_discovery
from inventory.discovery import discover_host as discover_host
from inventory.discovery import test_connection as test_connection
from inventory.models import Connector, Disk, ExtensionState, Host, VirtualMachine
from jobs.models import vm_name_holder
from vaults import access, audit
from vaults.models import ItemState, ProtectedVM


class HostFields(TypedDict, total=False):
    """A host's own fields, as `create_host` and `update_host` take them."""

    name: str
    connector: str
    libvirt_uri: str
    snapshot_root: str
    allowed_roots: list[str]
    dedicated_worker: bool


class VmFields(TypedDict, total=False):
    """A VM's own fields (its backup extension's configuration included), as `create_vm` and
    `update_vm` take them; the host and the disks are separate parameters."""

    name: str
    os_type: str
    power_state: str
    power_probe_command: str
    pre_script: str
    pre_script_params: list[str]
    post_script: str
    post_script_params: list[str]
    script_timeout: int
    script_retries: int
    continue_on_failure: bool
    freeze_enabled: bool
    freeze_command: str
    thaw_command: str
    freeze_timeout: int


class DiskSpec(TypedDict):
    """A disk as given: its LUN (-1 is the OS disk) and the path of its file."""

    lun: int
    path: str


class DiskRow(DiskSpec):
    """A disk as stored: the path resolved, the size read from the file."""

    size: int


HOST_FIELDS = tuple(HostFields.__annotations__)
VM_FIELDS = tuple(VmFields.__annotations__)
# What two paths share when they name the same disk (see `_same_file_key`).
FileKey = tuple[str | int, ...]


def host_summary(host: Host) -> dict[str, Any]:
    return {f: getattr(host, f) for f in HOST_FIELDS}


def vm_summary(vm: VirtualMachine) -> dict[str, Any]:
    return {
        **{f: getattr(vm, f) for f in VM_FIELDS},
        "host": vm.host.name,
        "disks": [
            {"lun": d.lun, "path": d.path, "size": d.size, "target": d.target, "format": d.format}
            for d in vm.disks.all()
        ],
    }


def _unknown(fields: Mapping[str, object], known: Collection[str]) -> None:
    unknown = set(fields) - set(known)
    if unknown:
        raise ValidationError({f: "Unknown field." for f in sorted(unknown)})


# -- hosts --------------------------------------------------------------------------------------


def _check_host(host: Host) -> None:
    """Model rules, plus: allowed roots exist, every disk of an image host's VMs stays inside
    them (a libvirt host's disks are the hypervisor's), and the connector of a host with VMs
    does not change."""
    errors: dict[str, list[str]] = {}
    try:
        host.full_clean()
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if host.pk is not None and "connector" not in errors:
        was = Host.objects.filter(pk=host.pk).values_list("connector", flat=True).first()
        n = host.vms.count()
        if was is not None and was != host.connector and n:
            errors["connector"] = [
                f"Host {host.name} has {n} VM(s); its connector cannot change while it has VMs."
            ]
    roots = host.allowed_roots if isinstance(host.allowed_roots, list) else []
    if "allowed_roots" not in errors:
        missing = [r for r in roots if not os.path.isdir(r)]
        if missing:
            errors["allowed_roots"] = [f"Not a directory: {', '.join(missing)}."]
        elif host.pk is not None and host.connector != Connector.LIBVIRT:
            outside = [d for d in Disk.objects.filter(vm__host=host) if not host.allows(d.path)]
            if outside:
                shown = ", ".join(f"{d.vm.name} LUN {d.lun}" for d in outside[:5])
                errors["allowed_roots"] = [f"Disks would fall outside the allowed roots: {shown}."]
    if errors:
        raise ValidationError(errors)


def create_host(
    *, by: User, request: HttpRequest | None = None, **fields: Unpack[HostFields]
) -> Host:
    access.require_site(by, "manage_inventory")
    _unknown(fields, HOST_FIELDS)
    host = Host(**fields)
    _check_host(host)
    with transaction.atomic():
        host.save()
        audit.record("host.create", actor=by, request=request, obj=host, after=host_summary(host))
    return host


def update_host(
    host: Host, *, by: User, request: HttpRequest | None = None, **changes: Unpack[HostFields]
) -> Host:
    access.require_site(by, "manage_inventory")
    _unknown(changes, HOST_FIELDS)
    before = host_summary(host)
    for field, value in changes.items():
        setattr(host, field, value)
    _check_host(host)
    with transaction.atomic():
        host.save()
        audit.record(
            "host.update",
            actor=by,
            request=request,
            obj=host,
            before=before,
            after=host_summary(host),
        )
    return host


def delete_host(host: Host, *, by: User, request: HttpRequest | None = None) -> None:
    access.require_site(by, "manage_inventory")
    n = host.vms.count()
    if n:
        raise ValidationError(
            {"detail": f"Host {host.name} still has {n} VM(s); delete or move them first."}
        )
    with transaction.atomic():
        audit.record("host.delete", actor=by, request=request, obj=host, before=host_summary(host))
        host.delete()


# -- VMs ----------------------------------------------------------------------------------------


def _disk_size(path: str) -> int | None:
    """Size of a regular file or block device, None if it is neither."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        return None
    try:
        with open(path, "rb") as f:
            return f.seek(0, os.SEEK_END)
    except OSError:
        return None


def _same_file_key(path: str) -> FileKey:
    """What two paths share when they name the same disk: the device or the file (inode)
    they lead to, so neither '..', a symlink nor a hard link disguises it; the resolved path
    when nothing is there."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    if stat.S_ISBLK(st.st_mode):
        return ("device", st.st_rdev)
    return ("file", st.st_dev, st.st_ino)


def _disk_owners(vm: VirtualMachine | None) -> dict[FileKey, str]:
    """Every registered disk of the other VMs, by what it is on disk → its VM's name.

    Compared as files, not as stored strings, so a row written by any route (or before paths
    were stored resolved) is still found.
    """
    others = Disk.objects.select_related("vm").only("path", "vm__name")
    if vm is not None:
        others = others.exclude(vm=vm)
    return {_same_file_key(d.path): d.vm.name for d in others}


def clean_disks(
    host: Host, disks: Sequence[DiskSpec], vm: VirtualMachine | None = None
) -> list[DiskRow]:
    """[{"lun", "path"}] → [{"lun", "path", "size"}], or ValidationError on `disks`.

    LUNs are unique, exactly one is the OS disk (-1), each path resolves inside the host's
    allowed roots, exists, and is a file of no other VM. Paths are stored resolved (symlinks
    and '..' gone), as they were checked: a symlink changed later cannot move a disk.
    """
    problems: list[str] = []
    luns = [d["lun"] for d in disks]
    if luns.count(Disk.OS_LUN) != 1:
        problems.append("Give exactly one OS disk (lun -1).")
    dupes = sorted({lun for lun in luns if luns.count(lun) > 1 and lun != Disk.OS_LUN})
    if dupes:
        problems.append(f"LUN(s) {', '.join(map(str, dupes))} appear more than once.")
    keys = [_same_file_key(d["path"]) for d in disks]
    if len(set(keys)) != len(keys):
        problems.append("Two disks name the same file.")
    taken = _disk_owners(vm)
    out: list[DiskRow] = []
    for d, key in zip(disks, keys, strict=True):
        lun, path = d["lun"], d["path"]
        if not os.path.isabs(path):
            problems.append(f"LUN {lun}: {path} is not an absolute path.")
        elif not host.allows(path):
            problems.append(f"LUN {lun}: {path} is outside host {host.name}'s allowed roots.")
        elif key in taken:
            problems.append(f"LUN {lun}: {path} is already a disk of VM {taken[key]}.")
        else:
            size = _disk_size(path)
            if size is None:
                problems.append(f"LUN {lun}: {path} is not an existing file or block device.")
            else:
                out.append({"lun": lun, "path": os.path.realpath(path), "size": size})
    if problems:
        raise ValidationError({"disks": problems})
    return out


def _check_vm(vm: VirtualMachine) -> None:
    errors: dict[str, list[str]] = {}
    try:
        vm.full_clean(exclude=["host"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    for field in ("pre_script", "post_script"):
        path = getattr(vm, field)
        if path and not os.path.isabs(path):
            errors.setdefault(field, []).append("Must be an absolute path.")
    for field in ("pre_script_params", "post_script_params"):
        value = getattr(vm, field)
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            errors.setdefault(field, []).append("Must be a list of strings.")
    holder = vm_name_holder(vm.name)
    if holder is not None:
        errors.setdefault("name", []).append(
            f"Restore job {holder.pk} is creating a VM with this name."
        )
    if errors:
        raise ValidationError(errors)


def _protection(vm: VirtualMachine) -> ProtectedVM | None:
    return (
        ProtectedVM.objects.filter(vm=vm)
        .exclude(state=ItemState.SOFT_DELETED)
        .select_related("vault")
        .first()
    )


def _save_disks(vm: VirtualMachine, disks: list[DiskRow]) -> None:
    vm.disks.all().delete()
    Disk.objects.bulk_create([Disk(vm=vm, **d) for d in disks])


def create_vm(
    *,
    by: User,
    request: HttpRequest | None = None,
    host: Host,
    disks: Sequence[DiskSpec],
    **fields: Unpack[VmFields],
) -> VirtualMachine:
    access.require_site(by, "manage_inventory")
    _unknown(fields, VM_FIELDS)
    if host.connector == Connector.LIBVIRT:
        raise ValidationError(
            {"host": f"VMs of libvirt host {host.name} are registered by discovering its domains."}
        )
    vm = VirtualMachine(host=host, **fields)
    _check_vm(vm)
    cleaned = clean_disks(host, disks)
    with transaction.atomic():
        vm.save()
        _save_disks(vm, cleaned)
        audit.record("vm.create", actor=by, request=request, obj=vm, after=vm_summary(vm))
    return vm


def update_vm(
    vm: VirtualMachine,
    *,
    by: User,
    request: HttpRequest | None = None,
    host: Host | None = None,
    disks: Sequence[DiskSpec] | None = None,
    **changes: Unpack[VmFields],
) -> VirtualMachine:
    """Change a VM's fields; `host` moves it (not while it is protected), `disks` replaces its
    disks whole. Left out (None), the host and the disks stay as they are."""
    access.require_site(by, "manage_inventory")
    _unknown(changes, VM_FIELDS)
    before = vm_summary(vm)
    if host is not None and host.pk != vm.host_id:
        if Connector.LIBVIRT in (host.connector, vm.host.connector):
            raise ValidationError(
                {"host": "A VM of a libvirt host is a domain of that host; it cannot move."}
            )
        current = _protection(vm)
        if current is not None:
            raise ValidationError(
                {
                    "host": f"{vm.name} is protected in vault {current.vault.name}; stop its "
                    "protection before moving it to another host."
                }
            )
        vm.host = host
    for field, value in changes.items():
        setattr(vm, field, value)
    _check_vm(vm)
    cleaned: list[DiskRow] | None = None
    if vm.host.connector == Connector.LIBVIRT:
        # The hypervisor's disks, as discovery found them: not edited here.
        registered = sorted((d.lun, d.path) for d in vm.disks.all())
        if disks is not None and sorted((d["lun"], d["path"]) for d in disks) != registered:
            raise ValidationError(
                {
                    "disks": f"The disks of a VM on libvirt host {vm.host.name} come from the "
                    "hypervisor; change the domain, then discover the host's VMs again."
                }
            )
    else:
        if disks is None:
            disks = [DiskSpec(lun=d.lun, path=d.path) for d in vm.disks.all()]
        cleaned = clean_disks(vm.host, disks, vm=vm)
    with transaction.atomic():
        vm.save()
        if cleaned is not None:
            _save_disks(vm, cleaned)
        audit.record(
            "vm.update", actor=by, request=request, obj=vm, before=before, after=vm_summary(vm)
        )
    return vm


def delete_vm(vm: VirtualMachine, *, by: User, request: HttpRequest | None = None) -> None:
    access.require_site(by, "manage_inventory")
    items = list(ProtectedVM.objects.filter(vm=vm).select_related("vault"))
    if items:
        vaults = ", ".join(sorted({i.vault.name for i in items}))
        raise ValidationError(
            {
                "detail": f"{vm.name} has backups in vault(s) {vaults}; stop protection with "
                "delete data and wait for the recycle bin to be purged first."
            }
        )
    with transaction.atomic():
        audit.record("vm.delete", actor=by, request=request, obj=vm, before=vm_summary(vm))
        vm.delete()


# -- backup extension ---------------------------------------------------------------------------


def repair_extension(
    vm: VirtualMachine, *, by: User, request: HttpRequest | None = None
) -> VirtualMachine:
    """Clear a failed backup extension so the next backup installs and validates it afresh.

    Allowed to operators of the vault that protects the VM (they may back it up) and to site
    administrators; the configuration itself is not touched (that stays a site-admin edit).
    """
    current = _protection(vm)
    if current is not None:
        access.require(by, current.vault, "backup_now")
    else:
        access.require_site(by, "manage_inventory")
    before = {f: getattr(vm, f) for f in ("extension_state", "extension_code", "extension_message")}
    with transaction.atomic():
        VirtualMachine.objects.filter(pk=vm.pk).update(
            extension_state=ExtensionState.NOT_INSTALLED, extension_code="", extension_message=""
        )
        vm.extension_state = ExtensionState.NOT_INSTALLED
        vm.extension_code = vm.extension_message = ""
        audit.record(
            "vm.extension_repair",
            actor=by,
            request=request,
            vault=current.vault if current else None,
            obj=vm,
            before=before,
            after={"extension_state": ExtensionState.NOT_INSTALLED},
        )
    return vm
