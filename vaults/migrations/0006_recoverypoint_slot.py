"""Recovery points keep their backup slot: filled for existing rows from the backup job that
made them (its `slot` parameter), where retention used to look it up."""

from datetime import datetime

from django.db import migrations, models


def fill_slots(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    RecoveryPoint = apps.get_model("vaults", "RecoveryPoint")
    rows = Job.objects.filter(
        operation="backup", recovery_point__isnull=False, params__has_key="slot"
    ).values_list("recovery_point_id", "params__slot")
    for rp_id, slot in rows:
        if slot:
            RecoveryPoint.objects.filter(pk=rp_id).update(slot=datetime.fromisoformat(slot))


class Migration(migrations.Migration):
    dependencies = [
        ("vaults", "0005_reserved_names"),
        ("jobs", "0004_job_deliveries"),
    ]

    operations = [
        migrations.AddField(
            model_name="recoverypoint",
            name="slot",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(fill_slots, migrations.RunPython.noop),
    ]
