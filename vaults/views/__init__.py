"""Vault pages, one module per topic: `vault` (list, create, overview, delete), `settings`
(settings, encryption), `items` (protected VMs, backup now), `protection` (protect, change
policy, stop, resume), `recycle_bin` (the bins, undelete, purge), `access` (members, guard
approvers, linked hosts), `recovery` (restore, file recovery); `common` holds what they share.

Each view first asks `access.get_vault(user, name, action)` (404 for non-members, 403 for a
role too low), then lets the domain modules (`vaults.services.*`, `vaults.protection`,
`vaults.lifecycle`) do any change.
"""
