import hashlib

from django.db import migrations, models


def fingerprint_existing_tokens(apps, schema_editor):
    """Tokens issued before this change belong to the password their user has now
    (`portal.models.password_fingerprint`, as it was when this migration was written)."""
    ApiToken = apps.get_model("portal", "ApiToken")
    for token in ApiToken.objects.select_related("user").iterator():
        token.password_fingerprint = hashlib.sha256(token.user.password.encode()).hexdigest()
        token.save(update_fields=["password_fingerprint"])


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="password_fingerprint",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(fingerprint_existing_tokens, migrations.RunPython.noop),
    ]
