"""Validate the usage rows' API key reference, outside a transaction.

VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE, so recording
goes on meanwhile. No index on the column: a key's spend is read from the
per-key rollup (usage 0013), which the writers keep in step.
"""

from django.db import migrations


def validate(apps, schema_editor):
    model = apps.get_model("usage", "QuestionGenerationUsage")
    table = schema_editor.quote_name(model._meta.db_table)
    for name in schema_editor._constraint_names(model, ["api_key_id"], foreign_key=True):
        schema_editor.execute(
            f"ALTER TABLE {table} VALIDATE CONSTRAINT {schema_editor.quote_name(name)}"
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("usage", "0011_usage_api_key")]

    operations = [migrations.RunPython(validate, migrations.RunPython.noop)]
