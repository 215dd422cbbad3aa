"""Monthly statements: closing a company's month into a sealed Statement, and the months
not issued yet, computed live the same way.

A statement covers the company's ledger entries with id in
(`entries_after`, `entries_through`]: it starts where the previous one
stopped and stops at the last entry booked (`created_at`) before the month's
end in the company's zone. So every entry is on exactly one statement,
whatever the zone changes in between, and the statements add up to the
ledger. Usage debited after its month was over (a late event, a generation
priced later) is on the statement of the month it was booked in, as "late
usage for <month>" (docs/ledger.md, "Statements").

The boundary is read while holding the company's balance row (FOR SHARE):
every writer of the company's ledger holds that row from before it takes an
entry id until it commits, so once this lock is granted every entry with a
lower id has committed, and any entry not yet written gets a higher id. The
lock is held only for that one read, not while the month is added up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from billing.models import Company, CreditBalance, LedgerEntry, Statement, StatementLine
from billing.money import plain
from core.errors import ServiceError
from core.sql import insert_rows
from usage.models import Job, QuestionGenerationUsage

ZERO = Decimal(0)
Kind = LedgerEntry.Kind
Section = StatementLine.Section
CREDIT_KINDS = [Kind.PURCHASE, Kind.GRANT, Kind.REFUND, Kind.ADJUSTMENT, Kind.EXPIRY]
# Statement total of each credit kind.
CREDIT_TOTALS = {
    Kind.PURCHASE: "purchases",
    Kind.GRANT: "grants",
    Kind.REFUND: "refunds",
    Kind.ADJUSTMENT: "adjustments",
    Kind.EXPIRY: "expiries",
}
MOVEMENT_FIELDS = [*CREDIT_TOTALS.values(), "usage", "late_usage", "corrections"]
DRAFT_JOBS_LABEL = "Jobs not saved yet (drafts)"


class StatementError(ServiceError):
    code = "statement_error"


# --- Months --------------------------------------------------------------------------------


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def month_start(month: date, tz) -> datetime:
    """Midnight of the month's first day in `tz`, as an aware instant."""
    return datetime(month.year, month.month, 1, tzinfo=tz)


def month_of(instant: datetime, tz) -> date:
    return instant.astimezone(tz).date().replace(day=1)


def parse_month(text: str) -> date:
    """`2026-11` as its first day; ValueError with a sentence otherwise."""
    try:
        year, month = (int(part) for part in text.strip().split("-"))
        return date(year, month, 1)
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not a month (YYYY-MM)") from None


# --- What a statement holds ----------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A month of a company, and the instants it runs between."""

    month: date
    start: datetime
    end: datetime


@dataclass
class Built:
    """A statement and its lines, unsaved: to seal, or to show live."""

    statement: Statement
    lines: list[StatementLine] = field(default_factory=list)

    @property
    def issued(self) -> bool:
        return bool(self.statement.pk)

    def section(self, name: str) -> list[StatementLine]:
        return [line for line in self.lines if line.section == name]


_USAGE = QuestionGenerationUsage._meta.db_table
_LEDGER = LedgerEntry._meta.db_table
_STATEMENT = Statement._meta.db_table
_JOB = Job._meta.db_table

# The usage debits and corrections of a window, grouped once by model and once by
# job (GROUPING SETS: one scan), each split by the month the usage ran in: ''
# for this period, else the issued statement whose period holds it (or its local
# month, before the first statement).
_USAGE_GROUPS = f"""
WITH e AS MATERIALIZED (
    SELECT e.kind, e.amount, q.model, q.job_id, q.question_count, q.occurred_at
      FROM {_LEDGER} e LEFT JOIN {_USAGE} q ON q.id = e.usage_id
     WHERE e.company_id = %(company)s AND e.id > %(after)s AND e.id <= %(through)s
       AND e.kind IN ('usage', 'usage_correction')
), m AS (
    SELECT e.*, CASE
           WHEN e.occurred_at IS NULL OR e.occurred_at >= %(start)s THEN ''
           ELSE COALESCE(
               (SELECT to_char(s.month, 'YYYY-MM') FROM {_STATEMENT} s
                 WHERE s.company_id = %(company)s AND s.period_start <= e.occurred_at
                   AND e.occurred_at < s.period_end),
               to_char(e.occurred_at AT TIME ZONE %(tz)s, 'YYYY-MM'))
           END AS usage_month
      FROM e
)
SELECT g.kind, g.usage_month, COALESCE(g.model, ''), g.job_id, g.by_job, g.entries,
       g.questions, g.amount, COALESCE(j.title, '')
  FROM (SELECT kind, usage_month, model, job_id, GROUPING(job_id) = 0 AS by_job,
               COUNT(*) AS entries, COALESCE(SUM(question_count), 0) AS questions,
               SUM(amount) AS amount
          FROM m GROUP BY GROUPING SETS ((kind, usage_month, model), (kind, usage_month, job_id))
       ) g
  LEFT JOIN {_JOB} j ON g.by_job AND j.id = g.job_id
"""


def build_statement(
    *, company: Company, window: Window, after: int, through: int, opening: Decimal
) -> Built:
    """The statement of entries (after, through] of `company`, unsaved. Two queries."""
    statement = Statement(
        company=company,
        month=window.month,
        timezone=company.timezone,
        period_start=window.start,
        period_end=window.end,
        entries_after=after,
        entries_through=through,
        opening=opening,
        **{name: ZERO for name in MOVEMENT_FIELDS},
        entry_count=0,
        generations=0,
        questions=0,
    )
    built = Built(statement)
    if through > after:
        _credit_lines(built)
        _usage_lines(built, window.start)
    statement.closing = opening + sum((getattr(statement, name) for name in MOVEMENT_FIELDS), ZERO)
    for position, line in enumerate(built.lines, start=1):
        line.position = position
    return built


def _credit_lines(built: Built) -> None:
    s = built.statement
    entries = (
        LedgerEntry.objects.filter(
            company=s.company,
            kind__in=CREDIT_KINDS,
            id__gt=s.entries_after,
            id__lte=s.entries_through,
        )
        .order_by("id")
        .values_list("id", "kind", "amount", "created_at", "reason")
    )
    for entry_id, kind, amount, booked_at, reason in entries:
        built.lines.append(
            StatementLine(
                section=Section.CREDIT,
                kind=kind,
                entry_id=entry_id,
                booked_at=booked_at,
                label=reason,
                entries=1,
                amount=amount,
            )
        )
        total = CREDIT_TOTALS[kind]
        setattr(s, total, getattr(s, total) + amount)
        s.entry_count += 1


def _usage_lines(built: Built, start: datetime) -> None:
    s = built.statement
    params = {
        "company": s.company.pk,
        "after": s.entries_after,
        "through": s.entries_through,
        "start": start,
        "tz": s.timezone,
    }
    with connection.cursor() as cursor:
        cursor.execute(_USAGE_GROUPS, params)
        rows = cursor.fetchall()
    by_model, by_job, late, corrections = [], [], [], []
    for kind, usage_month, model, job_id, by_job_row, entries, questions, amount, title in rows:
        line = StatementLine(
            kind=kind,
            usage_month=usage_month,
            model=model if not by_job_row else "",
            job_id=job_id,
            entries=entries,
            questions=questions,
            amount=amount,
        )
        if by_job_row:
            if kind == Kind.USAGE and not usage_month:
                line.section, line.label = Section.USAGE_JOB, title or DRAFT_JOBS_LABEL
                by_job.append(line)
            continue
        _count(s, line)
        if kind == Kind.USAGE_CORRECTION:
            line.section = Section.CORRECTION
            corrections.append(line)
        elif usage_month:
            line.section, line.label = Section.LATE_USAGE, f"Late usage for {usage_month}"
            late.append(line)
        else:
            line.section = Section.USAGE_MODEL
            by_model.append(line)
    by_model.sort(key=lambda line: line.model)
    by_job.sort(key=lambda line: (line.job_id is None, line.label, str(line.job_id)))
    late.sort(key=lambda line: (line.usage_month, line.model))
    corrections.sort(key=lambda line: (line.usage_month, line.model))
    built.lines += by_model + by_job + late + corrections


def _count(s: Statement, line: StatementLine) -> None:
    """Add a by-model line (every usage entry is on exactly one) to the totals."""
    s.entry_count += line.entries
    if line.kind == Kind.USAGE_CORRECTION:
        s.corrections += line.amount
        return
    if line.usage_month:
        s.late_usage += line.amount
    else:
        s.usage += line.amount
    s.generations += line.entries
    s.questions += line.questions


# --- Boundaries ----------------------------------------------------------------------------


_WAIT_FOR_POSTINGS = f"SELECT 1 FROM {CreditBalance._meta.db_table} WHERE company_id = %s FOR SHARE"


def last_entries_before(
    company: Company, *, after: int, ends: list[datetime], lock: bool
) -> list[int]:
    """For each instant of `ends` (ascending), the id of the company's last entry booked
    before it (and after `after`), else the one before's (or `after`). With `lock`,
    first waits for the company's in-flight postings (module docstring), in a
    transaction of its own.

    One end (the monthly run) scans the company's entries back from the newest to
    the first booked before it; several (a backlog) read the entries after `after`
    once, each end a FILTER of the same scan.
    """
    if not ends:
        return []
    entries = LedgerEntry.objects.filter(company=company, id__gt=after)
    with transaction.atomic():
        if lock:
            with connection.cursor() as cursor:
                cursor.execute(_WAIT_FOR_POSTINGS, [company.pk])
        if len(ends) == 1:
            found = [entries.filter(created_at__lt=ends[0]).aggregate(last=Max("id"))["last"]]
        else:
            each = {f"e{i}": Max("id", filter=Q(created_at__lt=end)) for i, end in enumerate(ends)}
            found = list(entries.aggregate(**each).values())
    boundaries, last = [], after
    for entry_id in found:
        last = max(last, entry_id or after)
        boundaries.append(last)
    return boundaries


def _balance_after(company: Company, entry_id: int) -> Decimal:
    if not entry_id:
        return ZERO
    return LedgerEntry.objects.values_list("balance_after", flat=True).get(
        company=company, pk=entry_id
    )


def first_month(company: Company) -> date | None:
    """The month (company zone) of the company's first ledger entry."""
    first = LedgerEntry.objects.filter(company=company).order_by("id").values_list("created_at")[:1]
    return month_of(first[0][0], company.tz) if first else None


def last_statement(company: Company) -> Statement | None:
    return Statement.objects.filter(company=company).order_by("-month").first()


def pending_windows(
    company: Company,
    *,
    previous: Statement | None,
    until: date | None = None,
    before: datetime | None = None,
) -> Iterator[Window]:
    """The months after `previous` (or from the first active one) up to `until`, or
    those ended `before` an instant, each starting where the one before ended, ending
    at its next month's midnight in the company's current zone."""
    month = next_month(previous.month) if previous else first_month(company)
    if month is None:
        return
    start = previous.period_end if previous else month_start(month, company.tz)
    while until is None or month <= until:
        end = month_start(next_month(month), company.tz)
        if before is not None and end > before:
            return
        yield Window(month, start, end)
        month, start = next_month(month), end


# --- Closing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Closed:
    company: Company
    month: date
    statement: Statement | None  # None: another run closed it first
    dry_run: bool


def close_due_statements(
    *,
    company: Company,
    now: datetime | None = None,
    through_month: date | None = None,
    dry_run: bool = False,
) -> list[Closed]:
    """Close every month of `company` that has ended (in its zone) and is not closed,
    oldest first, each in its own transaction; up to `through_month` if given.

    Safe to run twice and on two hosts at once: a closed month is not due any
    more, and of two runs closing the same month the unique (company, month)
    lets one statement in and the other run reports it closed by another.
    """
    now = now or timezone.now()
    previous = last_statement(company)
    due = list(pending_windows(company, previous=previous, until=through_month, before=now))
    after = previous.entries_through if previous else 0
    boundaries = last_entries_before(company, after=after, ends=[w.end for w in due], lock=True)
    closed = []
    for window, through in zip(due, boundaries, strict=True):
        result = close_month(
            company=company, window=window, previous=previous, through=through, dry_run=dry_run
        )
        closed.append(result)
        if result.statement is None:
            break  # another run is ahead on this company: it closes the rest
        previous = result.statement
    return closed


def close_month(
    *,
    company: Company,
    window: Window,
    previous: Statement | None,
    through: int,
    dry_run: bool = False,
) -> Closed:
    """Close one month, its entries up to `through`: build, store, seal; a dry run is
    the same rolled back."""
    after = previous.entries_through if previous else 0
    with transaction.atomic():
        opening = previous.closing if previous else ZERO
        built = build_statement(
            company=company, window=window, after=after, through=through, opening=opening
        )
        _check_against_ledger(built)
        try:
            with transaction.atomic():
                statement = _store(built)
        except IntegrityError:
            if not Statement.objects.filter(company=company, month=window.month).exists():
                raise
            return Closed(company, window.month, None, dry_run)
        if dry_run:
            transaction.set_rollback(True)
    return Closed(company, window.month, statement, dry_run)


def _check_against_ledger(built: Built) -> None:
    s = built.statement
    if s.entries_through and s.closing != _balance_after(s.company, s.entries_through):
        raise StatementError(
            f"{s.company} {s.month:%Y-%m}: closing {s.closing} is not the balance after entry "
            f"{s.entries_through}; run verify_ledger before closing statements."
        )


LINE_BATCH = 5000
_SEAL = f"""
UPDATE {_STATEMENT} SET content_hash = 'seal'
 WHERE id = %s AND content_hash = '' RETURNING content_hash
"""


def _store(built: Built) -> Statement:
    statement = built.statement
    statement.closed_at = timezone.now()
    statement.content_hash = ""
    statement.save(force_insert=True)
    for line in built.lines:
        line.statement = statement
    for start in range(0, len(built.lines), LINE_BATCH):
        insert_rows(StatementLine, built.lines[start : start + LINE_BATCH])
    with connection.cursor() as cursor:
        cursor.execute(_SEAL, [statement.pk])
        statement.content_hash = cursor.fetchone()[0]
    return statement


# --- Live ----------------------------------------------------------------------------------

LIVE_MONTHS = 3  # not-yet-issued months shown live, the current one included


def unissued_statements(company: Company, *, now: datetime | None = None) -> list[Built]:
    """The months after the last issued statement up to the current one, computed live
    (newest first; at most LIVE_MONTHS): what the next close will issue, so far."""
    now = now or timezone.now()
    current = month_of(now, company.tz)
    previous = last_statement(company)
    windows = list(pending_windows(company, previous=previous, until=current))
    shown = windows[-LIVE_MONTHS:]
    if not shown:
        return []
    ends = [w.end for w in shown]
    if previous is not None and len(shown) == len(windows):
        after, opening = previous.entries_through, previous.closing
    else:  # older unissued months are left out: start where the first shown one does
        floor = previous.entries_through if previous else 0
        after, *_ = last_entries_before(company, after=floor, ends=[shown[0].start], lock=False)
        opening = _balance_after(company, after)
    result = []
    for window, through in zip(shown, last_entries_before(company, after=after, ends=ends, lock=False), strict=True):  # fmt: skip
        built = build_statement(
            company=company, window=window, after=after, through=through, opening=opening
        )
        result.append(built)
        after, opening = through, built.statement.closing
    return result[::-1]


def issued_statement(company: Company, month: date) -> Built | None:
    statement = Statement.objects.filter(company=company, month=month).first()
    if statement is None:
        return None
    statement.company = company
    return Built(statement, list(statement.lines.order_by("position")))


def statement_for(company: Company, month: date, *, now: datetime | None = None) -> Built | None:
    """The issued statement of `month`, else the live one if it is not issued yet."""
    issued = issued_statement(company, month)
    if issued is not None:
        return issued
    for built in unissued_statements(company, now=now):
        if built.statement.month == month:
            return built
    return None


def companies_with_ledger(size: int = 500) -> Iterator[Company]:
    """Every company with a balance row (each with ledger entries has one), in keyset
    batches of id order, so memory stays flat whatever their number."""
    rows = Company.objects.filter(pk__in=CreditBalance.objects.values("company_id"))
    last: uuid.UUID | None = None
    while True:
        page = rows.order_by("pk") if last is None else rows.filter(pk__gt=last).order_by("pk")
        batch = list(page[:size])
        yield from batch
        if len(batch) < size:
            return
        last = batch[-1].pk


# --- Presenting ----------------------------------------------------------------------------

MOVEMENT_LABELS = {
    "purchases": "Purchases",
    "grants": "Grants",
    "refunds": "Refunds",
    "adjustments": "Adjustments",
    "expiries": "Expiries",
    "usage": "Usage",
    "late_usage": "Late usage (earlier months)",
    "corrections": "Corrections",
}


def movement_rows(statement: Statement) -> list[tuple[str, str, Decimal]]:
    """(field, label, amount) of each movement, in the statement's order."""
    return [(name, MOVEMENT_LABELS[name], getattr(statement, name)) for name in MOVEMENT_FIELDS]


CSV_HEADER = [
    "section",
    "kind",
    "entry_id",
    "booked_at_utc",
    "usage_month",
    "model",
    "job_id",
    "label",
    "entries",
    "questions",
    "amount",
]


def csv_rows(built: Built) -> Iterator[list[str]]:
    """The statement as CSV rows: who and when, then every line, then the totals and
    the reconciliation, every amount with all its digits."""
    s = built.statement
    status = f"issued {s.closed_at.isoformat()}" if built.issued else "open (not yet issued)"
    yield ["statement", f"{s.month:%Y-%m}", s.company.name, str(s.company.pk), s.timezone]
    yield ["period_utc", s.period_start.isoformat(), s.period_end.isoformat()]
    yield ["status", status, s.content_hash]
    yield ["ledger_entries", str(s.entries_after + 1), str(s.entries_through), str(s.entry_count)]
    yield CSV_HEADER
    yield ["opening", "", "", "", "", "", "", "Opening balance", "", "", plain(s.opening)]
    for line in built.lines:
        yield [
            line.section,
            line.kind,
            "" if line.entry_id is None else str(line.entry_id),
            line.booked_at.isoformat() if line.booked_at else "",
            line.usage_month,
            line.model,
            "" if line.job_id is None else str(line.job_id),
            line.label,
            str(line.entries),
            str(line.questions),
            plain(line.amount),
        ]
    for name, label, amount in movement_rows(s):
        yield ["total", name, "", "", "", "", "", label, "", "", plain(amount)]
    yield ["closing", "", "", "", "", "", "", "Closing balance", "", "", plain(s.closing)]
    yield [
        "reconciliation",
        "",
        "",
        "",
        "",
        "",
        "",
        "closing = opening + movements",
        "",
        "",
        f"{plain(s.closing)} = {plain(s.opening)} + {plain(s.movements)}",
    ]
