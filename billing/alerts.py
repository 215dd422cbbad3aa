"""Alert emails to a company's billing contacts, once per crossing.

:func:`evaluate_alerts` is called after a posting moved the balance, with the
balance before and after (both known to the caller from the locked update), so
it costs no query unless a line was actually crossed. The BillingAlert row's
partial unique constraint makes "once" hold even when two debits race; the
email goes out on commit, so a rolled-back debit never mails anyone.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import APIKey, BillingAlert, Company
from billing.money import format_money

logger = logging.getLogger(__name__)

SPEND_LINES = ((BillingAlert.Kind.SPEND_80, Decimal("0.8")), (BillingAlert.Kind.SPEND_100, 1))


def evaluate_alerts(
    *,
    company: Company,
    balance_before: Decimal,
    balance_after: Decimal,
    month_to_date_spend: Decimal | None = None,
    now: datetime | None = None,
) -> list[BillingAlert]:
    """Raise the alerts whose line this balance move crossed; re-arm low balance.

    `month_to_date_spend` is the spend after the move (pass it only when the
    company has a monthly limit); the spend before is taken as that minus the
    amount the balance fell.
    """
    now = now or timezone.now()
    raised: list[BillingAlert] = []
    threshold = company.low_balance_threshold
    if balance_before >= threshold > balance_after:
        raised.append(
            _raise(company, BillingAlert.Kind.LOW_BALANCE, "", balance_after, threshold, None)
        )
    elif balance_before < threshold <= balance_after:
        BillingAlert.objects.filter(
            company=company, kind=BillingAlert.Kind.LOW_BALANCE, rearmed_at__isnull=True
        ).update(rearmed_at=now)
    limit = company.monthly_spend_limit
    if limit and month_to_date_spend is not None:
        spend_before = month_to_date_spend - max(balance_before - balance_after, Decimal(0))
        period = timezone.localtime(now, company.tz).strftime("%Y-%m")
        for kind, share in SPEND_LINES:
            line = limit * share
            if spend_before < line <= month_to_date_spend:
                raised.append(
                    _raise(company, kind, period, balance_after, line, month_to_date_spend)
                )
    return [alert for alert in raised if alert is not None]


def evaluate_key_alerts(
    *,
    company: Company,
    key: APIKey,
    day_spend: Decimal,
    month_spend: Decimal,
    added_today: Decimal,
    added_this_month: Decimal,
    balance: Decimal,
    now: datetime | None = None,
) -> list[BillingAlert]:
    """Raise the 80 % and 100 % alerts of the key's daily and monthly limits that this
    posting crossed. The spends are the key's after it; the `added_*` parts are what
    it added to them (the spend before is the difference)."""
    now = now or timezone.now()
    local = timezone.localtime(now, company.tz)
    lines = (
        (key.daily_limit, day_spend, added_today, local.strftime("%Y-%m-%d")),
        (key.monthly_limit, month_spend, added_this_month, local.strftime("%Y-%m")),
    )
    raised = []
    for limit, spend, added, period in lines:
        if not limit or not added:
            continue
        for kind, share in SPEND_LINES:
            line = limit * share
            if spend - added < line <= spend:
                raised.append(_raise(company, kind, period, balance, line, spend, key=key))
    return [alert for alert in raised if alert is not None]


def _raise(
    company: Company,
    kind: str,
    period: str,
    balance: Decimal,
    threshold: Decimal,
    spend: Decimal | None,
    *,
    key: APIKey | None = None,
) -> BillingAlert | None:
    """Record the alert unless this crossing already has one; mail it on commit."""
    recipients = company.billing_email_list
    try:
        with transaction.atomic():
            alert = BillingAlert.objects.create(
                company=company,
                api_key=key,
                kind=kind,
                period=period,
                balance=balance,
                threshold=threshold,
                month_to_date_spend=spend,
                recipients="\n".join(recipients),
            )
    except IntegrityError:
        return None  # another posting raised this crossing first
    if recipients:
        transaction.on_commit(lambda: _send(alert, company, recipients))
    return alert


def _send(alert: BillingAlert, company: Company, recipients: list[str]) -> None:
    subject, body = _message(alert, company)
    try:
        send_mail(subject, body, None, recipients)
    except Exception:  # the debit has committed; a mail failure must not surface there
        logger.exception("billing alert %s could not be mailed", alert.pk)
        return
    BillingAlert.objects.filter(pk=alert.pk).update(emailed_at=timezone.now())


def _message(alert: BillingAlert, company: Company) -> tuple[str, str]:
    money = lambda amount: format_money(amount, company.currency)  # noqa: E731
    if alert.kind == BillingAlert.Kind.LOW_BALANCE:
        subject = f"[{company.name}] Credit balance is low: {money(alert.balance)}"
        body = (
            f"The credit balance of {company.name} fell to {money(alert.balance)}, below the "
            f"low-balance threshold of {money(alert.threshold)}. Buy credits to keep "
            "generating questions without interruption."
        )
    elif alert.api_key_id is not None:
        share = "100%" if alert.kind == BillingAlert.Kind.SPEND_100 else "80%"
        span = "daily" if len(alert.period) > 7 else "monthly"
        limit = alert.threshold if share == "100%" else alert.threshold / Decimal("0.8")
        subject = f"[{company.name}] API key {alert.api_key.name}: {share} of its {span} limit"
        body = (
            f"The API key {alert.api_key.name!r} of {company.name} has spent "
            f"{money(alert.month_to_date_spend)} in {alert.period}, reaching {share} of its "
            f"{span} limit of {money(limit)}."
        )
    else:
        share = "100%" if alert.kind == BillingAlert.Kind.SPEND_100 else "80%"
        subject = f"[{company.name}] {share} of the monthly spend limit reached"
        body = (
            f"{company.name} has spent {money(alert.month_to_date_spend)} this month "
            f"({alert.period}), reaching {share} of its monthly limit of "
            f"{money(company.monthly_spend_limit)}."
        )
    return subject, body + f"\n\nBalance now: {money(alert.balance)}.\n"
