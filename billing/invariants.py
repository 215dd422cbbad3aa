"""The ledger's invariants, checked set-based in SQL (`manage.py verify_ledger`).

Each check is one query over whole tables (GROUP BY / window / join), never a
Python loop over rows, and answers the companies that break it. Sums are exact
NUMERIC.

The usage tables are looked up through the app registry at call time (billing
never imports usage; this module is only used by the command and the tests).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.apps import apps
from django.db import connection
from django.utils import timezone

from billing.models import (
    APIKey,
    CreditBalance,
    CreditLot,
    LedgerEntry,
    ModelPrice,
    Reservation,
    Statement,
    StatementLine,
)


@dataclass(frozen=True)
class Failure:
    company_id: str
    invariant: str
    detail: str


def _tables() -> dict[str, str]:
    return {
        "ledger": LedgerEntry._meta.db_table,
        "balance": CreditBalance._meta.db_table,
        "lot": CreditLot._meta.db_table,
        "price": ModelPrice._meta.db_table,
        "statement": Statement._meta.db_table,
        "line": StatementLine._meta.db_table,
        "usage": apps.get_model("usage", "QuestionGenerationUsage")._meta.db_table,
        "rollup": apps.get_model("usage", "UsageDailyRollup")._meta.db_table,
        "keyspend": apps.get_model("usage", "KeyDailySpend")._meta.db_table,
        "hold": Reservation._meta.db_table,
        "apikey": APIKey._meta.db_table,
    }


# name -> SQL answering (company_id, detail) per broken company. `{c}` is
# replaced by a company filter on the given alias (or nothing).
CHECKS: dict[str, str] = {
    "balance_equals_ledger": """
        SELECT COALESCE(b.company_id, l.company_id),
               'balance ' || COALESCE(b.balance, 0) || ' <> ledger sum ' || COALESCE(l.total, 0)
          FROM (SELECT * FROM {balance} b WHERE TRUE {c:b}) b
          FULL JOIN (SELECT company_id, SUM(amount) AS total FROM {ledger} e
                      WHERE TRUE {c:e} GROUP BY company_id) l ON l.company_id = b.company_id
         WHERE COALESCE(b.balance, 0) <> COALESCE(l.total, 0)""",
    "running_balance": """
        SELECT company_id, COUNT(*) || ' entries whose balance_after is not the running sum'
          FROM (SELECT company_id, balance_after,
                       SUM(amount) OVER (PARTITION BY company_id ORDER BY id) AS running
                  FROM {ledger} e WHERE TRUE {c:e}) r
         WHERE balance_after <> running GROUP BY company_id""",
    "usage_debited_once_for_its_cost": """
        SELECT COALESCE(u.company_id, d.company_id), COUNT(*) || ' usage rows not debited '
               || 'exactly once for exactly their cost, prepaid rows with a debit, or debits without their row'
          FROM (SELECT id, company_id, cost, prepaid FROM {usage} u WHERE TRUE {c:u}) u
          FULL JOIN (SELECT usage_id, MIN(company_id::text)::uuid AS company_id,
                            COUNT(DISTINCT company_id) AS companies,
                            COUNT(*) FILTER (WHERE kind = 'usage') AS debits,
                            SUM(amount) AS total
                       FROM {ledger} e WHERE usage_id IS NOT NULL {c:e}
                      GROUP BY usage_id) d ON d.usage_id = u.id
         WHERE u.id IS NULL OR d.companies > 1 OR d.company_id <> u.company_id
            OR (u.prepaid AND d.usage_id IS NOT NULL)
            OR (NOT u.prepaid AND u.cost IS NULL AND d.usage_id IS NOT NULL
                AND (d.debits > 0 OR d.total <> 0))
            OR (NOT u.prepaid AND u.cost IS NOT NULL
                AND (d.usage_id IS NULL OR d.debits <> 1 OR d.total <> -u.cost))
         GROUP BY 1""",
    # The SQL twin of billing.prices.charge_for (the same rates, defaults and
    # long-context rule); `* 0.000001` because numeric multiplication is exact
    # and division rounds to a scale of its own choosing.
    "priced_cost_is_tokens_times_its_price": """
        SELECT u.company_id, COUNT(*) || ' priced usage rows whose cost is not their tokens '
               || 'at the price they reference'
          FROM {usage} u JOIN {price} p ON p.id = u.price_id
         CROSS JOIN LATERAL (
               SELECT COALESCE(u.prompt_tokens > p.long_context_threshold, FALSE) AS long) c
         CROSS JOIN LATERAL (
               SELECT CASE WHEN c.long THEN p.long_input_per_million
                           ELSE p.input_per_million END AS input,
                      CASE WHEN c.long THEN p.long_cached_input_per_million
                           ELSE p.cached_input_per_million END AS cache_read,
                      CASE WHEN c.long THEN p.long_cache_write_5m_per_million
                           ELSE COALESCE(p.cache_write_5m_per_million, p.input_per_million)
                      END AS write_5m,
                      CASE WHEN c.long THEN p.long_cache_write_1h_per_million
                           ELSE COALESCE(p.cache_write_1h_per_million,
                                         p.cache_write_5m_per_million, p.input_per_million)
                      END AS write_1h,
                      CASE WHEN c.long THEN p.long_output_per_million
                           ELSE p.output_per_million END AS output,
                      CASE WHEN c.long THEN p.long_reasoning_per_million
                           ELSE COALESCE(p.reasoning_per_million, p.output_per_million)
                      END AS reasoning) r
         WHERE u.cost_source = 'priced' {c:u}
           AND (u.cost IS DISTINCT FROM
                ((u.prompt_tokens - u.cached_prompt_tokens - u.cache_write_5m_tokens
                  - u.cache_write_1h_tokens) * r.input
                 + u.cached_prompt_tokens * r.cache_read
                 + u.cache_write_5m_tokens * r.write_5m
                 + u.cache_write_1h_tokens * r.write_1h
                 + (u.completion_tokens - u.reasoning_tokens) * r.output
                 + u.reasoning_tokens * r.reasoning) * 0.000001
                OR u.model <> p.model OR u.service_tier <> p.service_tier
                OR u.occurred_at < p.effective_from
                OR u.occurred_at >= COALESCE(p.effective_to, 'infinity'))
         GROUP BY u.company_id""",
    "every_credit_has_its_lot": """
        SELECT COALESCE(e.company_id, lot.company_id), COUNT(*) || ' positive postings without '
               || 'a matching lot (or lots without their posting)'
          FROM (SELECT * FROM {ledger} e WHERE amount > 0 {c:e}) e
          FULL JOIN (SELECT * FROM {lot} lot WHERE TRUE {c:lot}) lot ON lot.entry_id = e.id
         WHERE e.id IS NULL OR lot.id IS NULL OR lot.amount <> e.amount
            OR lot.company_id <> e.company_id OR lot.expires_at IS DISTINCT FROM e.expires_at
         GROUP BY 1""",
    "expiry_entries_match_lots": """
        SELECT COALESCE(lot.company_id, x.company_id), COUNT(*) || ' lots whose expired amount '
               || 'differs from their expiry entries'
          FROM (SELECT * FROM {lot} lot WHERE TRUE {c:lot}) lot
          FULL JOIN (SELECT company_id, idempotency_key, SUM(amount) AS total FROM {ledger} e
                      WHERE kind = 'expiry' {c:e} GROUP BY company_id, idempotency_key) x
            ON x.idempotency_key = 'expiry:' || lot.id AND x.company_id = lot.company_id
         WHERE COALESCE(lot.expired, 0) <> -COALESCE(x.total, 0)
         GROUP BY 1""",
    "lot_within_its_amount": """
        SELECT company_id, COUNT(*) || ' lots where consumed + expired exceeds the amount, a part '
               || 'is negative, or credit was consumed after it expired'
          FROM {lot} lot
         WHERE (consumed + expired > amount OR consumed < 0 OR expired < 0
                OR remaining <> amount - consumed - expired
                OR last_consumed_at > expires_at
                OR (expired > 0 AND expires_at IS NULL)) {c:lot}
         GROUP BY company_id""",
    "consumption_equals_debits": """
        SELECT b.company_id, 'lots consumed ' || COALESCE(l.consumed, 0) || ' + debt ' || b.debt
               || ' <> debits ' || COALESCE(d.debited, 0)
          FROM (SELECT * FROM {balance} b WHERE TRUE {c:b}) b
          LEFT JOIN (SELECT company_id, SUM(consumed) AS consumed FROM {lot} lot
                      WHERE TRUE {c:lot} GROUP BY company_id) l ON l.company_id = b.company_id
          LEFT JOIN (SELECT company_id, -SUM(amount) AS debited FROM {ledger} e
                      WHERE amount < 0 AND kind <> 'expiry' {c:e} GROUP BY company_id) d
            ON d.company_id = b.company_id
         WHERE COALESCE(l.consumed, 0) + b.debt <> COALESCE(d.debited, 0)""",
    "balance_equals_lots": """
        SELECT b.company_id, 'balance ' || b.balance || ' <> unconsumed credit '
               || COALESCE(l.remaining, 0) || ' - debt ' || b.debt
          FROM (SELECT * FROM {balance} b WHERE TRUE {c:b}) b
          LEFT JOIN (SELECT company_id, SUM(remaining) AS remaining FROM {lot} lot
                      WHERE TRUE {c:lot} GROUP BY company_id) l ON l.company_id = b.company_id
         WHERE b.balance <> COALESCE(l.remaining, 0) - b.debt""",
    "no_debt_beside_usable_credit": """
        SELECT b.company_id, 'debt ' || b.debt || ' while unexpired credit is left unused'
          FROM {balance} b
         WHERE b.debt > 0 {c:b} AND EXISTS (
               SELECT 1 FROM {lot} lot WHERE lot.company_id = b.company_id AND lot.remaining > 0
                  AND (lot.expires_at IS NULL OR lot.expires_at > %(now)s))""",
    "rollup_equals_usage": """
        SELECT COALESCE(raw.company_id, r.company_id), COUNT(*) || ' daily rollup buckets differ '
               || 'from the usage rows, first ' || MIN(COALESCE(raw.day, r.day))
          FROM (SELECT company_id, occurred_on AS day, model, status, COUNT(*) AS generations,
                       SUM(question_count) AS questions, SUM(prompt_tokens) AS prompt_tokens,
                       SUM(cached_prompt_tokens) AS cached, SUM(completion_tokens) AS completion,
                       COALESCE(SUM(cost), 0) AS cost, COUNT(*) FILTER (WHERE cost IS NULL) AS unpriced
                  FROM {usage} u WHERE TRUE {c:u}
                 GROUP BY company_id, occurred_on, model, status) raw
          FULL JOIN (SELECT * FROM {rollup} r WHERE TRUE {c:r}) r
            ON r.company_id = raw.company_id AND r.day = raw.day AND r.model = raw.model
           AND r.status = raw.status
         WHERE COALESCE(raw.generations, 0) <> COALESCE(r.generations, 0)
            OR COALESCE(raw.questions, 0) <> COALESCE(r.questions, 0)
            OR COALESCE(raw.prompt_tokens, 0) <> COALESCE(r.prompt_tokens, 0)
            OR COALESCE(raw.cached, 0) <> COALESCE(r.cached_prompt_tokens, 0)
            OR COALESCE(raw.completion, 0) <> COALESCE(r.completion_tokens, 0)
            OR COALESCE(raw.cost, 0) <> COALESCE(r.cost, 0)
            OR COALESCE(raw.unpriced, 0) <> COALESCE(r.unpriced, 0)
         GROUP BY 1""",
    # Issued statements (usage.statements): sealed content, each adding up, one after
    # the other, and together exactly the ledger.
    "statement_hash_matches_content": """
        SELECT company_id, COUNT(*) || ' issued statements whose content no longer has '
               || 'their hash, first ' || to_char(MIN(month), 'YYYY-MM')
          FROM {statement} s
         WHERE content_hash IS DISTINCT FROM billing_statement_hash(id) {c:s}
         GROUP BY company_id""",
    "statement_lines_add_up": """
        SELECT s.company_id, COUNT(*) || ' statements whose closing is not opening + movements '
               || 'or whose lines do not add up to their totals, first '
               || to_char(MIN(s.month), 'YYYY-MM')
          FROM {statement} s
          LEFT JOIN LATERAL (
               SELECT COALESCE(SUM(amount) FILTER (WHERE section = 'credit' AND kind = 'purchase'), 0) AS purchases,
                      COALESCE(SUM(amount) FILTER (WHERE section = 'credit' AND kind = 'grant'), 0) AS grants,
                      COALESCE(SUM(amount) FILTER (WHERE section = 'credit' AND kind = 'refund'), 0) AS refunds,
                      COALESCE(SUM(amount) FILTER (WHERE section = 'credit' AND kind = 'adjustment'), 0) AS adjustments,
                      COALESCE(SUM(amount) FILTER (WHERE section = 'credit' AND kind = 'expiry'), 0) AS expiries,
                      COALESCE(SUM(amount) FILTER (WHERE section = 'usage_model'), 0) AS usage,
                      COALESCE(SUM(amount) FILTER (WHERE section = 'usage_job'), 0) AS usage_by_job,
                      COALESCE(SUM(amount) FILTER (WHERE section = 'late_usage'), 0) AS late_usage,
                      COALESCE(SUM(amount) FILTER (WHERE section = 'correction'), 0) AS corrections
                 FROM {line} l WHERE l.statement_id = s.id) l ON TRUE
         WHERE (s.closing <> s.opening + s.purchases + s.grants + s.refunds + s.adjustments
                + s.expiries + s.usage + s.late_usage + s.corrections
                OR (l.purchases, l.grants, l.refunds, l.adjustments, l.expiries, l.usage,
                    l.usage_by_job, l.late_usage, l.corrections)
                   <> (s.purchases, s.grants, s.refunds, s.adjustments, s.expiries, s.usage,
                       s.usage, s.late_usage, s.corrections)) {c:s}
         GROUP BY s.company_id""",
    "statements_follow_one_another": """
        SELECT company_id, COUNT(*) || ' statements that do not open where the previous one '
               || 'closed (balance, last entry, instant or month), first '
               || to_char(MIN(month), 'YYYY-MM')
          FROM (SELECT s.*, LAG(closing) OVER w AS prev_closing,
                       LAG(entries_through) OVER w AS prev_through,
                       LAG(period_end) OVER w AS prev_end, LAG(month) OVER w AS prev_month
                  FROM {statement} s WHERE TRUE {c:s}
                WINDOW w AS (PARTITION BY company_id ORDER BY month)) s
         WHERE (prev_month IS NULL AND (opening <> 0 OR entries_after <> 0))
            OR (prev_month IS NOT NULL AND (opening <> prev_closing
                OR entries_after <> prev_through OR period_start <> prev_end
                OR month <> prev_month + interval '1 month'))
         GROUP BY company_id""",
    "statements_equal_the_ledger": """
        SELECT s.company_id, COUNT(*) || ' statements whose totals differ from the ledger '
               || 'entries they cover, first ' || to_char(MIN(s.month), 'YYYY-MM')
          FROM {statement} s
          LEFT JOIN LATERAL (
               SELECT COUNT(*) AS n,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'purchase'), 0) AS purchases,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'grant'), 0) AS grants,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'refund'), 0) AS refunds,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'adjustment'), 0) AS adjustments,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'expiry'), 0) AS expiries,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'usage'), 0) AS usage,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'usage_correction'), 0) AS corrections
                 FROM {ledger} e
                WHERE e.company_id = s.company_id AND e.id > s.entries_after
                  AND e.id <= s.entries_through) e ON TRUE
          LEFT JOIN {ledger} last ON last.id = s.entries_through
         WHERE ((e.n, e.purchases, e.grants, e.refunds, e.adjustments, e.expiries, e.usage,
                 e.corrections)
                <> (s.entry_count, s.purchases, s.grants, s.refunds, s.adjustments, s.expiries,
                    s.usage + s.late_usage, s.corrections)
                OR (s.entries_through > 0 AND (last.company_id IS DISTINCT FROM s.company_id
                    OR last.balance_after IS DISTINCT FROM s.closing))) {c:s}
         GROUP BY s.company_id""",
    "key_spend_equals_usage": """
        SELECT COALESCE(raw.company_id, s.company_id), COUNT(*) || ' per-key spend buckets '
               || 'differ from the usage rows, first ' || MIN(COALESCE(raw.day, s.day))
          FROM (SELECT api_key_id, company_id, occurred_on AS day, COUNT(*) AS generations,
                       COALESCE(SUM(cost), 0) AS cost, COUNT(*) FILTER (WHERE cost IS NULL) AS unpriced
                  FROM {usage} u WHERE api_key_id IS NOT NULL {c:u}
                 GROUP BY api_key_id, company_id, occurred_on) raw
          FULL JOIN (SELECT * FROM {keyspend} s WHERE TRUE {c:s}) s
            ON s.api_key_id = raw.api_key_id AND s.company_id = raw.company_id AND s.day = raw.day
         WHERE COALESCE(raw.generations, 0) <> COALESCE(s.generations, 0)
            OR COALESCE(raw.cost, 0) <> COALESCE(s.cost, 0)
            OR COALESCE(raw.unpriced, 0) <> COALESCE(s.unpriced, 0)
         GROUP BY 1""",
    # Holds are never money: they only have to agree with the usage that settled them.
    "settled_holds_match_their_usage": """
        SELECT h.company_id, COUNT(*) || ' settled holds whose usage row is missing, of another '
               || 'company, or settles another hold too'
          FROM {hold} h
          LEFT JOIN {usage} u ON u.id = h.settled_usage_id
         WHERE h.status = 'settled' {c:h}
           AND (u.id IS NULL OR u.company_id <> h.company_id
                OR EXISTS (SELECT 1 FROM {hold} o
                            WHERE o.settled_usage_id = h.settled_usage_id AND o.id <> h.id))
         GROUP BY h.company_id""",
    "holds_of_their_company_keys": """
        SELECT h.company_id, COUNT(*) || ' holds asked for by a key of another company'
          FROM {hold} h JOIN {apikey} k ON k.id = h.api_key_id
         WHERE k.company_id IS NOT NULL AND k.company_id <> h.company_id {c:h}
         GROUP BY h.company_id""",
}


def _sql(template: str, company_id: uuid.UUID | None) -> str:
    sql = template
    for name, table in _tables().items():
        sql = sql.replace("{" + name + "}", table)
    for alias in ("b", "e", "u", "lot", "r", "h", "s"):
        clause = f"AND {alias}.company_id = %(company)s" if company_id else ""
        sql = sql.replace("{c:" + alias + "}", clause)
    return sql


def check_ledger(
    *, company_id: uuid.UUID | None = None, now: datetime | None = None
) -> list[Failure]:
    """Every broken invariant, per company (empty when all hold)."""
    params = {"company": company_id, "now": now or timezone.now()}
    failures = []
    with connection.cursor() as cursor:
        for name, template in CHECKS.items():
            cursor.execute(_sql(template, company_id), params)
            failures += [Failure(str(row[0]), name, row[1]) for row in cursor.fetchall()]
    return sorted(failures, key=lambda f: (f.company_id, f.invariant))
