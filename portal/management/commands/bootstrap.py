"""First start: an `admin` site administrator with a generated password, printed once."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first site administrator (and the demo lab) if they do not exist yet."

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="Skip the demo lab.")

    def handle(self, *args, **options):
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
            from inventory.demo import ensure_demo_lab

            for line in ensure_demo_lab():
                self.stdout.write(line)
