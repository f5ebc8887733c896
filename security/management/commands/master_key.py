"""The platform master key: create it at installation, check it, print it for safekeeping.

    manage.py master_key create        create the key (0600) and record its fingerprint, once;
                                       afterwards only checks the key that is there
    manage.py master_key fingerprint   the installed key's fingerprint (fails when the file is
                                       missing or holds another key)
    manage.py master_key export        the key in base64 and hex with its fingerprint: keep it
                                       somewhere safe, apart from the vault stores

To put an exported key back, write its base64 (or hex) value into the master key file
(`LIFEBOAT_MASTER_KEY_FILE`); `master_key fingerprint` then confirms it and makes it 0600.
"""

from argparse import ArgumentParser

from django.core.management.base import BaseCommand, CommandError

import engine
from security import master_key


class Command(BaseCommand):
    help = "Create (once, at installation), check or export the platform master key."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["create", "fingerprint", "export"])

    def handle(self, *args: str, action: str, **options: object) -> None:
        try:
            if action == "create":
                self.stdout.write(master_key.install())
            elif action == "fingerprint":
                self.stdout.write(engine.kek_fingerprint(master_key.kek()))
            else:
                self._export()
        except engine.KeyUnavailable as e:
            raise CommandError(str(e)) from e

    def _export(self) -> None:
        key = master_key.export()
        self.stdout.write(
            "# Lifeboat master key: it opens every vault that uses the platform key. Keep it\n"
            "# secret and apart from the vault stores. To put it back, write the base64 value\n"
            f"# below into {key['path']}, then run `manage.py master_key fingerprint`.\n"
            f"fingerprint: {key['fingerprint']}\n"
            f"base64: {key['base64']}\n"
            f"hex: {key['hex']}"
        )
