"""Plain words for every code the product stores: statuses, operations, methods, tags, error
and warning codes, audit actions, weekdays. The API speaks the codes; every page shows them
through `words` (the `words` template filter), so no `completed_with_warnings`, `frozen_read`
or `policy.update` reaches a screen.

The labels of the models' choices come first (one source for forms and pages), then the
codes no model lists; anything else is spelled out from its parts, never shown raw.
"""

from django.db import models

from inventory.models import Connector, ExtensionState, OSType, PowerState
from jobs.models import Operation, RestoreKind, RestoreTier, Status
from policies.models import Consistency, PolicyKind
from policies.spec import DAY_NAMES, MONTH_NAMES
from security.models import AlertStatus, ApprovalStatus, Severity
from vaults.models import (
    BinReason,
    Immutability,
    ItemState,
    Replication,
    RetentionMode,
    Role,
    RPConsistency,
    RPType,
    SoftDeleteState,
    StopMode,
)

CHOICES: list[type[models.TextChoices]] = [
    Status,
    Operation,
    RestoreKind,
    ItemState,
    RPConsistency,
    RPType,
    Replication,
    RetentionMode,
    BinReason,
    StopMode,
    Role,
    SoftDeleteState,
    Immutability,
    ApprovalStatus,
    AlertStatus,
    Severity,
    PowerState,
    ExtensionState,
    OSType,
    Connector,
    PolicyKind,
    Consistency,
]

# Codes no model's choices list (recovery-point tags, snapshot methods, change detection,
# extension and job codes, weekdays, restore tiers in short).
EXTRA = {
    # recovery point tags and schedule words
    "on_demand": "On demand",
    "daily": "Daily",
    "weekly": "Weekly",
    "monthly": "Monthly",
    "yearly": "Yearly",
    "hourly": "Hourly",
    "standard": "Standard",
    "enhanced": "Enhanced",
    **DAY_NAMES,
    **MONTH_NAMES,
    "first": "First",
    "second": "Second",
    "third": "Third",
    "fourth": "Fourth",
    "last": "Last",
    # how a snapshot saw the disks (engine.connectors.spec.Method)
    "reflink": "Copy-on-write clone",
    "frozen_read": "Read while frozen",
    "live_read": "Read live (not point-in-time)",
    "stopped": "Stopped",
    "backup_job": "Hypervisor backup job",
    "offline": "Offline (VM shut off)",
    # how a disk's changes were found
    "dirty_bitmap": "Dirty bitmap",
    "allocation": "Allocated extents",
    "full_read": "Full read, compared by hash",
    "changed_extents": "Changed extents",
    "full": "Full read (first backup)",
    "full-read": "Full read, compared by hash",
    "changed-extents": "Changed extents",
    # restore tiers
    "snapshot": "Snapshot tier",
    "vault": "Vault tier",
    "secondary": "Secondary copy",
    "primary": "Primary",
    "auto": RestoreTier.AUTO.label,
    # extension, hook and job codes
    "pre_script_not_found": "Pre-script not found",
    "post_script_not_found": "Post-script not found",
    "script_not_executable": "Script not executable",
    "insecure_permissions": "Insecure permissions",
    "invalid_configuration": "Invalid configuration",
    "pre_script_timeout": "Pre-script timed out",
    "post_script_timeout": "Post-script timed out",
    "pre_script_failed": "Pre-script failed",
    "post_script_failed": "Post-script failed",
    "freeze_failed": "Freeze failed",
    "thaw_failed": "Thaw failed",
    "freeze_timeout": "Freeze timed out",
    "agent_unavailable": "Guest agent unavailable",
    "transfer_failed": "Transfer failed",
    "no_space": "No space left",
    "key_unavailable": "Encryption key unavailable",
    "corruption": "Damaged data",
    "worker_lost": "Worker lost",
    "target_changed": "Restore target changed",
    "disk_not_found": "Disk not found",
    "source_unreadable": "Disk unreadable",
    "secondary_unreachable": "Secondary copy unreachable",
    "replication_failed": "Replication failed",
    "never": "Never",
    "passed": "Passed",
    "none": "None",
}

# Audit actions are "<subject>.<verb>": the verb in the past tense.
VERBS = {
    "create": "created",
    "update": "changed",
    "delete": "deleted",
    "enable": "enabled",
    "disable": "disabled",
    "rotate": "rotated",
    "stop": "stopped",
    "resume": "resumed",
    "undelete": "undeleted",
    "purge": "purged",
    "purge_now": "purged early",
    "request": "requested",
    "execute": "carried out",
    "expire": "expired",
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "cancel": "cancelled",
    "revoke": "revoked",
    "now": "started on demand",
    "open": "opened",
    "end": "ended",
    "download": "downloaded",
    "download_failed": "download failed",
    "lockout": "locked out",
    "discover": "discovered",
    "test": "tested",
    "test_connection": "connection tested",
    "link_host": "host linked",
    "unlink_host": "host unlinked",
    "extension_repair": "extension repair asked",
    "create_from_restore": "created by a restore",
    "key_update": "key changed",
    "key_rotate": "key rotated",
    "key_enable": "key enabled",
    "key_disable": "key disabled",
}


def _table() -> dict[str, str]:
    table: dict[str, str] = {}
    for choices in CHOICES:
        for value, label in choices.choices:
            table.setdefault(str(value), str(label))
    table.update({k: v for k, v in EXTRA.items() if k not in table or k in _PREFERRED})
    return table


# Where a bare code means something else on its own than in its model (a tier, not an RP
# type; a day's tag, not a policy frequency).
_PREFERRED = {"snapshot", "vault"}

WORDS = _table()


def _spelled(code: str) -> str:
    text = code.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def words(value: object) -> str:
    """The plain words of a stored code; "" for nothing."""
    if value is None or value == "":
        return ""
    code = str(value)
    if code in WORDS:
        return WORDS[code]
    subject, dot, verb = code.partition(".")
    if dot:
        return f"{_spelled(subject)} {VERBS.get(verb, _spelled(verb).lower())}"
    return _spelled(code)
