"""Backup policies: a schedule and retention rules, stored in their API representation.

`schedule` and `retention` are kept as the canonical JSON that `policies.spec` validates, so
the pure functions in `schedule.py` and `retention.py` take exactly what the API shows.
"""

from django.db import models


class PolicyKind(models.TextChoices):
    STANDARD = "standard", "Standard"
    ENHANCED = "enhanced", "Enhanced"


class Consistency(models.TextChoices):
    DEFAULT = "default", "Default"
    CRASH_ONLY = "crash_only", "Crash-consistent only"


class BackupPolicy(models.Model):
    DEFAULT_NAME = "DefaultPolicy"

    vault = models.ForeignKey("vaults.Vault", on_delete=models.CASCADE, related_name="policies")
    name = models.CharField(max_length=50)
    kind = models.CharField(max_length=10, choices=PolicyKind, default=PolicyKind.STANDARD)
    timezone = models.CharField(max_length=64, default="UTC")
    consistency = models.CharField(max_length=12, choices=Consistency, default=Consistency.DEFAULT)
    schedule = models.JSONField()
    instant_restore_days = models.PositiveSmallIntegerField(default=2)
    retention = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["vault", "name"]
        verbose_name_plural = "backup policies"
        constraints = [
            models.UniqueConstraint(fields=["vault", "name"], name="policy_unique_name_per_vault"),
        ]

    def __str__(self) -> str:
        return self.name

    def representation(self) -> dict:
        """The canonical representation (what the API returns and `policies.spec` validates)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "timezone": self.timezone,
            "consistency": self.consistency,
            "schedule": self.schedule,
            "instant_restore_days": self.instant_restore_days,
            "retention": self.retention,
        }

    def apply_representation(self, rep: dict) -> None:
        for field in ("name", "kind", "timezone", "consistency", "schedule", "retention"):
            setattr(self, field, rep[field])
        self.instant_restore_days = rep["instant_restore_days"]
