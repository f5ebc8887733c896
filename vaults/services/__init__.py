"""Domain operations on vaults, their policies, members and linked hosts, by subject.

Pages and the API both call these, so a rule is enforced once. Each function checks the
actor's role through `vaults.access`, validates, changes the rows in one transaction and writes
the audit log. Rule violations raise `ValidationError` keyed by the field at fault. Callers
import the module of the subject they change: `vaults.services.vaults` (a vault's settings,
creating and deleting it), `policies`, `members` (roles and guard approvers), `hosts`.
"""
