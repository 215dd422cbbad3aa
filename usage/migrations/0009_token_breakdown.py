"""The token breakdown, the service tier and the provider's usage object on usage rows.

Costs become unconstrained NUMERIC (exact at the 18 places a finer price
needs): dropping the typmod is a catalogue change, no rewrite and no index
rebuild (measured in docs/performance.md). The new columns have constant
defaults (no rewrite either). The two new checks, and the cost check the type
change would re-check with a scan, are added NOT VALID here, under a short
ACCESS EXCLUSIVE lock, and validated by the next migration in its own
transaction, whose scan does not block writes.
"""

import billing.models
import django.db.models.expressions
from django.db import migrations, models


def _not_valid(constraint):
    """AddConstraint in the state; in the database ADD ... NOT VALID (no scan)."""

    def forward(apps, schema_editor):
        model = apps.get_model("usage", "QuestionGenerationUsage")
        sql = constraint.constraint_sql(model, schema_editor)
        table = schema_editor.quote_name(model._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} ADD {sql} NOT VALID")

    def backward(apps, schema_editor):
        model = apps.get_model("usage", "QuestionGenerationUsage")
        table = schema_editor.quote_name(model._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint.name}")

    return migrations.SeparateDatabaseAndState(
        state_operations=[
            migrations.AddConstraint(model_name="questiongenerationusage", constraint=constraint)
        ],
        database_operations=[migrations.RunPython(forward, backward)],
    )


def _checks_revalidated_later(app: str, model_name: str, names: list[str]):
    """Drop these checks before a column's type changes and add them back NOT VALID
    after (validated by a later migration, which does not block writes).

    PostgreSQL re-checks every CHECK that names an altered column, a full scan
    under the ALTER's ACCESS EXCLUSIVE lock (about 1 s per million rows here),
    even when the type change itself rewrites nothing.
    """

    def table_and_constraints(apps, schema_editor):
        model = apps.get_model(app, model_name)
        wanted = [c for c in model._meta.constraints if c.name in names]
        return model, schema_editor.quote_name(model._meta.db_table), wanted

    def drop(apps, schema_editor):
        _, table, wanted = table_and_constraints(apps, schema_editor)
        for constraint in wanted:
            schema_editor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint.name}")

    def add(apps, schema_editor):
        model, table, wanted = table_and_constraints(apps, schema_editor)
        for constraint in wanted:
            sql = constraint.constraint_sql(model, schema_editor)
            schema_editor.execute(f"ALTER TABLE {table} ADD {sql} NOT VALID")

    return migrations.RunPython(drop, add), migrations.RunPython(add, drop)


_COST_DROP, _COST_ADD = _checks_revalidated_later(
    "usage", "QuestionGenerationUsage", ["usage_cost_matches_source"]
)


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0009_price_dimensions_and_tiers'),
        ('usage', '0008_rollup_day_index'),
    ]

    operations = [
        migrations.AddField(
            model_name='questiongenerationusage',
            name='cache_write_1h_tokens',
            field=models.IntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name='questiongenerationusage',
            name='cache_write_5m_tokens',
            field=models.IntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name='questiongenerationusage',
            name='provider',
            field=models.CharField(blank=True, db_default='', default='', help_text="openai, anthropic or gemini when the provider's own usage object was sent.", max_length=16),
        ),
        migrations.AddField(
            model_name='questiongenerationusage',
            name='provider_usage',
            field=models.JSONField(blank=True, help_text="The provider's usage object exactly as it was sent.", null=True),
        ),
        migrations.AddField(
            model_name='questiongenerationusage',
            name='reasoning_tokens',
            field=models.IntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name='questiongenerationusage',
            name='service_tier',
            field=models.CharField(choices=[('standard', 'Standard'), ('batch', 'Batch'), ('flex', 'Flex'), ('priority', 'Priority')], db_default='standard', default='standard', max_length=16),
        ),
        _COST_DROP,
        migrations.AlterField(
            model_name='questiongenerationusage',
            name='cost',
            field=billing.models.ExactAmountField(blank=True, help_text='NULL while unpriced.', null=True),
        ),
        _COST_ADD,
        migrations.AlterField(
            model_name='usagedailyrollup',
            name='cost',
            field=billing.models.ExactAmountField(default=0),
        ),
        _not_valid(
            models.CheckConstraint(condition=models.Q(('cache_write_5m_tokens__gte', 0), ('cache_write_1h_tokens__gte', 0), ('reasoning_tokens__gte', 0), ('prompt_tokens__gte', django.db.models.expressions.CombinedExpression(django.db.models.expressions.CombinedExpression(models.F('cached_prompt_tokens'), '+', models.F('cache_write_5m_tokens')), '+', models.F('cache_write_1h_tokens'))), ('completion_tokens__gte', models.F('reasoning_tokens'))), name='usage_breakdown_within_totals'),
        ),
        _not_valid(
            models.CheckConstraint(condition=models.Q(('service_tier__in', ['standard', 'batch', 'flex', 'priority'])), name='usage_known_service_tier'),
        ),
    ]
