"""Removes companies the harness created for one scenario (pgbench shadows, imports).

Generic on purpose: every table with a `company_id` column is emptied of their
rows (retrying in passes until foreign keys allow), with the tables' own
triggers lifted for that transaction only (the ledger is append-only by
trigger; this is the benchmark database, and the rows are the harness's own).
"""

from __future__ import annotations

from django.db import DatabaseError, connection, transaction


def _company_tables() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT c.table_name FROM information_schema.columns c
                JOIN information_schema.tables t USING (table_schema, table_name)
               WHERE c.table_schema = 'public' AND c.column_name = 'company_id'
                 AND t.table_type = 'BASE TABLE' AND c.table_name NOT LIKE 'bench_%'
               ORDER BY 1"""
        )
        return [row[0] for row in cursor.fetchall()]


def delete_companies(where: str, params: list | None = None) -> int:
    """Delete the companies matching `where` (SQL on billing_company) and all their rows."""
    tables = _company_tables()
    ids = f"SELECT id FROM billing_company WHERE {where}"
    with transaction.atomic(), connection.cursor() as cursor:
        # Django's foreign keys are DEFERRABLE: check each DELETE at once, not at COMMIT.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        cursor.execute(
            f"""UPDATE usage_rejectedevent SET usage_id = NULL WHERE usage_id IN
                (SELECT id FROM question_generation_usage WHERE company_id IN ({ids}))""",
            params,
        )
        # Statement lines have no company_id: they go with their statements.
        cursor.execute("ALTER TABLE billing_statementline DISABLE TRIGGER USER")
        cursor.execute(
            f"""DELETE FROM billing_statementline WHERE statement_id IN
                (SELECT id FROM billing_statement WHERE company_id IN ({ids}))""",
            params,
        )
        cursor.execute("ALTER TABLE billing_statementline ENABLE TRIGGER USER")
        left = list(tables)
        for _ in range(len(tables) + 1):
            for table in list(left):
                try:
                    with transaction.atomic():
                        cursor.execute(f"DELETE FROM {table} WHERE company_id IN ({ids})", params)
                    left.remove(table)
                except DatabaseError:
                    continue
            if not left:
                break
        if left:
            raise RuntimeError(f"could not empty {left} of the harness's companies")
        cursor.execute(f"DELETE FROM billing_company WHERE {where}", params)
        deleted = cursor.rowcount
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    return deleted
