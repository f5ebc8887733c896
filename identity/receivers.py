"""A vault created after a directory user's last sign-in gets the roles its name's mappings
grant at once, not at each user's next sign-in."""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from identity.models import GroupMapping
from identity.sync import sync_everyone
from vaults.models import Vault


@receiver(post_save, sender=Vault, dispatch_uid="identity-vault-created")
def _vault_created(sender: type[Vault], instance: Vault, created: bool, **kwargs: Any) -> None:
    if created and not kwargs.get("raw") and GroupMapping.objects.exists():
        # After the commit: the creating transaction adds the creator's membership first.
        name = instance.name
        transaction.on_commit(lambda: sync_everyone(by=None, reason=f"vault {name} created"))
