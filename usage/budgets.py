"""What a company and one of its keys may still spend: the one rule the quota check and
the admission of a hold share.

A :class:`Budget` is read in four queries: the balance, the company's
month-to-date spend (the exact daily rollup), its open holds and the key's
among them (one query over the partial index of open holds), and the key's
spend today and this month (the exact per-key rollup, KeyDailySpend). Days
and months are the company's time zone. A hold whose `expires_at` has passed
counts as released here, whether or not `expire_reservations` has marked it.

:meth:`Budget.refusals` answers for a generation of a given cost: a quota
check is the generation of nothing, refused once a line is reached (as the
quota check always was); a hold of `amount` is refused when it would cross a
line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Q, Sum
from django.utils import timezone

from billing.models import APIKey, Company, Reservation
from usage.models import KeyDailySpend
from usage.selectors import month_to_date_totals

ZERO = Decimal(0)

# Stable reason codes (the API's `reason_codes` and a refused hold's `reasons`),
# with the sentence the quota check's `reasons` has always carried.
REASONS = {
    "company_inactive": "company is inactive",
    "balance": "balance is at or below the overdraft allowance",
    "company_monthly_limit": "monthly spend limit reached",
    "key_daily_limit": "daily spend limit of this API key reached",
    "key_monthly_limit": "monthly spend limit of this API key reached",
}


@dataclass(frozen=True)
class KeyBudget:
    key: APIKey
    day_spend: Decimal
    month_spend: Decimal
    held: Decimal  # the key's open, unexpired holds

    @property
    def daily_limit(self) -> Decimal | None:
        return self.key.daily_limit

    @property
    def monthly_limit(self) -> Decimal | None:
        return self.key.monthly_limit


@dataclass(frozen=True)
class Budget:
    company: Company
    balance: Decimal
    month_spend: Decimal
    unpriced: int  # this month's generations not yet in the spend
    held: Decimal  # the company's open, unexpired holds
    key: KeyBudget | None  # None for a platform key, or none given

    def refusals(self, amount: Decimal = ZERO) -> list[str]:
        """The reason codes that refuse a generation costing `amount` (empty: allowed)."""
        company = self.company
        reasons = []
        if not company.is_active:
            reasons.append("company_inactive")
        if not _fits(-(self.balance - self.held), amount, company.overdraft_allowance):
            reasons.append("balance")
        if not _fits(self.month_spend + self.held, amount, company.monthly_spend_limit):
            reasons.append("company_monthly_limit")
        if self.key is not None:
            k = self.key
            if not _fits(k.day_spend + k.held, amount, k.daily_limit):
                reasons.append("key_daily_limit")
            if not _fits(k.month_spend + k.held, amount, k.monthly_limit):
                reasons.append("key_monthly_limit")
        return reasons


def _fits(used: Decimal, amount: Decimal, cap: Decimal | None) -> bool:
    """Whether `amount` more stays within `cap`; nothing more fits only below the cap."""
    if cap is None:
        return True
    return used + amount <= cap if amount > 0 else used < cap


def read_budget(
    company: Company,
    *,
    key: APIKey | None = None,
    balance: Decimal,
    now: datetime | None = None,
    key_figures: bool = False,
) -> Budget:
    """The budget of `company` (and of `key`, if it is one of the company's keys).

    `balance` is the caller's: read plainly by the quota check, under the
    balance row lock by an admission (billing.ledger.lock_balance). The key's
    spend is read when it has a limit, or when `key_figures` asks (the quota
    check shows it): an admission for an unlimited key skips that query.
    """
    now = now or timezone.now()
    spend, unpriced = month_to_date_totals(company, now)
    company_key = key if key is not None and key.company_id == company.pk else None
    held, key_held = open_holds(company, company_key, now)
    key_budget = None
    if company_key is not None:
        needed = key_figures or company_key.has_limits
        day, month = key_spend(company, company_key, now) if needed else (ZERO, ZERO)
        key_budget = KeyBudget(key=company_key, day_spend=day, month_spend=month, held=key_held)
    return Budget(
        company=company,
        balance=balance,
        month_spend=spend,
        unpriced=unpriced,
        held=held,
        key=key_budget,
    )


_HOLDS = f"""
SELECT COALESCE(SUM(amount), 0), COALESCE(SUM(amount) FILTER (WHERE api_key_id = %(key)s), 0)
  FROM {Reservation._meta.db_table}
 WHERE company_id = %(company)s AND status = 'open' AND expires_at > %(now)s"""


def open_holds(company: Company, key: APIKey | None, now: datetime) -> tuple[Decimal, Decimal]:
    """The company's open, unexpired holds, and the key's among them, in one query."""
    params = {"company": company.pk, "key": key.pk if key else None, "now": now}
    with connection.cursor() as cursor:
        cursor.execute(_HOLDS, params)
        return cursor.fetchone()


def key_spend(company: Company, key: APIKey, now: datetime) -> tuple[Decimal, Decimal]:
    """The key's spend today and this month (the company's days): at most 31 buckets of
    the exact per-key rollup (usage.models.KeyDailySpend)."""
    today = timezone.localtime(now, company.tz).date()
    totals = KeyDailySpend.objects.filter(
        api_key_id=key.pk, company_id=company.pk, day__gte=today.replace(day=1), day__lte=today
    ).aggregate(month=Sum("cost"), day=Sum("cost", filter=Q(day=today)))
    return totals["day"] or ZERO, totals["month"] or ZERO


@dataclass(frozen=True)
class KeyUse:
    """One key's limits and what it used of them, for the billing page."""

    name: str
    daily_limit: Decimal | None
    monthly_limit: Decimal | None
    day_spend: Decimal
    month_spend: Decimal
    held: Decimal


@dataclass(frozen=True)
class BudgetUse:
    held: Decimal  # the company's open holds
    holds: int
    keys: list[KeyUse]


_KEY_SPEND = f"""
SELECT s.api_key_id, COALESCE(SUM(s.cost) FILTER (WHERE s.day = %(today)s), 0),
       COALESCE(SUM(s.cost), 0)
  FROM {KeyDailySpend._meta.db_table} s
 WHERE s.company_id = %(company)s AND s.day BETWEEN %(first)s AND %(today)s
 GROUP BY s.api_key_id"""
_HOLDS_BY_KEY = f"""
SELECT api_key_id, COUNT(*), SUM(amount) FROM {Reservation._meta.db_table}
 WHERE company_id = %(company)s AND status = 'open' AND expires_at > %(now)s
 GROUP BY api_key_id"""


def budget_use(company: Company, now: datetime | None = None) -> BudgetUse:
    """The company's open holds and each active key's limits and use: three queries
    whatever the number of keys (the keys, their spend, the holds)."""
    now = now or timezone.now()
    today = timezone.localtime(now, company.tz).date()
    keys = list(
        APIKey.objects.filter(company=company, revoked_at__isnull=True)
        .order_by("name", "pk")
        .only("pk", "name", "daily_limit", "monthly_limit")
    )
    params = {"company": company.pk, "now": now, "today": today, "first": today.replace(day=1)}
    with connection.cursor() as cursor:
        cursor.execute(_HOLDS_BY_KEY, params)
        holds = {key: (n, total) for key, n, total in cursor.fetchall()}
        spend = {}
        if keys:
            cursor.execute(_KEY_SPEND, params)
            spend = {key: (day, month) for key, day, month in cursor.fetchall()}
    uses = [
        KeyUse(
            name=k.name,
            daily_limit=k.daily_limit,
            monthly_limit=k.monthly_limit,
            day_spend=spend.get(k.pk, (ZERO, ZERO))[0],
            month_spend=spend.get(k.pk, (ZERO, ZERO))[1],
            held=holds.get(k.pk, (0, ZERO))[1],
        )
        for k in keys
    ]
    return BudgetUse(
        held=sum((total for _, total in holds.values()), ZERO),
        holds=sum(n for n, _ in holds.values()),
        keys=uses,
    )
