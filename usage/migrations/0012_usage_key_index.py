"""Validate the usage rows' API key reference and index a key's spend per day.

Outside a transaction: VALIDATE CONSTRAINT scans under SHARE UPDATE EXCLUSIVE
(recording goes on), and the partial covering index (only rows sent with a
key) is built CONCURRENTLY, as usage 0008 built the rollup's.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def validate(apps, schema_editor):
    model = apps.get_model("usage", "QuestionGenerationUsage")
    table = schema_editor.quote_name(model._meta.db_table)
    for name in schema_editor._constraint_names(model, ["api_key_id"], foreign_key=True):
        schema_editor.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {schema_editor.quote_name(name)}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("usage", "0011_usage_api_key")]

    operations = [
        migrations.RunPython(validate, migrations.RunPython.noop),
        AddIndexConcurrently(
            model_name="questiongenerationusage",
            index=models.Index(
                condition=models.Q(("api_key__isnull", False)),
                fields=["api_key", "occurred_on"],
                include=("cost",),
                name="usage_key_day",
            ),
        ),
    ]
