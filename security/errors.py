"""Exceptions the security rules raise; the API maps them (portal/api/exceptions.py).

Refusals are `vaults.lifecycle.RuleBlocked` (409 naming the rule), like every other domain
rule. A critical operation under MUA raises `ApprovalRequired` (202). Both are Django
`ValidationError`s, so a page that shows a service's error as a form message shows these too.
"""

from django.core.exceptions import ValidationError

from vaults.lifecycle import RuleBlocked

# Rule names (the 409 body's "rule").
RULE_MUA_NO_GUARD = "mua_needs_guard_approver"
RULE_MUA_LAST_GUARD = "mua_last_guard_approver"
RULE_APPROVAL_STATE = "approval_not_pending"
RULE_APPROVAL_FAILED = "approval_operation_failed"
RULE_CMK_IRREVERSIBLE = "customer_managed_key_irreversible"
RULE_CMK_AFTER_PROTECTION = "customer_managed_key_before_protection"
RULE_KEY_UNUSABLE = "key_unusable"
RULE_KEY_ROTATION = "key_rotation_in_progress"
RULE_ALERT_STATE = "alert_state"


def blocked(message: str, *, rule: str, field: str = "detail") -> RuleBlocked:
    return RuleBlocked(message, rule=rule, field=field)


class ApprovalRequired(ValidationError):
    """The operation waits for a guard approver (MUA); nothing was changed (API: 202).

    `approval` is the pending request. A caller inside an enclosing `transaction.atomic()`
    loses the row when the block rolls back on this exception: call `persist()` where the
    exception is caught (the API's exception handler does) to write it again.
    """

    def __init__(self, approval, message: str):
        super().__init__({"detail": [message]})
        self.approval = approval
        self.text = message

    def persist(self):
        from security import mua

        self.approval = mua.ensure_saved(self.approval)
        return self.approval
