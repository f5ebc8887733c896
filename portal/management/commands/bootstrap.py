"""First start: the platform master key, and an `admin` site administrator with a generated
password, printed once.

Every later start only checks the master key: a missing or different key file is reported,
never replaced (see `security.master_key`), and the server still starts so that the vaults'
Sev-0 alerts can be seen.
"""

import secrets
from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

import engine
from inventory.demo import ensure_demo_lab
from security import master_key


class Command(BaseCommand):
    help = (
        "Create the master key, the first site administrator and the demo lab if they do not "
        "exist yet."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--no-demo", action="store_true", help="Skip the demo lab.")

    def handle(self, *args: Any, **options: Any) -> None:
        self._master_key()
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "", password)
            bar = "=" * 60
            self.stdout.write(
                f"\n{bar}\n  Lifeboat site administrator created\n"
                f"  user:     admin\n  password: {password}\n"
                f"  (reset: .venv/bin/python manage.py changepassword admin)\n{bar}\n"
            )
        if not options["no_demo"]:
            for line in ensure_demo_lab():
                self.stdout.write(line)

    def _master_key(self) -> None:
        try:
            self.stdout.write(master_key.install())
        except engine.KeyUnavailable as e:
            bar = "!" * 60
            self.stderr.write(
                self.style.ERROR(
                    f"\n{bar}\n  The master key is unavailable: {e}.\n"
                    "  Backups, restores and file recovery of vaults that use it fail until\n"
                    f"  the original file is back. It is never recreated.\n{bar}\n"
                )
            )
