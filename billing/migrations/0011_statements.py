"""Monthly statements, and the guards that keep an issued one as it was issued.

- billing_statement_hash(id): sha256 over the canonical serialisation of a
  statement's stored content, its row and its lines in position order, as
  jsonb text (keys ordered by jsonb itself, numerics exactly as stored,
  instants in UTC, so the text is the same whatever the session's settings);
- statement_sealed: a statement row is written once, unsealed (empty hash),
  and sealed once by an UPDATE that changes nothing but sets the hash to
  'seal', which the trigger replaces by billing_statement_hash (so nobody
  writes a hash of their own); every other UPDATE, and every DELETE, is
  refused;
- statement_line_sealed: lines are inserted only into an unsealed statement,
  never updated or deleted;
- no TRUNCATE of either table.
"""

import billing.models
import django.db.models.deletion
import django.db.models.expressions
from django.db import migrations, models


_UTC = "to_jsonb({} AT TIME ZONE 'UTC')"
FORWARD = [
    f"""
    CREATE OR REPLACE FUNCTION billing_statement_hash(statement bigint) RETURNS text AS $$
    SELECT encode(sha256(convert_to(jsonb_build_object(
        'statement', jsonb_build_object(
            'id', s.id, 'company', s.company_id, 'month', s.month, 'timezone', s.timezone,
            'period_start', {_UTC.format("s.period_start")},
            'period_end', {_UTC.format("s.period_end")},
            'entries_after', s.entries_after, 'entries_through', s.entries_through,
            'entry_count', s.entry_count, 'opening', s.opening, 'purchases', s.purchases,
            'grants', s.grants, 'refunds', s.refunds, 'adjustments', s.adjustments,
            'expiries', s.expiries, 'usage', s.usage, 'late_usage', s.late_usage,
            'corrections', s.corrections, 'closing', s.closing,
            'generations', s.generations, 'questions', s.questions,
            'closed_at', {_UTC.format("s.closed_at")}),
        'lines', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
            'position', l.position, 'section', l.section, 'kind', l.kind,
            'entry_id', l.entry_id, 'booked_at', {_UTC.format("l.booked_at")},
            'usage_month', l.usage_month, 'model', l.model, 'job_id', l.job_id,
            'label', l.label, 'entries', l.entries, 'questions', l.questions,
            'amount', l.amount) ORDER BY l.position), '[]'::jsonb)
            FROM billing_statementline l WHERE l.statement_id = s.id)
    )::text, 'UTF8')), 'hex')
      FROM billing_statement s WHERE s.id = statement
    $$ LANGUAGE sql STABLE
    """,
    """
    CREATE OR REPLACE FUNCTION billing_statement_guard() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            IF OLD.content_hash = '' AND NEW.content_hash = 'seal'
               AND to_jsonb(NEW) - 'content_hash' = to_jsonb(OLD) - 'content_hash' THEN
                NEW.content_hash := billing_statement_hash(OLD.id);
                RETURN NEW;
            END IF;
        END IF;
        RAISE EXCEPTION '% is issued and immutable: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'What arrives later goes on the next statement.';
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE OR REPLACE FUNCTION billing_statement_line_guard() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            IF EXISTS (SELECT 1 FROM billing_statement
                        WHERE id = NEW.statement_id AND content_hash = '') THEN
                RETURN NEW;
            END IF;
        END IF;
        RAISE EXCEPTION '% of an issued statement: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'What arrives later goes on the next statement.';
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER statement_sealed
    BEFORE UPDATE OR DELETE ON billing_statement
    FOR EACH ROW EXECUTE FUNCTION billing_statement_guard()
    """,
    """
    CREATE TRIGGER statement_no_truncate
    BEFORE TRUNCATE ON billing_statement
    FOR EACH STATEMENT EXECUTE FUNCTION billing_refuse_change()
    """,
    """
    CREATE TRIGGER statement_line_sealed
    BEFORE INSERT OR UPDATE OR DELETE ON billing_statementline
    FOR EACH ROW EXECUTE FUNCTION billing_statement_line_guard()
    """,
    """
    CREATE TRIGGER statement_line_no_truncate
    BEFORE TRUNCATE ON billing_statementline
    FOR EACH STATEMENT EXECUTE FUNCTION billing_refuse_change()
    """,
]
BACKWARD = [
    "DROP TRIGGER IF EXISTS statement_line_no_truncate ON billing_statementline",
    "DROP TRIGGER IF EXISTS statement_line_sealed ON billing_statementline",
    "DROP TRIGGER IF EXISTS statement_no_truncate ON billing_statement",
    "DROP TRIGGER IF EXISTS statement_sealed ON billing_statement",
    "DROP FUNCTION IF EXISTS billing_statement_line_guard()",
    "DROP FUNCTION IF EXISTS billing_statement_guard()",
    "DROP FUNCTION IF EXISTS billing_statement_hash(bigint)",
]


def _run(statements):
    def run(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)  # no params: the '%' in RAISE is literal

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0010_validate_exact_amounts"),
    ]

    operations = [
        migrations.CreateModel(
            name="Statement",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "month",
                    models.DateField(help_text="The first day of the calendar month covered."),
                ),
                (
                    "timezone",
                    models.CharField(help_text="The company's zone at the close.", max_length=64),
                ),
                ("period_start", models.DateTimeField()),
                ("period_end", models.DateTimeField()),
                (
                    "entries_after",
                    models.BigIntegerField(help_text="The previous statement's last entry id."),
                ),
                (
                    "entries_through",
                    models.BigIntegerField(help_text="The last ledger entry id it covers."),
                ),
                ("entry_count", models.BigIntegerField()),
                ("opening", billing.models.ExactAmountField()),
                ("purchases", billing.models.ExactAmountField()),
                ("grants", billing.models.ExactAmountField()),
                ("refunds", billing.models.ExactAmountField()),
                ("adjustments", billing.models.ExactAmountField()),
                ("expiries", billing.models.ExactAmountField()),
                (
                    "usage",
                    billing.models.ExactAmountField(
                        help_text="Usage debits of generations that ran in this period."
                    ),
                ),
                (
                    "late_usage",
                    billing.models.ExactAmountField(
                        help_text="Usage debits of generations of closed periods."
                    ),
                ),
                (
                    "corrections",
                    billing.models.ExactAmountField(help_text="Re-pricing corrections."),
                ),
                ("closing", billing.models.ExactAmountField()),
                (
                    "generations",
                    models.BigIntegerField(help_text="Generations debited, late ones included."),
                ),
                ("questions", models.BigIntegerField(help_text="Their questions.")),
                ("content_hash", models.CharField(blank=True, max_length=64)),
                ("closed_at", models.DateTimeField()),
                (
                    "company",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="statements",
                        to="billing.company",
                    ),
                ),
            ],
            options={
                "ordering": ["company", "-month"],
            },
        ),
        migrations.CreateModel(
            name="StatementLine",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("position", models.PositiveIntegerField()),
                (
                    "section",
                    models.CharField(
                        choices=[
                            ("credit", "Credit movement"),
                            ("usage_model", "Usage by model"),
                            ("usage_job", "Usage by job"),
                            ("late_usage", "Late usage"),
                            ("correction", "Correction"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("purchase", "Purchase (paid)"),
                            ("grant", "Grant (promotional)"),
                            ("refund", "Refund"),
                            ("adjustment", "Manual adjustment"),
                            ("expiry", "Expiry"),
                            ("usage", "Usage debit"),
                            ("usage_correction", "Usage re-pricing correction"),
                        ],
                        max_length=24,
                    ),
                ),
                (
                    "entry_id",
                    models.BigIntegerField(
                        blank=True, help_text="A credit line's entry.", null=True
                    ),
                ),
                ("booked_at", models.DateTimeField(blank=True, null=True)),
                (
                    "usage_month",
                    models.CharField(
                        blank=True,
                        help_text="YYYY-MM of the usage, for late usage and corrections.",
                        max_length=7,
                    ),
                ),
                ("model", models.CharField(blank=True, max_length=100)),
                ("job_id", models.UUIDField(blank=True, null=True)),
                ("label", models.TextField(blank=True)),
                (
                    "entries",
                    models.BigIntegerField(help_text="Ledger entries (generations, for usage)."),
                ),
                ("questions", models.BigIntegerField(default=0)),
                ("amount", billing.models.ExactAmountField()),
                (
                    "statement",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="lines",
                        to="billing.statement",
                    ),
                ),
            ],
            options={
                "ordering": ["statement", "position"],
            },
        ),
        migrations.AddConstraint(
            model_name="statement",
            constraint=models.UniqueConstraint(
                fields=("company", "month"), name="statement_one_per_month"
            ),
        ),
        migrations.AddConstraint(
            model_name="statement",
            constraint=models.CheckConstraint(
                condition=models.Q(("month__day", 1)), name="statement_month_first_day"
            ),
        ),
        migrations.AddConstraint(
            model_name="statement",
            constraint=models.CheckConstraint(
                condition=models.Q(("period_end__gt", models.F("period_start"))),
                name="statement_period_ordered",
            ),
        ),
        migrations.AddConstraint(
            model_name="statement",
            constraint=models.CheckConstraint(
                condition=models.Q(("entries_through__gte", models.F("entries_after"))),
                name="statement_entries_ordered",
            ),
        ),
        migrations.AddConstraint(
            model_name="statement",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "closing",
                        django.db.models.expressions.CombinedExpression(
                            django.db.models.expressions.CombinedExpression(
                                django.db.models.expressions.CombinedExpression(
                                    django.db.models.expressions.CombinedExpression(
                                        django.db.models.expressions.CombinedExpression(
                                            django.db.models.expressions.CombinedExpression(
                                                django.db.models.expressions.CombinedExpression(
                                                    django.db.models.expressions.CombinedExpression(
                                                        models.F("opening"),
                                                        "+",
                                                        models.F("purchases"),
                                                    ),
                                                    "+",
                                                    models.F("grants"),
                                                ),
                                                "+",
                                                models.F("refunds"),
                                            ),
                                            "+",
                                            models.F("adjustments"),
                                        ),
                                        "+",
                                        models.F("expiries"),
                                    ),
                                    "+",
                                    models.F("usage"),
                                ),
                                "+",
                                models.F("late_usage"),
                            ),
                            "+",
                            models.F("corrections"),
                        ),
                    )
                ),
                name="statement_closing_reconciles",
            ),
        ),
        migrations.AddConstraint(
            model_name="statementline",
            constraint=models.UniqueConstraint(
                fields=("statement", "position"), name="statement_line_unique_position"
            ),
        ),
        migrations.RunPython(_run(FORWARD), _run(BACKWARD)),
    ]
