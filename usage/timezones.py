"""Changing a company's time zone, and re-bucketing its usage into the new days.

A company's usage is bucketed by local day (`occurred_on`) when it is recorded,
and the daily rollup, month-to-date spend, monthly limits and alerts all read
those days. So the time zone is changed here, in one transaction that also
moves every row to its new local day and rebuilds the company's rollup from
the raw rows, set-based. The API and the admin refuse a plain
edit once usage exists and point here.

An event recorded concurrently by a request that read the old zone may land
on its old-zone day (the rollup stays exact either way): running the change
again with the same zone re-buckets such stragglers and changes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction

from billing.audit import record_audit
from billing.models import Company, validate_timezone
from usage import rollup
from usage.models import QuestionGenerationUsage, UsageDailyRollup

USAGE = QuestionGenerationUsage._meta.db_table
ROLLUP = UsageDailyRollup._meta.db_table

_MOVE_ROWS = f"""
UPDATE {USAGE} SET occurred_on = (occurred_at AT TIME ZONE %(tz)s)::date
 WHERE company_id = %(company)s AND occurred_on <> (occurred_at AT TIME ZONE %(tz)s)::date
"""
_REBUILD_ROLLUP = f"""
INSERT INTO {ROLLUP} ({rollup.COLUMNS})
SELECT company_id, occurred_on, model, status, COUNT(*), SUM(question_count),
       SUM(prompt_tokens), SUM(cached_prompt_tokens), SUM(completion_tokens),
       COALESCE(SUM(cost), 0), COUNT(*) FILTER (WHERE cost IS NULL)
  FROM {USAGE} WHERE company_id = %(company)s
 GROUP BY company_id, occurred_on, model, status
"""


@dataclass(frozen=True)
class TimezoneChange:
    old: str
    new: str
    moved_rows: int


def change_company_timezone(
    *,
    company: Company,
    timezone_name: str,
    actor=None,
    actor_label: str = "",
    dry_run: bool = False,
) -> TimezoneChange:
    """Set the company's time zone and move its usage to the new local days."""
    validate_timezone(timezone_name)
    with transaction.atomic():
        company = Company.objects.select_for_update().get(pk=company.pk)
        old = company.timezone
        company.timezone = timezone_name
        moved = _rebucket(company)
        company.save(update_fields=["timezone", "updated_at"])
        record_audit(
            action="company.timezone",
            actor=actor,
            actor_label=actor_label,
            company=company,
            obj=company,
            before={"timezone": old},
            after={"timezone": timezone_name, "moved_rows": moved},
        )
        if dry_run:
            transaction.set_rollback(True)
    return TimezoneChange(old=old, new=timezone_name, moved_rows=moved)


def _rebucket(company: Company) -> int:
    params = {"tz": company.timezone, "company": company.pk}
    with connection.cursor() as cursor:
        cursor.execute(_MOVE_ROWS, params)
        moved = cursor.rowcount
        # Lock order: usage rows (above), then the rollup. The table lock waits for
        # in-flight recordings and holds new ones back until this rebuild commits.
        cursor.execute(f"LOCK TABLE {ROLLUP} IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(f"DELETE FROM {ROLLUP} WHERE company_id = %(company)s", params)
        cursor.execute(_REBUILD_ROLLUP, params)
    rollup.rebuild_key_spend(company.pk)
    return moved
