"""MUA approvals, customer-managed keys, the master key's fingerprint, alerts, per-vault alert
settings, login failures.

Vault-scoped rows use `vaults.models.ScopedQuerySet`, so `access.visible(rows, user)` filters them
through `vaults.access` like every other vault-scoped queryset.
"""

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from vaults.models import ScopedQuerySet, vault_name_validator

# -- multi-user authorization ------------------------------------------------------------------


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    EXECUTED = "executed", "Executed"


class Approval(models.Model):
    """One critical operation waiting for (or decided by) a guard approver of its vault.

    `params` is everything the operation needs to run later, on behalf of the requester,
    exactly as asked (a PATCH mixing gated and free changes waits whole).
    """

    vault = models.ForeignKey("vaults.Vault", on_delete=models.CASCADE, related_name="approvals")
    operation = models.CharField(max_length=40)
    # What the requester asked for, in words, and which MUA rules made it critical.
    summary = models.CharField(max_length=300)
    reasons = models.JSONField(default=list)
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=ApprovalStatus, default=ApprovalStatus.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text too, so the request reads the same after the user's deletion.
    requested_by_name = models.CharField(max_length=150)
    requested_at = models.DateTimeField(default=timezone.now)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    expires_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=500, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    # Set when an approved operation could not run (the vault changed meanwhile).
    error = models.TextField(blank=True)

    objects = ScopedQuerySet.as_manager()

    # Not columns: what the approvals pages show of each row (security.views._decorate).
    shown_status: str
    can_decide: bool
    own: bool
    # Approving asks this viewer for a fresh code from their second factor.
    needs_code: bool

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [
            # The approvals list of one vault, pending first by the view's filter, newest first.
            models.Index(fields=["vault", "status", "-requested_at"], name="approval_vault_status"),
        ]

    def __str__(self) -> str:
        return f"{self.operation} in {self.vault_id} by {self.requested_by_name} ({self.status})"

    def current_status(self, now: datetime | None = None) -> str:
        """The status as of `now`: a pending request past its expiry is expired."""
        if self.status == ApprovalStatus.PENDING and self.expires_at <= (now or timezone.now()):
            return ApprovalStatus.EXPIRED
        return self.status


# -- customer-managed keys ----------------------------------------------------------------------


class CustomerKey(models.Model):
    """A customer-managed key-encryption key, registered by reference to a file on the server.

    The key itself is never stored here: the server reads `path` when it needs the key. The
    fingerprint (a hash that does not reveal the key) detects a file that now holds another
    key. `enabled=False` is a disabled key: backups and restores of its vaults fail.
    """

    name = models.CharField(max_length=50, unique=True, validators=[vault_name_validator])
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64)
    enabled = models.BooleanField(default=True)
    # Raised by each rotation; a vault whose assignment lags behind is still being re-wrapped.
    version = models.PositiveIntegerField(default=1)
    rotated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VaultKey(models.Model):
    """Which customer-managed key wraps a vault's data keys, and with which key file.

    `path`/`fingerprint`/`version` name the key file the vault's stores are wrapped with *now*;
    they move to the key's new file only when the vault's update_key job has re-wrapped them,
    so a rotation in progress never leaves a vault unreadable.
    """

    vault = models.OneToOneField(
        "vaults.Vault", on_delete=models.CASCADE, related_name="key_assignment"
    )
    key = models.ForeignKey(CustomerKey, on_delete=models.PROTECT, related_name="assignments")
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64)
    version = models.PositiveIntegerField(default=1)
    assigned_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.vault_id} uses {self.key_id} v{self.version}"


class MasterKey(models.Model):
    """The platform master key's fingerprint (one row), recorded when the key is installed.

    The key lives only in its file (`LIFEBOAT["MASTER_KEY_FILE"]`); this row lets every server
    tell the installed key from another one, including for a vault whose stores do not exist
    yet, so a swapped file never wraps new data.
    """

    fingerprint = models.CharField(max_length=64)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="master_key_single_row"),
        ]

    def __str__(self) -> str:
        return f"master key {self.fingerprint}"


# -- alerts --------------------------------------------------------------------------------------


class Severity(models.TextChoices):
    SEV0 = "sev0", "Sev 0"
    SEV1 = "sev1", "Sev 1"


class AlertStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class Alert(models.Model):
    vault = models.ForeignKey("vaults.Vault", on_delete=models.CASCADE, related_name="alerts")
    severity = models.CharField(max_length=4, choices=Severity)
    kind = models.CharField(max_length=40)
    status = models.CharField(max_length=12, choices=AlertStatus, default=AlertStatus.ACTIVE)
    message = models.TextField()
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    # Names the event: the same event never raises a second open alert (see alerts.fire).
    dedup_key = models.CharField(max_length=200)
    occurrences = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet.as_manager()

    # Not columns: what the alerts pages show of each row (security.views._alert_rows).
    can_ack: bool
    can_resolve: bool
    title: str

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one open alert per event; the database decides a race between workers.
            models.UniqueConstraint(
                fields=["dedup_key"],
                condition=~Q(status="resolved"),
                name="alert_dedup_open",
            ),
        ]
        indexes = [
            # The alerts list of one vault by status, newest first; the navigation badge.
            models.Index(fields=["vault", "status", "-created_at"], name="alert_vault_status"),
            # alerts.fire: has this event fired before (any status)?
            models.Index(fields=["dedup_key"], name="alert_dedup"),
        ]

    def __str__(self) -> str:
        return f"{self.get_severity_display()} {self.kind} in {self.vault_id} ({self.status})"


class VaultAlertSettings(models.Model):
    """Per-vault switches. Security alerts (Sev 0) have none: they cannot be turned off."""

    vault = models.OneToOneField(
        "vaults.Vault", on_delete=models.CASCADE, related_name="alert_settings"
    )
    # Sev-1 job alerts (backup failure, restore failure).
    job_alerts = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"alert settings of {self.vault_id}"


# -- login ---------------------------------------------------------------------------------------


class LoginFailure(models.Model):
    """One failed sign-in (page or API token endpoint); shared by every web process."""

    username = models.CharField(max_length=150)
    ip = models.GenericIPAddressField(null=True, blank=True)
    time = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # lockout.current_lock: recent failures of one username from one address.
            models.Index(fields=["username", "ip", "time"], name="login_failure_lookup"),
            # lockout.current_lock: recent failures from one address, whatever the username.
            models.Index(fields=["ip", "time"], name="login_failure_by_address"),
        ]

    def __str__(self) -> str:
        return f"{self.username} from {self.ip} at {self.time:%Y-%m-%d %H:%M:%S}"


# -- second factor -------------------------------------------------------------------------------


class SecondFactorRequired(models.TextChoices):
    NOBODY = "nobody", "Nobody (optional for everyone)"
    SITE_ADMINS = "site_admins", "Site administrators"
    EVERYONE = "everyone", "Everyone"


class SiteSecurity(models.Model):
    """Site-wide security settings: one row (pk 1), changed by site admins with an audit
    record (`security.second_factor.set_required`)."""

    # Who must have a second factor; one who has none is sent to enrolment after the password.
    second_factor_required = models.CharField(
        max_length=20,
        choices=SecondFactorRequired.choices,
        default=SecondFactorRequired.NOBODY,
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="site_security_one_row")]

    def __str__(self) -> str:
        return f"second factor required for {self.second_factor_required}"


class SecurityKey(models.Model):
    """A WebAuthn credential (a security key or a passkey) that answers the login's second
    step in place of the authenticator app's code (`security.security_keys`)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="security_keys"
    )
    name = models.CharField(max_length=64)
    # The credential's id (base64url) as the browser names it in every assertion.
    credential_id = models.CharField(max_length=1400)
    public_key = models.BinaryField()
    # The authenticator's signature counter: an assertion that does not raise it is a clone's.
    sign_count = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["credential_id"], name="security_key_credential")
        ]

    def __str__(self) -> str:
        return f"{self.name} of {self.user_id}"
