"""Guards that live in the database itself, below the ORM and the admin.

- model prices: periods of one model never overlap (PostgreSQL: an exclusion
  constraint over tstzrange with btree_gist; SQLite: BEFORE INSERT/UPDATE
  triggers that abort);
- ledger entries and audit events are append-only: triggers refuse UPDATE
  and DELETE, whoever issues them.
"""

from django.db import migrations

PG_FORWARD = [
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
PG_BACKWARD = [
    "DROP TRIGGER IF EXISTS audit_append_only ON billing_auditevent",
    "DROP TRIGGER IF EXISTS ledger_no_truncate ON billing_ledgerentry",
    "DROP TRIGGER IF EXISTS ledger_append_only ON billing_ledgerentry",
    "DROP FUNCTION IF EXISTS billing_refuse_change()",
    "ALTER TABLE billing_modelprice DROP CONSTRAINT IF EXISTS model_price_no_overlap",
]

_SQLITE_OVERLAP = """
    CREATE TRIGGER model_price_no_overlap_{op}
    BEFORE {OP} ON billing_modelprice
    WHEN EXISTS (
        SELECT 1 FROM billing_modelprice p
        WHERE p.model = NEW.model {self_filter}
          AND (NEW.effective_to IS NULL OR p.effective_from < NEW.effective_to)
          AND (p.effective_to IS NULL OR NEW.effective_from < p.effective_to)
    )
    BEGIN SELECT RAISE(ABORT, 'model price periods overlap'); END
"""
SQLITE_FORWARD = [
    _SQLITE_OVERLAP.format(op="insert", OP="INSERT", self_filter=""),
    _SQLITE_OVERLAP.format(op="update", OP="UPDATE", self_filter="AND p.id <> NEW.id"),
    """CREATE TRIGGER ledger_no_update BEFORE UPDATE ON billing_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only'); END""",
    """CREATE TRIGGER ledger_no_delete BEFORE DELETE ON billing_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only'); END""",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON billing_auditevent
       BEGIN SELECT RAISE(ABORT, 'billing_auditevent is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON billing_auditevent
       BEGIN SELECT RAISE(ABORT, 'billing_auditevent is append-only'); END""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS model_price_no_overlap_insert",
    "DROP TRIGGER IF EXISTS model_price_no_overlap_update",
    "DROP TRIGGER IF EXISTS ledger_no_update",
    "DROP TRIGGER IF EXISTS ledger_no_delete",
    "DROP TRIGGER IF EXISTS audit_no_update",
    "DROP TRIGGER IF EXISTS audit_no_delete",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            for sql in statements_by_vendor.get(schema_editor.connection.vendor, []):
                cursor.execute(sql)  # no params: the '%' in RAISE is literal

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": PG_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD}),
        )
    ]
