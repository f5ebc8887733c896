"""Hosts, VMs and their disks.

Only site administrators create or change these: they name files and commands on the server
(disk paths, hook scripts, probe commands), so every path is checked against the host's
allowed roots.
"""

import os
import re
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

name_validator = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$",
    "Use 1–63 characters: a letter first, then letters, digits, '.', '_' or '-'.",
)


def not_reserved(value: str) -> None:
    """Names that would collide with page URLs such as /inventory/vms/new/."""
    if value.lower() in {"new"}:
        raise ValidationError(f"{value!r} is reserved; choose another name.")


class Connector(models.TextChoices):
    IMAGE = "image", "Image files"
    LIBVIRT = "libvirt", "libvirt (KVM)"


# qemu:///system, qemu+ssh://user@host/system, qemu+tls://host/system?... : the qemu driver,
# one of libvirt's transports, then the system or session daemon. No whitespace or NUL: the URI
# is handed to libvirt as is.
LIBVIRT_TRANSPORTS = ("ssh", "tls", "tcp", "unix", "ext", "libssh", "libssh2")
_LIBVIRT_URI = re.compile(
    r"qemu(?:\+(?P<transport>[a-z0-9]+))?://(?P<authority>[^\s/?#]*)"
    r"/(?P<path>system|session)(?:\?[^\s#]*)?"
)


def libvirt_uri_problem(uri: str) -> str | None:
    """Why `uri` is not a libvirt URI Lifeboat accepts (None: it is)."""
    if not uri:
        return "Give the libvirt URI of this host, e.g. qemu:///system."
    if "\x00" in uri or any(c.isspace() for c in uri):
        return "The URI may not contain whitespace or NUL characters."
    match = _LIBVIRT_URI.fullmatch(uri)
    if match is None:
        return (
            "Use qemu:///system, qemu+ssh://user@host/system or qemu+tls://host/system "
            "(scheme qemu or qemu+<transport>, path /system or /session)."
        )
    transport = match["transport"]
    if transport is not None and transport not in LIBVIRT_TRANSPORTS:
        return f"Unknown transport {transport!r}; use one of {', '.join(LIBVIRT_TRANSPORTS)}."
    if transport in ("ssh", "tls", "tcp", "libssh", "libssh2") and not match["authority"]:
        return f"qemu+{transport} needs a host name: qemu+{transport}://host/system."
    return None


class OSType(models.TextChoices):
    LINUX = "linux", "Linux"
    WINDOWS = "windows", "Windows"


class PowerState(models.TextChoices):
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    UNKNOWN = "unknown", "Unknown"


class ExtensionState(models.TextChoices):
    NOT_INSTALLED = "not_installed", "Not installed"
    INSTALLED = "installed", "Installed"
    FAILED = "failed", "Failed"


def path_inside(path: str, roots: list[str]) -> bool:
    """True when `path` resolves inside one of `roots` (symlinks and '..' resolved)."""
    real = os.path.realpath(path)
    for root in roots:
        root_real = os.path.realpath(root)
        if real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep):
            return True
    return False


class Host(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[name_validator, not_reserved])
    connector = models.CharField(max_length=20, choices=Connector, default=Connector.IMAGE)
    # How libvirt reaches the hypervisor (libvirt hosts only; blank for image hosts).
    libvirt_uri = models.CharField(max_length=500, blank=True)
    # One snapshot-tier chunk store per vault lives under this directory.
    snapshot_root = models.CharField(max_length=500)
    # Disk paths and restore targets must resolve inside one of these directories.
    allowed_roots = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if not os.path.isabs(self.snapshot_root or ""):
            errors["snapshot_root"] = "Must be an absolute path."
        roots = self.allowed_roots
        if not isinstance(roots, list) or not roots:
            errors["allowed_roots"] = "Give at least one absolute directory."
        elif not all(isinstance(r, str) and os.path.isabs(r) for r in roots):
            errors["allowed_roots"] = "Every allowed root must be an absolute path."
        if self.connector == Connector.LIBVIRT:
            problem = libvirt_uri_problem(self.libvirt_uri or "")
            if problem:
                errors["libvirt_uri"] = problem
        elif self.libvirt_uri:
            errors["libvirt_uri"] = "Only libvirt hosts have a libvirt URI; leave it blank."
        if errors:
            raise ValidationError(errors)

    @property
    def is_libvirt(self) -> bool:
        return self.connector == Connector.LIBVIRT

    def allows(self, path: str) -> bool:
        return path_inside(path, self.allowed_roots or [])

    def snapshot_store_path(self, vault: models.Model) -> Path:
        """Where the vault's snapshot-tier store on this host lives; the vault row's id names
        it. (Typed as any row: importing Vault here would close a cycle through vaults.)"""
        return Path(self.snapshot_root) / f"vault-{vault.pk}"


class VirtualMachine(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[name_validator, not_reserved])
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="vms")
    os_type = models.CharField(max_length=10, choices=OSType, default=OSType.LINUX)
    # As declared by the admin; a probe command, when set, overrides it at backup time.
    power_state = models.CharField(max_length=10, choices=PowerState, default=PowerState.RUNNING)
    power_probe_command = models.CharField(max_length=1000, blank=True)

    extension_state = models.CharField(
        max_length=20, choices=ExtensionState, default=ExtensionState.NOT_INSTALLED
    )
    extension_code = models.CharField(max_length=40, blank=True)
    extension_message = models.TextField(blank=True)

    pre_script = models.CharField(max_length=500, blank=True)
    pre_script_params = models.JSONField(default=list, blank=True)
    post_script = models.CharField(max_length=500, blank=True)
    post_script_params = models.JSONField(default=list, blank=True)
    script_timeout = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(1800)]
    )
    script_retries = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(5)]
    )
    continue_on_failure = models.BooleanField(default=True)
    freeze_enabled = models.BooleanField(default=True)
    freeze_command = models.CharField(max_length=1000, blank=True)
    thaw_command = models.CharField(max_length=1000, blank=True)
    # Hard limit on how long file systems stay frozen; thaw is forced after it.
    freeze_timeout = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(600)]
    )
    # libvirt hosts: the domain this VM is (discovery matches on it; names can change).
    domain_uuid = models.CharField(max_length=36, blank=True)
    # Set when discovery no longer finds the domain on its host. The VM is never deleted
    # silently: its protection and backups stay until an administrator decides.
    vanished_at = models.DateTimeField(null=True, blank=True)
    # What the last discovery changed for this VM:
    # [{"change": "disk_added"|"disk_removed"|"disk_resized"|"vanished"|"returned",
    #   "target": "vdb", "detail": "..."}]
    discovery_changes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["host", "domain_uuid"],
                condition=~models.Q(domain_uuid=""),
                name="vm_unique_domain_per_host",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def os_disk(self) -> "Disk | None":
        return next((d for d in self.disks.all() if d.lun == Disk.OS_LUN), None)


class Disk(models.Model):
    OS_LUN = -1

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="disks")
    # -1 is the OS disk; data disks count from 0.
    lun = models.IntegerField(validators=[MinValueValidator(-1), MaxValueValidator(63)])
    path = models.CharField(max_length=500)
    size = models.BigIntegerField(default=0)
    # libvirt disks: the device name in the domain ("vda") and the image format ("qcow2").
    target = models.CharField(max_length=32, blank=True)
    format = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["vm", "lun"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "lun"], name="disk_unique_lun_per_vm"),
        ]

    def __str__(self) -> str:
        return f"{self.vm.name} LUN {self.lun}"

    @property
    def is_os_disk(self) -> bool:
        return self.lun == self.OS_LUN

    def read_size(self) -> int:
        """Size of the image file (or block device) as it is now."""
        with open(self.path, "rb") as f:
            return f.seek(0, os.SEEK_END)
