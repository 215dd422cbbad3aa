"""What transaction pooling takes away (PgBouncer: CI runs the whole suite through it
once), and how the product does without: no prepared statements, and no cursor
outliving its transaction.

In the direct passes these pass trivially; through PgBouncer they fail if the
code leans on a session.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from billing.models import Company
from tests.conftest import make_company, make_job, make_price, make_usage
from tests.pg import conninfo
from usage import views


def test_no_statement_is_ever_prepared_on_the_server(db):
    for _ in range(10):  # psycopg would prepare from the 5th run, if allowed to
        list(Company.objects.filter(name="nobody"))
    assert connection.connection.prepare_threshold is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_the_usage_csv_keeps_its_server_connection_while_it_streams(staff_client, monkeypatch):
    """The CSV by job streams from a server-side cursor, fetched a few rows at a time.
    Between fetches another client of the pooler starts a transaction: had the CSV's
    server connection gone back to the pool, that client would now hold it (the pool
    hands out the last freed connection first), and the next fetch would find no
    cursor."""
    company = make_company()
    make_price()
    for n in range(7):
        make_usage(company, job_id=str(make_job(company, title=f"Job {n}").pk))
    monkeypatch.setattr(views, "CSV_CHUNK", 2)  # a fetch every two rows
    other = psycopg.connect(**conninfo(connection.settings_dict, connection.settings_dict["NAME"]))
    real_lines = views.csv_lines

    def lines_with_another_client_between_fetches(group, rows, tz):
        def interleaved():
            for row in rows:
                other.execute("SELECT 1")  # opens a transaction that holds its connection
                yield row

        return real_lines(group, interleaved(), tz)

    monkeypatch.setattr(views, "csv_lines", lines_with_another_client_between_fetches)
    try:
        response = staff_client.get(
            f"/billing/{company.pk}/", {"tab": "usage", "group": "job", "format": "csv"}
        )
        lines = b"".join(response.streaming_content).decode().splitlines()
    finally:
        other.close()
    assert len(lines) == 1 + 7
    assert sorted(line.split(",")[0] for line in lines[1:]) == [f"Job {n}" for n in range(7)]


@pytest.mark.django_db(transaction=True)
def test_the_session_time_zone_django_sets_holds_in_every_transaction():
    """Django sets TimeZone at connect; another client of the pooler sets another one.
    Whichever server connection each transaction gets, ours still reads UTC."""
    other = psycopg.connect(
        autocommit=True, **conninfo(connection.settings_dict, connection.settings_dict["NAME"])
    )
    try:
        other.execute("SET TIME ZONE 'Asia/Kolkata'")
        for _ in range(20):
            assert other.execute("SHOW TimeZone").fetchone()[0] == "Asia/Kolkata"
            with connection.cursor() as cursor:
                cursor.execute("SHOW TimeZone")
                assert cursor.fetchone()[0] == "UTC"
    finally:
        other.close()
