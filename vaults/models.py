"""Vaults, roles, protected VMs, recovery points and the audit log.

A vault is the access boundary: every vault-scoped queryset is filtered through
`vaults.access`, never here by hand.
"""

import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import BooleanField, Case, Exists, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from policies.models import BackupPolicy
from policies.spec import default_policy

_Row = TypeVar("_Row", bound=models.Model)

vault_name_validator = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9-]{1,49}$",
    "Use 2–50 characters: a letter first, then letters, digits or hyphens.",
)


def not_reserved(value: str) -> None:
    """Names that would collide with page URLs such as /vaults/new/ and /vaults/attach/."""
    if value.lower() in {"new", "attach"}:
        raise ValidationError(f"{value!r} is reserved; choose another name.")


def lun_label(lun: int) -> str:
    """How pages and messages name a disk: -1 is the OS disk, others by LUN."""
    return "OS disk" if lun == -1 else f"LUN {lun}"


class Role(models.TextChoices):
    READER = "reader", "Reader"
    OPERATOR = "operator", "Operator"
    CONTRIBUTOR = "contributor", "Contributor"
    OWNER = "owner", "Owner"


class SoftDeleteState(models.TextChoices):
    ENABLED = "enabled", "Enabled"
    DISABLED = "disabled", "Disabled"
    ALWAYS_ON = "always_on", "Always on"


class Immutability(models.TextChoices):
    DISABLED = "disabled", "Disabled"
    UNLOCKED = "unlocked", "Enabled (unlocked)"
    LOCKED = "locked", "Enabled (locked)"


class Encryption(models.TextChoices):
    PLATFORM = "platform", "Platform-managed key"
    CUSTOMER_MANAGED = "customer_managed", "Customer-managed key"


# -- where stores live ---------------------------------------------------------------------------

# Object-storage locations: `s3://bucket/prefix` (S3 or compatible) and `az://container/prefix`
# (Azure Blob Storage). Anything else is a local absolute path.
OBJECT_SCHEMES = {"s3": "s3", "az": "azure"}  # location scheme → StorageTarget.kind
_bucket_name = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def location_scheme(location: str) -> str | None:
    """ "s3" or "az" for an object-storage location, None for a local path; ValueError naming
    the scheme for any other `scheme://`."""
    if "://" not in location:
        return None
    scheme = location.split("://", 1)[0]
    if scheme not in OBJECT_SCHEMES:
        raise ValueError(
            f"Unknown scheme {scheme}://; use s3://bucket/prefix, az://container/prefix or "
            "an absolute directory."
        )
    return scheme


def location_errors(location: str) -> str | None:
    """Why `location` names no place a store may live, or None."""
    try:
        scheme = location_scheme(location)
    except ValueError as e:
        return str(e)
    if scheme is None:
        if not location.startswith("/"):
            return "Give an absolute directory, s3://bucket/prefix or az://container/prefix."
        return None
    rest = location.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if not _bucket_name.match(bucket):
        what = "bucket" if scheme == "s3" else "container"
        return f"{bucket!r} is not a valid {what} name (3–63 lowercase letters, digits, . or -)."
    if any(part in ("", ".", "..") for part in prefix.rstrip("/").split("/")) and prefix:
        return f"The prefix {prefix!r} has an empty, '.' or '..' part."
    return None


class TargetKind(models.TextChoices):
    S3 = "s3", "Amazon S3 or S3-compatible"
    AZURE = "azure", "Azure Blob Storage"


class CredentialsSource(models.TextChoices):
    ENV = "env", "Environment variables of the workers"
    FILE = "file", "A JSON file readable by the workers"


# The credential keys each kind reads; the first group is required (Azure: a key or a SAS).
CREDENTIAL_KEYS: dict[str, tuple[str, ...]] = {
    TargetKind.S3: ("access_key_id", "secret_access_key", "session_token"),
    TargetKind.AZURE: ("account_name", "account_key", "sas_token"),
}


class StorageTarget(models.Model):
    """An object-storage account that vault stores may live in (site administrators only).

    Never holds a secret: the credentials are read where the store is opened (in the worker),
    from the environment variables named here or from a JSON file on the server.
    """

    name = models.CharField(
        max_length=50, unique=True, validators=[vault_name_validator, not_reserved]
    )
    kind = models.CharField(max_length=8, choices=TargetKind)
    # Empty: the provider's own (AWS for S3; Azure needs one unless the account name gives it).
    endpoint = models.CharField(max_length=300, blank=True)
    region = models.CharField(max_length=64, blank=True)
    # S3 only: bucket in the path (MinIO, Ceph) rather than in the host name.
    path_style = models.BooleanField(default=False)
    credentials_source = models.CharField(
        max_length=8, choices=CredentialsSource, default=CredentialsSource.ENV
    )
    # env: credential key → the NAME of the environment variable holding it.
    credentials_env = models.JSONField(default=dict, blank=True)
    # file: a path to a JSON object of credential keys.
    credentials_file = models.CharField(max_length=500, blank=True)
    # The bucket has S3 Object Lock on: locked vaults' objects get COMPLIANCE retention.
    object_lock = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def scheme(self) -> str:
        return "s3" if self.kind == TargetKind.S3 else "az"


class VaultQuerySet(models.QuerySet["Vault"]):
    def in_vaults(self, ids: list[int] | None) -> Self:
        """These vaults among `ids` (None: all of them); `vaults.access.visible` decides the ids."""
        return self if ids is None else self.filter(pk__in=ids)

    def with_purge_due(self, now: datetime) -> Self:
        """Vaults whose recycle bin holds an entry due for purging at `now`."""
        return self.filter(
            Exists(RecoveryPoint.objects.purge_due(now).filter(vault=OuterRef("pk")))
            | Exists(ProtectedVM.objects.purge_due(now).filter(vault=OuterRef("pk")))
        )


class Vault(models.Model):
    name = models.CharField(
        max_length=50, unique=True, validators=[vault_name_validator, not_reserved]
    )
    # Empty means the default location under LIFEBOAT's VAULT_STORE_ROOT; else an absolute
    # directory, or an object-storage location in `storage_target`.
    store_location = models.CharField(max_length=500, blank=True)
    storage_target = models.ForeignKey(
        StorageTarget, null=True, blank=True, on_delete=models.PROTECT, related_name="vaults"
    )
    # A second copy of every recovery point (empty: none), replicated after the vault tier.
    secondary_location = models.CharField(max_length=500, blank=True)
    secondary_target = models.ForeignKey(
        StorageTarget,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="secondary_vaults",
    )
    soft_delete_state = models.CharField(
        max_length=10, choices=SoftDeleteState, default=SoftDeleteState.ENABLED
    )
    soft_delete_days = models.PositiveSmallIntegerField(
        default=14, validators=[MinValueValidator(14), MaxValueValidator(180)]
    )
    immutability = models.CharField(
        max_length=10, choices=Immutability, default=Immutability.DISABLED
    )
    mua_enabled = models.BooleanField(default=False)
    encryption = models.CharField(max_length=20, choices=Encryption, default=Encryption.PLATFORM)
    # Restore drills: every this many days each item's latest RP is drilled (0: no schedule;
    # "Run drill now" on an RP works either way). See jobs/drill.py.
    drill_every_days = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(365)]
    )
    linked_hosts = models.ManyToManyField(
        "inventory.Host", related_name="linked_vaults", blank=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # When `vaults.accounting` last measured the stores (the figures' age; None: never).
    accounted_at = models.DateTimeField(null=True, blank=True)
    # The secondary copy's stored bytes (`vaults.accounting`) and when they were measured: the
    # secondary is measured on its own, and one that does not answer keeps its old figure.
    secondary_stored_bytes = models.BigIntegerField(null=True, blank=True)
    secondary_accounted_at = models.DateTimeField(null=True, blank=True)

    objects = VaultQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_immutable(self) -> bool:
        return self.immutability != Immutability.DISABLED

    @property
    def immutability_locked(self) -> bool:
        return self.immutability == Immutability.LOCKED

    @property
    def vault_location(self) -> str:
        """Where the vault store lives: a local directory or an object-storage location."""
        if self.store_location:
            return self.store_location
        return str(Path(str(settings.LIFEBOAT["VAULT_STORE_ROOT"])) / self.name)

    @property
    def store_is_local(self) -> bool:
        return "://" not in self.vault_location

    @property
    def store_path(self) -> Path:
        """The vault store's directory; local locations only (see `vault_location`)."""
        if not self.store_is_local:
            raise ValueError(f"vault {self.name}'s store is not local: {self.vault_location}")
        return Path(self.vault_location)

    @property
    def has_secondary(self) -> bool:
        return bool(self.secondary_location)

    @classmethod
    def create(cls, *, name: str, owner: User, **settings_fields: Any) -> "Vault":
        """Create a vault, make `owner` its owner and give it DefaultPolicy.

        Only site administrators create vaults.
        """
        if not owner.is_superuser:
            raise PermissionDenied("Only site administrators create vaults.")
        vault = cls(name=name, created_by=owner, **settings_fields)
        vault.full_clean()
        vault.save()
        VaultMembership.objects.create(vault=vault, user=owner, role=Role.OWNER)
        policy = BackupPolicy(vault=vault)
        policy.apply_representation(default_policy())
        policy.save()
        return vault

    def holdings(self) -> dict[str, int]:
        """What still lives in the vault (a vault is only deleted when this is all zero)."""
        return {
            "protected_items": self.protected_items.count(),
            "recovery_points": self.recovery_points.count(),
        }


class VaultMembership(models.Model):
    vault = models.ForeignKey(Vault, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="vault_memberships"
    )
    role = models.CharField(max_length=12, choices=Role)
    # "directory:group" when a group mapping grants this membership: it follows the mapping
    # and the user's groups at sign-in, and is not edited here. Empty: a local membership.
    mapped_from = models.CharField(max_length=260, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["vault", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["vault", "user"], name="membership_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.vault}"


class GuardApprover(models.Model):
    """The MUA two-person rule's second person for one vault; assigned by site admins only.

    It opens the vault's approval requests to the user, and nothing else of the vault.
    """

    vault = models.ForeignKey(Vault, on_delete=models.CASCADE, related_name="guard_approvers")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="guard_assignments"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["vault", "user"], name="guard_approver_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} approves for {self.vault}"


class ItemState(models.TextChoices):
    INITIAL_BACKUP_PENDING = "initial_backup_pending", "Initial backup pending"
    PROTECTED = "protected", "Protected"
    PROTECTION_ERROR = "protection_error", "Protection error"
    PROTECTION_STOPPED = "protection_stopped", "Protection stopped"
    SOFT_DELETED = "soft_deleted", "Soft deleted"


class Health(models.TextChoices):
    """A live item's health, as the overview counts it and the item lists filter it: its state,
    with a protected item whose last backup warned set apart."""

    PROTECTED = "protected", "Protected"
    WARNING = "warning", "Warning"
    FAILED = "failed", "Failed"
    INITIAL_BACKUP_PENDING = "initial_backup_pending", "Initial backup pending"
    STOPPED = "stopped", "Stopped"


def health_filter(health: str) -> Q:
    """The live items of one `Health` (the one definition the overview, lists and reports use)."""
    warned = Q(last_backup_status="completed_with_warnings")
    return {
        Health.PROTECTED: Q(state=ItemState.PROTECTED) & ~warned,
        Health.WARNING: Q(state=ItemState.PROTECTED) & warned,
        Health.FAILED: Q(state=ItemState.PROTECTION_ERROR),
        Health.INITIAL_BACKUP_PENDING: Q(state=ItemState.INITIAL_BACKUP_PENDING),
        Health.STOPPED: Q(state=ItemState.PROTECTION_STOPPED),
    }[Health(health)]


def health_of(state: str, last_backup_status: str) -> str | None:
    """The `Health` of an item already loaded (None: soft-deleted, which has none)."""
    if state == ItemState.PROTECTED:
        if last_backup_status == "completed_with_warnings":
            return Health.WARNING
        return Health.PROTECTED
    return {
        ItemState.PROTECTION_ERROR: Health.FAILED,
        ItemState.INITIAL_BACKUP_PENDING: Health.INITIAL_BACKUP_PENDING,
        ItemState.PROTECTION_STOPPED: Health.STOPPED,
    }.get(ItemState(state))


class RetentionMode(models.TextChoices):
    RETAIN_FOREVER = "retain_forever", "Retain forever"
    RETAIN_AS_PER_POLICY = "retain_as_per_policy", "Retain as per policy"


class BinReason(models.TextChoices):
    """Why a recovery point is in the recycle bin."""

    ITEM_DELETED = "item_deleted", "Protection stopped with delete data"
    RETENTION_REDUCED = "retention_reduced", "Retention reduced"


class StopMode(models.TextChoices):
    """How protection stops: the data is retained (the item's `RetentionMode`) or deleted."""

    RETAIN_FOREVER = RetentionMode.RETAIN_FOREVER.value, "Retain backup data forever"
    RETAIN_AS_PER_POLICY = (
        RetentionMode.RETAIN_AS_PER_POLICY.value,
        "Retain backup data as per policy",
    )
    DELETE_DATA = "delete_data", "Delete backup data"


class BinKind(models.TextChoices):
    """What a recycle-bin entry holds."""

    ITEM = "item", "Protected VM"
    RECOVERY_POINT = "recovery_point", "Recovery point"


class ScopedQuerySet(models.QuerySet[_Row]):
    """A queryset of vault-scoped rows (each has a `vault`); `vaults.access.visible` narrows it
    to what a user may see."""

    def in_vaults(self, ids: list[int] | None) -> Self:
        """The rows of the vaults `ids` (None: every vault)."""
        return self if ids is None else self.filter(vault__in=ids)


_Item = TypeVar("_Item", bound="ProtectedVM")


class ProtectedVMQuerySet(ScopedQuerySet[_Item]):
    def live(self) -> Self:
        """Items outside the recycle bin (a VM has at most one)."""
        return self.exclude(state=ItemState.SOFT_DELETED)

    def named(self, vm_name: str) -> _Item | None:
        """The item a VM name means among these: the live one if there is one (a soft-deleted
        item and a newer live one may share the VM), else the newest."""
        binned_last = Case(
            When(state=ItemState.SOFT_DELETED, then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
        return (
            self.filter(vm__name=vm_name)
            .annotate(binned=binned_last)
            .order_by("binned", "-created_at", "-pk")
            .first()
        )

    def purge_due(self, now: datetime) -> Self:
        """Soft-deleted items whose purge time has passed by the real clock: the purge job
        takes them, and nobody can undelete them any more."""
        return self.filter(state=ItemState.SOFT_DELETED, purge_at__lte=now)


class ProtectedVM(models.Model):
    vault = models.ForeignKey(Vault, on_delete=models.PROTECT, related_name="protected_items")
    vm = models.ForeignKey(
        "inventory.VirtualMachine", on_delete=models.PROTECT, related_name="protections"
    )
    policy = models.ForeignKey(
        "policies.BackupPolicy", on_delete=models.PROTECT, related_name="protected_items"
    )
    # At most one of these is set; neither means every disk. Enhanced policies only.
    included_luns = models.JSONField(null=True, blank=True)
    excluded_luns = models.JSONField(null=True, blank=True)
    state = models.CharField(
        max_length=24, choices=ItemState, default=ItemState.INITIAL_BACKUP_PENDING
    )
    retention_mode = models.CharField(max_length=24, choices=RetentionMode, blank=True)
    # The schedule slot of the last scheduled backup, so a slot is never run twice.
    last_scheduled_slot = models.DateTimeField(null=True, blank=True)
    last_backup_at = models.DateTimeField(null=True, blank=True)
    last_backup_status = models.CharField(max_length=24, blank=True)
    protected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Exact space accounting of all its RPs together (`vaults.accounting`): bytes freed if the
    # item's backup data were deleted and collected, and bytes shared with other items.
    unique_bytes = models.BigIntegerField(null=True, blank=True)
    shared_bytes = models.BigIntegerField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # When protection was stopped (either retain mode, or delete data) and by whom.
    stopped_at = models.DateTimeField(null=True, blank=True)
    stopped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A soft-deleted item's data is purged at this time (deleted_at + the days below).
    purge_at = models.DateTimeField(null=True, blank=True)
    # The vault's soft-delete setting in force when the item was deleted: it governs the item
    # even if the vault's setting changes later.
    deleted_soft_delete_state = models.CharField(max_length=10, choices=SoftDeleteState, blank=True)
    deleted_soft_delete_days = models.PositiveSmallIntegerField(null=True, blank=True)

    objects = ProtectedVMQuerySet.as_manager()

    class Meta:
        ordering = ["vault", "vm__name"]
        verbose_name = "protected VM"
        indexes = [
            # The purge job and the upcoming-purge alert: soft-deleted items by purge time.
            models.Index(
                fields=["purge_at"], name="item_purge_at", condition=Q(purge_at__isnull=False)
            ),
        ]
        constraints = [
            # A VM is protected in at most one vault at a time (soft-deleted items don't count).
            models.UniqueConstraint(
                fields=["vm"],
                condition=~Q(state=ItemState.SOFT_DELETED),
                name="vm_protected_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.vm.name} in {self.vault.name}"

    def selected_luns(self, all_luns: list[int]) -> list[int]:
        if self.included_luns is not None:
            return [lun for lun in all_luns if lun in self.included_luns or lun == -1]
        if self.excluded_luns is not None:
            return [lun for lun in all_luns if lun not in self.excluded_luns]
        return list(all_luns)


class RPType(models.TextChoices):
    SNAPSHOT = "snapshot", "Snapshot"
    SNAPSHOT_AND_VAULT = "snapshot_and_vault", "Snapshot and vault"
    VAULT = "vault", "Vault"


# The snapshot method of a copy read while the VM ran (`engine.connectors.spec.Method`).
LIVE_READ = "live_read"


class RPConsistency(models.TextChoices):
    APPLICATION = "application", "Application-consistent"
    FILE_SYSTEM = "file_system", "File-system-consistent"
    CRASH = "crash", "Crash-consistent"


class Verification(models.TextChoices):
    """What the last restore drill of a recovery point proved (jobs/drill.py)."""

    NEVER = "never", "Never verified"
    PASSED = "passed", "Verified"
    FAILED = "failed", "Drill failed"


class Anomaly(models.TextChoices):
    """The ransomware signal of a recovery point (jobs/anomaly.py)."""

    NONE = "none", "None"
    SUSPICIOUS = "suspicious", "Suspicious"


class Replication(models.TextChoices):
    """A recovery point's second copy (vaults with a secondary location)."""

    NONE = "none", "Not replicated"
    PENDING = "pending", "Replication pending"
    REPLICATED = "replicated", "Replicated"
    FAILED = "failed", "Replication failed"


class RecoveryPointQuerySet(ScopedQuerySet["RecoveryPoint"]):
    # The one order that names an item's latest recovery point (time ties broken by id).
    LATEST_FIRST = ("-time", "-pk")

    def live(self) -> Self:
        """Recovery points outside the recycle bin."""
        return self.filter(soft_deleted_at=None)

    def latest_of(self, item: "ProtectedVM") -> "RecoveryPoint | None":
        """The item's latest live recovery point. It is always kept, whatever its expiry says
        (retention recompute, cleanup, protection stopped as per policy), and stays
        restorable."""
        live = RecoveryPoint.objects.live().filter(protected_item=item)
        return live.order_by(*self.LATEST_FIRST).first()

    def except_latest(self) -> Self:
        """These recovery points without the latest live one of each item (see `latest_of`)."""
        latest = (
            RecoveryPoint.objects.live()
            .filter(protected_item=OuterRef("protected_item"))
            .order_by(*self.LATEST_FIRST)
            .values("pk")[:1]
        )
        return self.exclude(pk=Subquery(latest))

    def purge_due(self, now: datetime) -> Self:
        """Recycle-bin entries whose purge time has passed by the real clock (the purge job's)."""
        return self.filter(soft_deleted_at__isnull=False, purge_at__lte=now)


class RecoveryPoint(models.Model):
    # The tag of a backup taken on demand (kept until its own retain-until date).
    ON_DEMAND = "on_demand"

    # Chosen by the engine and written into the store's manifest: survives a catalog rebuild.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    vault = models.ForeignKey(Vault, on_delete=models.PROTECT, related_name="recovery_points")
    protected_item = models.ForeignKey(
        ProtectedVM, on_delete=models.PROTECT, related_name="recovery_points"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    time = models.DateTimeField()
    # The schedule slot a scheduled backup ran for: retention places the RP on that slot's day,
    # whenever it ran. None when no slot made it (on demand, a restore's safety RP).
    slot = models.DateTimeField(null=True, blank=True)
    consistency = models.CharField(max_length=12, choices=RPConsistency)
    in_snapshot_tier = models.BooleanField(default=True)
    in_vault_tier = models.BooleanField(default=False)
    # Set while the RP still has to reach the vault tier; its snapshot copy is kept until then.
    transfer_due = models.BooleanField(default=False)
    transfer_attempts = models.PositiveIntegerField(default=0)
    last_transfer_at = models.DateTimeField(null=True, blank=True)
    snapshot_expires_at = models.DateTimeField(null=True, blank=True)
    # The copy in the vault's secondary location: pending once in the vault tier, until a
    # `replicate` job copies it; failed ones are retried with backoff.
    replication = models.CharField(max_length=12, choices=Replication, default=Replication.NONE)
    replicated_at = models.DateTimeField(null=True, blank=True)
    replication_error = models.CharField(max_length=500, blank=True)
    replication_attempts = models.PositiveIntegerField(default=0)
    last_replication_at = models.DateTimeField(null=True, blank=True)
    # The S3 Object Lock date this RP's objects carry in the vault store and in the secondary
    # copy, as the job that set or checked it recorded (None: not locked there, or not known).
    # The lock sweep (`jobs.locks.queue_short_locks`) compares it with the date retention
    # needs, so finding short locks costs no store listing.
    vault_locked_until = models.DateTimeField(null=True, blank=True)
    secondary_locked_until = models.DateTimeField(null=True, blank=True)
    # The last restore drill: its outcome, when it ended, and what it proved
    # ({"job", "tier", "checks": [{"name", "status", "detail"}], "duration", "manifest_digest"}).
    verification = models.CharField(max_length=8, choices=Verification, default=Verification.NEVER)
    verified_at = models.DateTimeField(null=True, blank=True)
    drill = models.JSONField(default=dict, blank=True)
    # The ransomware signal: `suspicious` when the backup's change figures jumped beyond the
    # VM's own history; `signal` keeps the figures and the reasons (jobs/anomaly.py).
    anomaly = models.CharField(max_length=12, choices=Anomaly, default=Anomaly.NONE)
    signal = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    # None means kept forever (or, for the latest RP, kept until a newer one exists).
    expires_at = models.DateTimeField(null=True, blank=True)
    retain_until = models.DateTimeField(null=True, blank=True)
    # [{"lun": -1, "size": 123, "stored": 45}, ...]
    disks = models.JSONField(default=list)
    included_luns = models.JSONField(default=list)
    excluded_luns = models.JSONField(default=list)
    size_bytes = models.BigIntegerField(default=0)
    # How the snapshot saw the disks (the connector's method: "reflink", "frozen_read",
    # "live_read", "stopped", "backup_job"); "live_read" is no point-in-time copy.
    snapshot_method = models.CharField(max_length=20, blank=True)
    # Plaintext bytes the vault already held when this RP was transferred (deduplication);
    # None until it reached the vault tier.
    vault_present_bytes = models.BigIntegerField(null=True, blank=True)
    # libvirt hosts: {"checkpoint": str | None, "domain_xml": str}: the checkpoint whose dirty
    # bitmap the next backup reads from, and the domain as it was (for restores).
    hypervisor = models.JSONField(default=dict, blank=True)
    # In the recycle bin since soft_deleted_at, until purge_at; see BinReason.
    soft_deleted_at = models.DateTimeField(null=True, blank=True)
    soft_deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    soft_delete_reason = models.CharField(max_length=20, choices=BinReason, blank=True)
    purge_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Exact space accounting (`vaults.accounting`): stored bytes freed if it were deleted and
    # garbage collected, and stored bytes it shares with other RPs; None until first measured.
    unique_bytes = models.BigIntegerField(null=True, blank=True)
    shared_bytes = models.BigIntegerField(null=True, blank=True)
    # Its presence in the secondary copy, as last measured: the stored bytes deleting it there
    # would free; None when the secondary holds no manifest of it (or has not been measured).
    secondary_unique_bytes = models.BigIntegerField(null=True, blank=True)

    objects = RecoveryPointQuerySet.as_manager()

    class Meta:
        ordering = ["-time"]
        indexes = [
            # The recovery-point list of one item, newest first.
            models.Index(fields=["protected_item", "-time"], name="rp_item_time"),
            # The purge job and the upcoming-purge alert: bin entries by purge time.
            models.Index(
                fields=["purge_at"], name="rp_purge_at", condition=Q(purge_at__isnull=False)
            ),
            # Replication retries and the vault page's lag: RPs whose second copy is owed.
            models.Index(
                fields=["vault", "time"],
                name="rp_replication_owed",
                condition=Q(replication__in=["pending", "failed"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.protected_item.vm.name} @ {self.time:%Y-%m-%d %H:%M}"

    @property
    def type(self) -> str:
        if self.in_snapshot_tier and self.in_vault_tier:
            return RPType.SNAPSHOT_AND_VAULT
        if self.in_snapshot_tier:
            return RPType.SNAPSHOT
        return RPType.VAULT

    def get_type_display(self) -> str:
        return RPType(self.type).label

    @property
    def changed_bytes(self) -> int:
        """Bytes that differed from the previous recovery point, summed over its disks."""
        return sum(int(d.get("bytes_changed", 0)) for d in self.disks)

    @property
    def point_in_time(self) -> bool:
        """False when the disks were read while the VM kept writing (no clone, no freeze)."""
        return self.snapshot_method != LIVE_READ

    @property
    def consistency_label(self) -> str:
        """The consistency's label; a copy read live says it is no point-in-time copy."""
        label = RPConsistency(self.consistency).label
        return label if self.point_in_time else f"{label}, not point-in-time (read live)"

    @property
    def is_on_demand(self) -> bool:
        """Taken on demand: kept until its own retain-until date, whatever the policy says."""
        return self.retain_until is not None or self.ON_DEMAND in self.tags


class FileRecoverySession(models.Model):
    """Read-only access to one recovery point's files, audited and expiring (Azure: 12 h)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    vault = models.ForeignKey(Vault, on_delete=models.CASCADE, related_name="file_sessions")
    recovery_point = models.ForeignKey(
        RecoveryPoint, on_delete=models.CASCADE, related_name="file_sessions"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="file_sessions"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"File recovery of {self.recovery_point_id} by {self.user}"

    def is_open(self, now: datetime | None = None) -> bool:
        return self.ended_at is None and self.expires_at > (now or timezone.now())


class AuditQuerySet(ScopedQuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise PermissionDenied("The audit log is append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionDenied("The audit log is append-only.")


class AuditEvent(models.Model):
    """Who did what, when, from where, with the state before and after. Append-only."""

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text too, so the record survives the user's deletion.
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=60)
    vault = models.ForeignKey(
        Vault, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    vault_name = models.CharField(max_length=50, blank=True)
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionDenied("The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionDenied("The audit log is append-only.")


# -- usage history --------------------------------------------------------------------------------


class VaultUsage(models.Model):
    """One vault's storage on one day, for the overview's trend and the usage report.

    Written by `vaults.usage.record_day` (periodic); a day's row is rewritten by each run of
    that day, so the last run of a day stands for it. A day nobody recorded has no row: the
    history never invents a past.
    """

    vault = models.ForeignKey(Vault, on_delete=models.CASCADE, related_name="usage_days")
    day = models.DateField()
    # Disk sizes of the live recovery points (the catalog): what is protected.
    logical_bytes = models.BigIntegerField(default=0)
    # Chunk files on every tier walked (vault tier, snapshot tiers, secondary copy).
    stored_bytes = models.BigIntegerField(default=0)
    # The vault tier alone, and its dedup figures (`engine.stats`).
    vault_stored_bytes = models.BigIntegerField(default=0)
    referenced_bytes = models.BigIntegerField(default=0)
    unique_bytes = models.BigIntegerField(default=0)
    # False when the vault store could not be measured (object storage this process cannot
    # read): the stored figures above are then zeros that mean "unknown".
    stats_known = models.BooleanField(default=True)
    # The vault store's file system (local stores); None: unknown (object storage).
    free_bytes = models.BigIntegerField(null=True, blank=True)
    capacity_bytes = models.BigIntegerField(null=True, blank=True)
    recovery_points = models.PositiveIntegerField(default=0)
    protected_items = models.PositiveIntegerField(default=0)
    recorded_at = models.DateTimeField()

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["vault", "day"]
        constraints = [
            # One row per vault and day; also serves the charts' "vault's days in a range".
            models.UniqueConstraint(fields=["vault", "day"], name="vault_usage_one_per_day"),
        ]

    def __str__(self) -> str:
        return f"{self.vault.name} on {self.day}"

    @property
    def dedup_ratio(self) -> float | None:
        return self.referenced_bytes / self.unique_bytes if self.unique_bytes else None


class ItemUsage(models.Model):
    """One protected item's recovery points on one day (see `VaultUsage`)."""

    vault = models.ForeignKey(Vault, on_delete=models.CASCADE, related_name="item_usage_days")
    # The history outlives a purged item; its VM's name is kept as text.
    protected_item = models.ForeignKey(
        ProtectedVM, null=True, on_delete=models.SET_NULL, related_name="usage_days"
    )
    vm_name = models.CharField(max_length=63)
    day = models.DateField()
    state = models.CharField(max_length=24, choices=ItemState)
    # Disk sizes of its live recovery points, and the bytes their backups added to the
    # snapshot tier (what the item cost before other items' chunks were shared with it).
    logical_bytes = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0)
    recovery_points = models.PositiveIntegerField(default=0)
    recorded_at = models.DateTimeField()

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["vault", "vm_name", "day"]
        indexes = [
            # The usage report: every item's rows of the visible vaults in a date range.
            models.Index(fields=["day", "vault"], name="item_usage_day_vault"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["protected_item", "day"], name="item_usage_one_per_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.vm_name} on {self.day}"
