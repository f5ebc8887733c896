"""Signals of the security app, defined below everything that sends or receives them.

A key reader (`security.master_key`) announces a key it cannot use without importing
`security.alerts`, which sits above it; alerts subscribe.
"""

from django.dispatch import Signal

# A vault cannot get its key-encryption key. Arguments: vault (Vault), message (str, what is
# wrong and what it stops). `security.alerts` raises the vault's key alert.
key_unavailable = Signal()
