"""Rebuild a vault's catalog from its store (disaster recovery; see README).

    manage.py attach_vault NAME LOCATION --as ADMIN

Reads the store at LOCATION with the installed master key and recreates vault NAME: its
items as "protection stopped, retain data", every recovery point with its id, tags, expiry
and tier. Register the hosts and VMs first; put the master key back first.
"""

from argparse import ArgumentParser

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from vaults.attach import attach_vault


class Command(BaseCommand):
    help = "Attach an existing vault store: recreate the vault and its recovery points."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="Name of the vault to recreate.")
        parser.add_argument("location", help="The vault store's directory.")
        parser.add_argument(
            "--as", dest="admin", required=True, help="Site administrator who becomes its owner."
        )

    def handle(self, *args: str, name: str, location: str, admin: str, **options: object) -> None:
        user = User.objects.filter(username=admin, is_superuser=True).first()
        if user is None:
            raise CommandError(f"--as: no site administrator named {admin}.")
        try:
            vault = attach_vault(name=name, location=location, by=user)
        except ValidationError as e:
            raise CommandError(
                " ".join(f"{field}: {' '.join(msgs)}" for field, msgs in e.message_dict.items())
            ) from e
        items = vault.protected_items.count()
        points = vault.recovery_points.count()
        self.stdout.write(
            f"Vault {vault.name} attached from {location}: {items} protected item(s) "
            f"(protection stopped, retain data), {points} recovery point(s)."
        )
