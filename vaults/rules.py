"""The rule vocabulary every domain module shares; it imports nothing of the apps.

A rule that refuses an operation as things stand raises `RuleBlocked` (the API answers 409 with
the rule's name). A missing role stays `PermissionDenied` (403); a critical operation waiting
for a guard approver is `security.mua.ApprovalRequired` (202).
"""

from typing import Protocol

from django.core.exceptions import ValidationError

# Rule names (the API's 409 body carries them as "rule").
RULE_IMMUTABILITY = "immutability"
RULE_IMMUTABILITY_LOCKED = "immutability_locked"
RULE_IMMUTABILITY_LOCK_ORDER = "immutability_lock_order"
RULE_ALWAYS_ON = "soft_delete_always_on"
RULE_SOFT_DELETE_ENABLED = "soft_delete_enabled"
RULE_ITEM_STATE = "item_state"
RULE_JOB_RUNNING = "job_running"
RULE_VM_PROTECTED = "vm_protected_elsewhere"
RULE_PURGE_DUE = "purge_due"
# Multi-user authorization, keys and alerts.
RULE_MUA_NO_GUARD = "mua_needs_guard_approver"
RULE_MUA_LAST_GUARD = "mua_last_guard_approver"
RULE_APPROVAL_STATE = "approval_not_pending"
RULE_APPROVAL_FAILED = "approval_operation_failed"
RULE_CMK_IRREVERSIBLE = "customer_managed_key_irreversible"
RULE_CMK_AFTER_PROTECTION = "customer_managed_key_before_protection"
RULE_KEY_UNUSABLE = "key_unusable"
RULE_KEY_ROTATION = "key_rotation_in_progress"
RULE_ALERT_STATE = "alert_state"


class RuleBlocked(ValidationError):
    """A rule of the domain refuses the operation as things stand (the API answers 409).

    A Django `ValidationError` keyed by `field`, so pages that show errors by field keep
    working; `rule` names the rule and `text` is the message.
    """

    def __init__(self, message: str, *, rule: str, field: str = "detail") -> None:
        super().__init__({field: [message]})
        self.rule = rule
        self.field = field
        self.text = message


def blocked(message: str, *, rule: str, field: str = "detail") -> RuleBlocked:
    return RuleBlocked(message, rule=rule, field=field)


class ImmutableVault(Protocol):
    """What the immutability refusal says of a vault (`vaults.models.Vault` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def immutability_locked(self) -> bool: ...


def immutability_blocks(what: str, vault: ImmutableVault, *, field: str = "detail") -> RuleBlocked:
    """The refusal of an operation that would lose data early in an immutable vault."""
    label = "locked" if vault.immutability_locked else "unlocked"
    return RuleBlocked(
        f"Vault {vault.name} is immutable ({label}): {what}",
        rule=RULE_IMMUTABILITY,
        field=field,
    )
