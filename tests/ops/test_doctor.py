"""The schema doctor finds each kind of drift made by hand, and its fix repairs it.

PostgreSQL DDL is transactional: each test alters the schema inside its test
transaction, and the rollback at the end restores it.
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from ops.doctor import Finding, diagnose

pytestmark = pytest.mark.django_db

USAGE = "question_generation_usage"


def run_sql(*statements: str) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def only_finding() -> Finding:
    findings = diagnose()
    assert len(findings) == 1, [f.problem for f in findings]
    return findings[0]


def assert_fix_repairs(finding: Finding) -> None:
    run_sql(*finding.sql)
    assert diagnose() == []


def fk_name(table: str, column: str) -> str:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return next(n for n, c in constraints.items() if c["foreign_key"] and c["columns"] == [column])


def test_clean_database_has_no_findings_and_exits_zero():
    assert diagnose() == []
    out = StringIO()
    call_command("schema_doctor", stdout=out)
    assert "matches the models and migrations" in out.getvalue()


def test_dropped_check_constraint_is_found_with_its_create_sql():
    run_sql(f"ALTER TABLE {USAGE} DROP CONSTRAINT usage_cost_matches_source")
    finding = only_finding()
    assert (finding.code, finding.table, finding.name) == (
        "missing_check",
        USAGE,
        "usage_cost_matches_source",
    )
    assert finding.sql[0].startswith(
        f'ALTER TABLE "{USAGE}" ADD CONSTRAINT "usage_cost_matches_source" CHECK'
    )
    assert_fix_repairs(finding)


def test_dropped_unique_constraint_is_found():
    run_sql(f"ALTER TABLE {USAGE} DROP CONSTRAINT usage_unique_idempotency_key")
    finding = only_finding()
    assert (finding.code, finding.name) == ("missing_unique", "usage_unique_idempotency_key")
    assert "counted or debited twice" in finding.impact
    assert 'UNIQUE ("company_id", "idempotency_key")' in finding.sql[0]
    assert_fix_repairs(finding)


def test_dropped_column_is_found_with_add_column_sql():
    run_sql("ALTER TABLE billing_company DROP COLUMN billing_emails")
    finding = only_finding()
    assert (finding.code, finding.table, finding.name) == (
        "missing_column",
        "billing_company",
        "billing_emails",
    )
    assert 'ADD COLUMN "billing_emails" text' in finding.sql[0]
    assert_fix_repairs(finding)


def test_column_made_nullable_is_found():
    run_sql(f"ALTER TABLE {USAGE} ALTER COLUMN company_id DROP NOT NULL")
    finding = only_finding()
    assert (finding.code, finding.name) == ("nullability", "company_id")
    assert finding.sql == [
        f'SELECT count(*) FROM "{USAGE}" WHERE "company_id" IS NULL;',
        f'ALTER TABLE "{USAGE}" ALTER COLUMN "company_id" SET NOT NULL;',
    ]
    assert_fix_repairs(finding)


def test_not_null_on_a_nullable_column_is_found():
    # The draft-usage failure of the field reports: job_id must accept NULL.
    run_sql(f"ALTER TABLE {USAGE} ALTER COLUMN job_id SET NOT NULL")
    finding = only_finding()
    assert (finding.code, finding.name) == ("nullability", "job_id")
    assert "NOT NULL violation" in finding.impact
    assert finding.sql == [f'ALTER TABLE "{USAGE}" ALTER COLUMN "job_id" DROP NOT NULL;']
    assert_fix_repairs(finding)


def test_column_type_difference_is_found():
    # The hand-made shape: cost DECIMAL(10, 4) rounds exact costs.
    run_sql(f"ALTER TABLE {USAGE} ALTER COLUMN cost TYPE numeric(10, 4)")
    finding = only_finding()
    assert (finding.code, finding.name) == ("column_type", "cost")
    assert "numeric(10,4)" in finding.problem and "the model says numeric." in finding.problem
    assert finding.sql == [
        f'ALTER TABLE "{USAGE}" ALTER COLUMN "cost" TYPE numeric USING "cost"::numeric;'
    ]
    assert_fix_repairs(finding)


def test_foreign_key_pointing_at_another_table_is_found():
    # The classic: the tenant column checks ids against some `organizations` table.
    run_sql(
        "CREATE TABLE organizations (id uuid PRIMARY KEY)",
        f'ALTER TABLE {USAGE} DROP CONSTRAINT "{fk_name(USAGE, "company_id")}"',
        f"ALTER TABLE {USAGE} ADD CONSTRAINT {USAGE}_organization_fkey "
        "FOREIGN KEY (company_id) REFERENCES organizations(id)",
    )
    finding = only_finding()
    assert (finding.code, finding.name) == ("wrong_foreign_key", "company_id")
    assert "organizations.id" in finding.problem and "billing_company.id" in finding.problem
    assert "foreign key violation" in finding.impact
    assert f'ALTER TABLE "{USAGE}" DROP CONSTRAINT "{USAGE}_organization_fkey";' in finding.sql[1]
    assert 'REFERENCES "billing_company" ("id")' in finding.sql[2]
    assert_fix_repairs(finding)


def test_missing_foreign_key_is_found():
    run_sql(f'ALTER TABLE usage_job DROP CONSTRAINT "{fk_name("usage_job", "company_id")}"')
    finding = only_finding()
    assert (finding.code, finding.table, finding.name) == (
        "missing_foreign_key",
        "usage_job",
        "company_id",
    )
    assert finding.sql[0].startswith('SELECT count(*) FROM "usage_job" t')
    assert 'FOREIGN KEY ("company_id") REFERENCES "billing_company" ("id")' in finding.sql[1]
    assert_fix_repairs(finding)


def test_skipped_migration_is_found_and_fake_is_suggested_when_schema_matches():
    recorder = MigrationRecorder(connection)
    last = recorder.migration_qs.filter(app="usage").order_by("-id").first()
    last.delete()
    finding = only_finding()
    assert (finding.code, finding.name) == ("unapplied_migration", f"usage.{last.name}")
    assert f"migrate usage {last.name} --fake" in finding.fix


def test_dropped_index_is_found():
    run_sql("DROP INDEX usage_occurred_desc")
    finding = only_finding()
    assert (finding.code, finding.severity, finding.name) == (
        "missing_index",
        "warning",
        "usage_occurred_desc",
    )
    assert finding.sql == [f'CREATE INDEX "usage_occurred_desc" ON "{USAGE}" ("occurred_at" DESC);']
    assert_fix_repairs(finding)


def test_dropped_field_index_is_found():
    run_sql('DROP INDEX "' + _field_index("billing_ledgerentry", "created_at") + '"')
    finding = only_finding()
    assert (finding.code, finding.table) == ("missing_index", "billing_ledgerentry")
    assert '("created_at")' in finding.sql[0]
    assert_fix_repairs(finding)


def _field_index(table: str, column: str) -> str:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return next(
        n
        for n, c in constraints.items()
        if c["index"] and not c["unique"] and c["columns"] == [column]
    )


def test_unknown_nullable_column_is_a_warning():
    run_sql(f"ALTER TABLE {USAGE} ADD COLUMN organization_id uuid")
    finding = only_finding()
    assert (finding.code, finding.severity, finding.name) == (
        "extra_column",
        "warning",
        "organization_id",
    )
    assert finding.sql == [f'ALTER TABLE "{USAGE}" DROP COLUMN "organization_id";']
    assert_fix_repairs(finding)


def test_unknown_not_null_column_is_an_error_that_breaks_inserts():
    run_sql(f"ALTER TABLE {USAGE} ADD COLUMN ai_service_id uuid NOT NULL")
    finding = only_finding()
    assert (finding.code, finding.severity) == ("extra_column", "error")
    assert "every insert" in finding.impact


def test_dropped_append_only_trigger_is_found_with_the_migration_sql():
    run_sql("DROP TRIGGER ledger_append_only ON billing_ledgerentry")
    finding = only_finding()
    assert (finding.code, finding.table, finding.name) == (
        "missing_guard",
        "billing_ledgerentry",
        "ledger_append_only",
    )
    assert any("CREATE TRIGGER ledger_append_only" in s for s in finding.sql)
    assert_fix_repairs(finding)


@pytest.mark.parametrize(
    "trigger, table",
    [
        ("statement_sealed", "billing_statement"),
        ("statement_line_sealed", "billing_statementline"),
        ("statement_no_truncate", "billing_statement"),
    ],
)
def test_a_dropped_statement_immutability_trigger_is_found(trigger, table):
    run_sql(f"DROP TRIGGER {trigger} ON {table}")
    finding = only_finding()
    assert (finding.code, finding.table, finding.name) == ("missing_guard", table, trigger)
    assert "statements" in finding.fix
    assert any(f"CREATE TRIGGER {trigger}" in s for s in finding.sql)
    assert_fix_repairs(finding)


def test_dropped_price_exclusion_constraint_is_found():
    run_sql("ALTER TABLE billing_modelprice DROP CONSTRAINT model_price_no_overlap")
    finding = only_finding()
    assert (finding.code, finding.name) == ("missing_guard", "model_price_no_overlap")
    assert any("EXCLUDE USING gist" in s and "service_tier WITH =" in s for s in finding.sql)
    assert_fix_repairs(finding)


def test_a_price_exclusion_constraint_without_the_service_tier_is_found():
    # The shape before service tiers: a batch price would overlap the standard one.
    run_sql("ALTER TABLE billing_modelprice DROP CONSTRAINT model_price_no_overlap")
    run_sql(
        "ALTER TABLE billing_modelprice ADD CONSTRAINT model_price_no_overlap EXCLUDE USING gist"
        " (model WITH =, tstzrange(effective_from, effective_to, '[)') WITH &&)"
    )
    finding = only_finding()
    assert (finding.code, finding.name) == ("missing_guard", "model_price_no_overlap")
    assert "out of date" in finding.problem
    assert_fix_repairs(finding)


def test_dropped_fixed_rates_trigger_is_found():
    run_sql("DROP TRIGGER model_price_rates_fixed ON billing_modelprice")
    finding = only_finding()
    assert (finding.code, finding.name) == ("missing_guard", "model_price_rates_fixed")
    assert any("CREATE TRIGGER model_price_rates_fixed" in s for s in finding.sql)
    assert_fix_repairs(finding)


def test_missing_table_is_found_with_create_sql():
    run_sql("DROP TABLE usage_daily_rollup")
    finding = only_finding()
    assert (finding.code, finding.name) == ("missing_table", "usage_daily_rollup")
    assert finding.sql[0].startswith('CREATE TABLE "usage_daily_rollup"')
    assert_fix_repairs(finding)


def test_command_exits_one_and_prints_json_on_drift():
    run_sql("DROP INDEX usage_occurred_desc")
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("schema_doctor", "--json", stdout=out)
    assert raised.value.returncode == 1
    payload = json.loads(out.getvalue())
    assert payload["ok"] is False
    assert [f["name"] for f in payload["findings"]] == ["usage_occurred_desc"]


def test_database_system_check_reports_drift():
    run_sql(f"ALTER TABLE {USAGE} DROP CONSTRAINT usage_job_or_draft")
    messages = run_checks(tags=["database"], databases=["default"])
    ours = [m for m in messages if m.id.startswith("ops.")]
    assert [m.id for m in ours] == ["ops.W009"]
    assert "usage_job_or_draft" in ours[0].msg
    assert "ADD CONSTRAINT" in ours[0].hint


def test_database_system_check_is_silent_when_clean():
    messages = run_checks(tags=["database"], databases=["default"])
    assert [m for m in messages if m.id.startswith("ops.")] == []


def test_healthz_reports_drift_from_the_cached_doctor(client):
    assert client.get("/healthz").json()["schema"]["status"] == "ok"
    run_sql("DROP INDEX usage_occurred_desc")
    # Cached: the probe does not re-run the catalog comparison on every call.
    assert client.get("/healthz").json()["status"] == "ok"
    from django.core.cache import cache

    cache.clear()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["schema"]["codes"] == ["missing_index"]


def test_skipped_guard_migration_with_guards_in_place_can_be_faked():
    MigrationRecorder(connection).migration_qs.filter(
        app="billing", name="0002_database_guards"
    ).delete()
    findings = diagnose()
    assert [(f.code, f.name) for f in findings] == [
        ("unapplied_migration", "billing.0002_database_guards")
    ]
    assert "migrate billing 0002_database_guards --fake" in findings[0].fix
    assert "Careful" not in findings[0].fix  # its guards are checked, and present


def test_faking_advice_warns_about_data_steps_it_cannot_verify():
    # contenttypes 0002 has a RunPython step: faking it would skip that step.
    MigrationRecorder(connection).migration_qs.filter(
        app="contenttypes", name="0002_remove_content_type_name"
    ).delete()
    finding = only_finding()
    assert finding.name == "contenttypes.0002_remove_content_type_name"
    assert "--fake" in finding.fix and "Careful: it also runs RunPython" in finding.fix


def test_rollup_without_its_fillfactor_is_found():
    # A rollup recreated by hand (or restored from a dump without storage
    # parameters) silently stops updating its buckets in place.
    run_sql("ALTER TABLE usage_daily_rollup RESET (fillfactor)")
    finding = only_finding()
    assert (finding.code, finding.severity, finding.table, finding.name) == (
        "wrong_storage_parameter",
        "warning",
        "usage_daily_rollup",
        "fillfactor",
    )
    assert finding.sql == ["ALTER TABLE usage_daily_rollup SET (fillfactor = 80);"]
    assert_fix_repairs(finding)


def test_a_missing_storage_parameter_has_its_own_system_check_code():
    run_sql("ALTER TABLE usage_daily_rollup RESET (fillfactor)")
    messages = run_checks(tags=["database"], databases=["default"])
    assert [m.id for m in messages if m.id.startswith("ops.")] == ["ops.W014"]


def test_the_lot_parts_check_is_known_to_the_doctor():
    run_sql("ALTER TABLE billing_creditlot DROP CONSTRAINT lot_parts_add_up")
    finding = only_finding()
    assert (finding.code, finding.name) == ("missing_check", "lot_parts_add_up")
    assert_fix_repairs(finding)
