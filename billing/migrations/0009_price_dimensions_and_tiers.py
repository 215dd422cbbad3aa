"""Every price dimension, the long-context tier and the service tier; exact money columns.

- model prices: six rates, an optional long-context tier, a service tier;
  periods of one (model, service tier) never overlap (the exclusion
  constraint `model_price_no_overlap` now includes the tier), and a period's
  rates never change once written (trigger `model_price_rates_fixed`: only
  `effective_to`, when a new period closes it, `superseded_at`, when a
  correction replaces it, and `created_by` may change), so every charge it
  priced is explained by it for ever; superseded periods are out of the
  exclusion constraint;
- prices NUMERIC(24, 12); every column that holds or sums a priced cost an
  unconstrained NUMERIC: a catalogue change only, no rewrite (docs/ledger.md);
  the ledger's checks on `amount` are added back NOT VALID and validated by
  the next migration, so the ledger is locked for milliseconds, not a scan.
"""

import billing.models
from decimal import Decimal
from django.conf import settings
import django.db.models.deletion
from django.db import migrations, models


# The columns a price period's charges depend on: fixed once the row is written.
FIXED = [
    "model",
    "service_tier",
    "currency",
    "effective_from",
    "input_per_million",
    "cached_input_per_million",
    "cache_write_5m_per_million",
    "cache_write_1h_per_million",
    "output_per_million",
    "reasoning_per_million",
    "long_context_threshold",
    "long_input_per_million",
    "long_cached_input_per_million",
    "long_cache_write_5m_per_million",
    "long_cache_write_1h_per_million",
    "long_output_per_million",
    "long_reasoning_per_million",
    "corrects_id",
]
_OLD = ", ".join(f"OLD.{c}" for c in FIXED)
_NEW = ", ".join(f"NEW.{c}" for c in FIXED)

FORWARD = [
    "ALTER TABLE billing_modelprice DROP CONSTRAINT IF EXISTS model_price_no_overlap",
    """
    ALTER TABLE billing_modelprice ADD CONSTRAINT model_price_no_overlap
    EXCLUDE USING gist (
        model WITH =,
        service_tier WITH =,
        tstzrange(effective_from, effective_to, '[)') WITH &&
    ) WHERE (superseded_at IS NULL)
    """,
    f"""
    CREATE OR REPLACE FUNCTION billing_price_rates_fixed() RETURNS trigger AS $$
    BEGIN
        IF ROW({_OLD}) IS DISTINCT FROM ROW({_NEW})
           OR (OLD.superseded_at IS NOT NULL
               AND NEW.superseded_at IS DISTINCT FROM OLD.superseded_at) THEN
            RAISE EXCEPTION 'price period % is fixed once written: only effective_to and superseded_at may change', OLD.id
                USING ERRCODE = 'integrity_constraint_violation',
                      HINT = 'Add a new price period (set_model_price) and reprice_usage.';
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER model_price_rates_fixed
    BEFORE UPDATE ON billing_modelprice
    FOR EACH ROW EXECUTE FUNCTION billing_price_rates_fixed()
    """,
]
BACKWARD = [
    "DROP TRIGGER IF EXISTS model_price_rates_fixed ON billing_modelprice",
    "DROP FUNCTION IF EXISTS billing_price_rates_fixed()",
    "ALTER TABLE billing_modelprice DROP CONSTRAINT IF EXISTS model_price_no_overlap",
    """
    ALTER TABLE billing_modelprice ADD CONSTRAINT model_price_no_overlap
    EXCLUDE USING gist (model WITH =, tstzrange(effective_from, effective_to, '[)') WITH &&)
    """,
]


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


_LEDGER_DROP, _LEDGER_ADD = _checks_revalidated_later(
    "billing", "LedgerEntry", ["ledger_amount_not_zero", "ledger_amount_sign_matches_kind"]
)


def _run(statements):
    def run(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)  # no params: the '%' in RAISE is literal

    return run


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0008_company_references_unambiguous'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        _LEDGER_DROP,
        migrations.AlterModelOptions(
            name='modelprice',
            options={'ordering': ['model', 'service_tier', '-effective_from']},
        ),
        migrations.RemoveConstraint(
            model_name='modelprice',
            name='model_price_non_negative',
        ),
        migrations.AddField(
            model_name='modelprice',
            name='cache_write_1h_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, help_text='1-hour cache writes; empty: the 5-minute rate.', max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='cache_write_5m_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, help_text='5-minute cache writes; empty: the input rate.', max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='long_cache_write_1h_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='long_cache_write_5m_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='long_cached_input_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='long_context_threshold',
            field=models.PositiveIntegerField(blank=True, help_text='Requests whose prompt has more tokens than this pay the long-context rates for the whole request; empty: no long-context tier.', null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='long_input_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='long_output_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='long_reasoning_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='reasoning_per_million',
            field=models.DecimalField(blank=True, decimal_places=12, help_text='Reasoning (thinking) tokens; empty: the output rate.', max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='service_tier',
            field=models.CharField(choices=[('standard', 'Standard'), ('batch', 'Batch'), ('flex', 'Flex'), ('priority', 'Priority')], db_default='standard', default='standard', max_length=16),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='source',
            field=models.CharField(blank=True, db_default='', default='', help_text="Where the rates came from (e.g. the LiteLLM table's key).", max_length=200),
        ),
        migrations.AlterField(
            model_name='billingalert',
            name='balance',
            field=billing.models.ExactAmountField(help_text='Balance when the alert fired.'),
        ),
        migrations.AlterField(
            model_name='billingalert',
            name='month_to_date_spend',
            field=billing.models.ExactAmountField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='billingalert',
            name='threshold',
            field=billing.models.ExactAmountField(help_text='The threshold or limit share that was crossed.'),
        ),
        migrations.AlterField(
            model_name='creditbalance',
            name='balance',
            field=billing.models.ExactAmountField(default=Decimal('0')),
        ),
        migrations.AlterField(
            model_name='creditbalance',
            name='debt',
            field=billing.models.ExactAmountField(db_default=Decimal('0'), default=Decimal('0'), help_text='Consumption no unexpired credit covered yet; new credit pays it off first.'),
        ),
        migrations.AlterField(
            model_name='creditlot',
            name='amount',
            field=billing.models.ExactAmountField(),
        ),
        migrations.AlterField(
            model_name='creditlot',
            name='consumed',
            field=billing.models.ExactAmountField(default=Decimal('0')),
        ),
        migrations.AlterField(
            model_name='creditlot',
            name='expired',
            field=billing.models.ExactAmountField(default=Decimal('0')),
        ),
        migrations.AlterField(
            model_name='creditlot',
            name='remaining',
            field=billing.models.ExactAmountField(),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='amount',
            field=billing.models.ExactAmountField(help_text='Signed: positive adds credit, negative consumes it.'),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='balance_after',
            field=billing.models.ExactAmountField(),
        ),
        migrations.AlterField(
            model_name='modelprice',
            name='cached_input_per_million',
            field=models.DecimalField(decimal_places=12, help_text='Cache reads.', max_digits=24),
        ),
        migrations.AlterField(
            model_name='modelprice',
            name='input_per_million',
            field=models.DecimalField(decimal_places=12, help_text='Uncached input tokens.', max_digits=24),
        ),
        migrations.AlterField(
            model_name='modelprice',
            name='output_per_million',
            field=models.DecimalField(decimal_places=12, help_text='Output tokens other than reasoning.', max_digits=24),
        ),
        migrations.AddConstraint(
            model_name='modelprice',
            constraint=models.CheckConstraint(condition=models.Q(('input_per_million__gte', 0), ('cached_input_per_million__gte', 0), ('output_per_million__gte', 0), models.Q(('cache_write_5m_per_million__isnull', True), ('cache_write_5m_per_million__gte', 0), _connector='OR'), models.Q(('cache_write_1h_per_million__isnull', True), ('cache_write_1h_per_million__gte', 0), _connector='OR'), models.Q(('reasoning_per_million__isnull', True), ('reasoning_per_million__gte', 0), _connector='OR')), name='model_price_non_negative'),
        ),
        migrations.AddConstraint(
            model_name='modelprice',
            constraint=models.CheckConstraint(condition=models.Q(('service_tier__in', ['standard', 'batch', 'flex', 'priority'])), name='model_price_known_service_tier'),
        ),
        migrations.AddConstraint(
            model_name='modelprice',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('long_cache_write_1h_per_million__isnull', True), ('long_cache_write_5m_per_million__isnull', True), ('long_cached_input_per_million__isnull', True), ('long_context_threshold__isnull', True), ('long_input_per_million__isnull', True), ('long_output_per_million__isnull', True), ('long_reasoning_per_million__isnull', True)), models.Q(('long_cache_write_1h_per_million__gte', 0), ('long_cache_write_5m_per_million__gte', 0), ('long_cached_input_per_million__gte', 0), ('long_context_threshold__gt', 0), ('long_input_per_million__gte', 0), ('long_output_per_million__gte', 0), ('long_reasoning_per_million__gte', 0)), _connector='OR'), name='model_price_long_context_complete'),
        ),
migrations.AddField(
            model_name='modelprice',
            name='corrects',
            field=models.ForeignKey(blank=True, help_text='The period whose rates this one corrects (same model, tier and dates).', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='billing.modelprice'),
        ),
        migrations.AddField(
            model_name='modelprice',
            name='superseded_at',
            field=models.DateTimeField(blank=True, help_text='When a correction replaced this period.', null=True),
        ),
        _LEDGER_ADD,
        migrations.RunPython(_run(FORWARD), _run(BACKWARD)),
    ]
