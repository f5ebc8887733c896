"""Rebuild a vault's catalog from its store (disaster recovery; see README).

    manage.py attach_vault NAME LOCATION [--target TARGET] --as ADMIN

Reads the store at LOCATION (a directory, or s3://bucket/prefix / az://container/prefix with
the registered storage target TARGET that reaches it) with the installed master key and
recreates vault NAME: its
items as "protection stopped, retain data", every recovery point with its id, tags, expiry
and tier. Register the hosts and VMs first; put the master key back first.
"""

from argparse import ArgumentParser

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from vaults.attach import attach_vault
from vaults.models import StorageTarget


class Command(BaseCommand):
    help = "Attach an existing vault store: recreate the vault and its recovery points."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="Name of the vault to recreate.")
        parser.add_argument(
            "location",
            help="The vault store's directory, s3://bucket/prefix or az://container/prefix.",
        )
        parser.add_argument(
            "--target",
            default=None,
            help="For s3:// and az:// locations: the registered storage target that reaches it.",
        )
        parser.add_argument(
            "--as", dest="admin", required=True, help="Site administrator who becomes its owner."
        )

    def handle(
        self,
        *args: str,
        name: str,
        location: str,
        target: str | None,
        admin: str,
        **options: object,
    ) -> None:
        user = User.objects.filter(username=admin, is_superuser=True).first()
        if user is None:
            raise CommandError(f"--as: no site administrator named {admin}.")
        storage_target = None
        if target is not None:
            storage_target = StorageTarget.objects.filter(name=target).first()
            if storage_target is None:
                raise CommandError(f"--target: no storage target named {target}.")
        try:
            vault = attach_vault(
                name=name, location=location, storage_target=storage_target, by=user
            )
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
