"""Guards that live in the database itself, below the ORM and the admin.

- model prices: periods of one model never overlap (an exclusion constraint
  over tstzrange with btree_gist);
- ledger entries and audit events are append-only: triggers refuse UPDATE
  and DELETE, whoever issues them.
"""

from django.db import migrations

FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS btree_gist",
    """
    ALTER TABLE billing_modelprice ADD CONSTRAINT model_price_no_overlap
    EXCLUDE USING gist (
        model WITH =,
        tstzrange(effective_from, effective_to, '[)') WITH &&
    )
    """,
    """
    CREATE OR REPLACE FUNCTION billing_refuse_change() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'Post a correcting entry instead.';
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER ledger_append_only
    BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_change()
    """,
    """
    CREATE TRIGGER ledger_no_truncate
    BEFORE TRUNCATE ON billing_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION billing_refuse_change()
    """,
    """
    CREATE TRIGGER audit_append_only
    BEFORE UPDATE OR DELETE ON billing_auditevent
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_change()
    """,
]
BACKWARD = [
    "DROP TRIGGER IF EXISTS audit_append_only ON billing_auditevent",
    "DROP TRIGGER IF EXISTS ledger_no_truncate ON billing_ledgerentry",
    "DROP TRIGGER IF EXISTS ledger_append_only ON billing_ledgerentry",
    "DROP FUNCTION IF EXISTS billing_refuse_change()",
    "ALTER TABLE billing_modelprice DROP CONSTRAINT IF EXISTS model_price_no_overlap",
]

def _run(statements):
    def run(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)  # no params: the '%' in RAISE is literal

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run(FORWARD),
            _run(BACKWARD),
        )
    ]
