"""verify_ledger holds issued statements to their hash, their lines, their chain and the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection

from billing.invariants import check_ledger
from tests.billing.conftest import grant
from tests.billing.statement_world import close
from tests.conftest import make_price, make_usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def issued(company, clock):
    make_price("model-a", effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    clock.set(2026, 9, 3, 12)
    grant(company, "100")
    make_usage(company, model="model-a")
    clock.set(2026, 10, 3, 12)
    make_usage(company, model="model-a")
    clock.set(2026, 11, 2, 0)
    september, october = close(company, now=clock.now)
    return september, october


def _tamper(*statements: tuple[str, list]) -> None:
    """Change issued rows the way only someone who turns the guards off could."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # triggers off
        for sql, params in statements:
            cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


def _failed(company) -> set[str]:
    return {f.invariant for f in check_ledger(company_id=company.pk)}


def test_issued_statements_pass_every_check(company, issued):
    assert check_ledger() == []


def test_a_statement_edited_consistently_still_fails_its_hash_and_the_ledger(company, issued):
    september, _ = issued
    _tamper(
        (
            "UPDATE billing_statement SET usage = usage + 1, closing = closing + 1 WHERE id = %s",
            [september.pk],
        )
    )
    assert _failed(company) == {
        "statement_hash_matches_content",
        "statement_lines_add_up",
        "statements_follow_one_another",
        "statements_equal_the_ledger",
    }


def test_an_edited_line_fails_the_hash_and_the_totals(company, issued):
    september, _ = issued
    _tamper(
        (
            "UPDATE billing_statementline SET amount = amount / 2 "
            "WHERE statement_id = %s AND section = 'usage_model'",
            [september.pk],
        )
    )
    assert _failed(company) == {"statement_hash_matches_content", "statement_lines_add_up"}


def test_a_deleted_statement_breaks_the_chain(company, issued):
    september, _ = issued
    _tamper(
        ("DELETE FROM billing_statementline WHERE statement_id = %s", [september.pk]),
        ("DELETE FROM billing_statement WHERE id = %s", [september.pk]),
    )
    assert _failed(company) == {"statements_follow_one_another"}


def test_a_relabelled_line_fails_only_the_hash(company, issued):
    _, october = issued
    _tamper(
        (
            "UPDATE billing_statementline SET label = 'something else' WHERE statement_id = %s",
            [october.pk],
        )
    )
    assert _failed(company) == {"statement_hash_matches_content"}


def test_verify_ledger_names_the_tampered_statement(company, issued, capsys):
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError

    september, _ = issued
    _tamper(("UPDATE billing_statement SET questions = 0 WHERE id = %s", [september.pk]))
    with pytest.raises(CommandError):
        call_command("verify_ledger", "--json")
    summary = json.loads(capsys.readouterr().out)
    (failure,) = summary["failures"]
    assert failure["invariant"] == "statement_hash_matches_content"
    assert "2026-09" in failure["detail"]
