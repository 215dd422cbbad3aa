"""Usage rows record the API key that sent them (`api_key_id`, NULL for imported rows).

The usage table may hold tens of millions of rows. Adding a nullable column
without a default is a catalogue change (no rewrite). The foreign key is added
NOT VALID, so adding it does not scan the table under a lock that blocks
writes; the next migration validates it (a scan that does not block writes).
"""

from django.db import migrations, models
import django.db.models.deletion

FIELD = models.ForeignKey(
    blank=True,
    db_index=False,
    help_text="The key that sent it (empty for imported rows).",
    null=True,
    on_delete=django.db.models.deletion.PROTECT,
    related_name="+",
    to="billing.apikey",
)


def forward(apps, schema_editor):
    model = apps.get_model("usage", "QuestionGenerationUsage")
    field = model._meta.get_field("api_key")
    table = schema_editor.quote_name(model._meta.db_table)
    schema_editor.execute(f"ALTER TABLE {table} ADD COLUMN api_key_id bigint NULL")
    fk = schema_editor._create_fk_sql(model, field, "_fk_%(to_table)s_%(to_column)s")
    schema_editor.execute(f"{fk} NOT VALID")


def backward(apps, schema_editor):
    model = apps.get_model("usage", "QuestionGenerationUsage")
    table = schema_editor.quote_name(model._meta.db_table)
    schema_editor.execute(f"ALTER TABLE {table} DROP COLUMN api_key_id")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0012_key_limits_and_reservations"),
        ("usage", "0010_validate_token_breakdown"),
    ]

    operations = [
        # The field in the state first, so that the SQL below reads it from there.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="questiongenerationusage", name="api_key", field=FIELD
                )
            ],
        ),
        migrations.RunPython(forward, backward),
    ]
