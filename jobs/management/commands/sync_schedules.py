from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django_q.models import Schedule

from jobs.schedules import PERIODIC


class Command(BaseCommand):
    help = "Create or update the periodic schedules declared in jobs/schedules.py."

    def handle(self, *args: Any, **options: Any) -> None:
        names = [p.name for p in PERIODIC]
        with transaction.atomic():
            for p in PERIODIC:
                Schedule.objects.update_or_create(
                    name=p.name,
                    defaults={
                        "func": p.func,
                        "schedule_type": Schedule.MINUTES,
                        "minutes": p.minutes,
                        "repeats": -1,
                    },
                )
            stale = Schedule.objects.filter(name__startswith="lifeboat-").exclude(name__in=names)
            removed = stale.count()
            stale.delete()
        self.stdout.write(f"Periodic schedules: {len(names)} in place, {removed} removed.")
