"""Low-balance and monthly-spend alerts: one email per crossing, recorded."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core import mail

from billing.alerts import evaluate_alerts
from billing.api_keys import create_api_key
from billing.models import BillingAlert
from tests.billing.conftest import grant
from tests.conftest import make_company, make_usage

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def alerted(db):
    return make_company(
        billing_emails="ap@acme.example, cfo@acme.example", low_balance_threshold=D(10)
    )


def test_falling_below_the_threshold_mails_once_and_rearms_on_top_up(
    alerted, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        grant(alerted, "12")
        make_usage(alerted, cost="1")  # 11: still above
        make_usage(alerted, cost="2")  # 9: crosses
        make_usage(alerted, cost="2")  # 7: already below, no second mail
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ap@acme.example", "cfo@acme.example"]
    assert "balance is low" in mail.outbox[0].subject
    alert = BillingAlert.objects.get()
    assert (alert.kind, alert.balance, alert.threshold) == ("low_balance", D(9), D(10))
    assert alert.emailed_at is not None
    with django_capture_on_commit_callbacks(execute=True):
        grant(alerted, "10")  # 17: back above, re-armed
        make_usage(alerted, cost="8")  # 9: crosses again
    assert len(mail.outbox) == 2
    assert BillingAlert.objects.filter(kind="low_balance").count() == 2
    assert BillingAlert.objects.filter(rearmed_at__isnull=True).count() == 1


def test_spend_crossing_80_and_100_percent_mails_once_each(
    alerted, django_capture_on_commit_callbacks
):
    alerted.monthly_spend_limit = D(10)
    alerted.low_balance_threshold = D(0)
    alerted.save()
    with django_capture_on_commit_callbacks(execute=True):
        grant(alerted, "100")
        make_usage(alerted, cost="7")
        make_usage(alerted, cost="1.5")  # 8.5: crosses 80%
        make_usage(alerted, cost="0.5")  # 9
        make_usage(alerted, cost="1.5")  # 10.5: crosses 100%
        make_usage(alerted, cost="1")
    kinds = list(BillingAlert.objects.order_by("created_at").values_list("kind", "period"))
    assert [k for k, _ in kinds] == ["spend_80", "spend_100"]
    assert len(mail.outbox) == 2 and "100%" in mail.outbox[1].subject


def test_nothing_crossed_costs_no_query(alerted, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert evaluate_alerts(company=alerted, balance_before=D(50), balance_after=D(40)) == []
        evaluate_alerts(company=alerted, balance_before=D(5), balance_after=D(4))


def test_an_alert_is_recorded_even_without_billing_contacts(
    company, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        grant(company, "12")
        make_usage(company, cost="5")
    assert BillingAlert.objects.get().recipients == "" and mail.outbox == []


def test_a_keys_daily_and_monthly_limits_alert_once_each_beside_the_companys(
    alerted, django_capture_on_commit_callbacks
):
    alerted.monthly_spend_limit = D(100)
    alerted.low_balance_threshold = D(0)
    alerted.save()
    key, _ = create_api_key(name="integration", company=alerted, daily_limit="2", monthly_limit="4")
    other, _ = create_api_key(name="other", company=alerted, daily_limit="2")
    with django_capture_on_commit_callbacks(execute=True):
        grant(alerted, "100")
        make_usage(alerted, cost="1.7", api_key=key)  # day 85%, month 42.5%
        make_usage(alerted, cost="0.2", api_key=key)  # nothing new crossed
        make_usage(alerted, cost="1.5", api_key=key)  # day 170%, month 85%
        make_usage(alerted, cost="1", api_key=other)  # the other key: 50%
        make_usage(alerted, cost="1")  # no key
    alerts = BillingAlert.objects.order_by("created_at")
    got = [(a.api_key.name, a.kind, len(a.period), a.threshold) for a in alerts]
    assert got == [
        ("integration", "spend_80", 10, D("1.6")),
        ("integration", "spend_100", 10, D("2")),
        ("integration", "spend_80", 7, D("3.2")),
    ]
    assert len(mail.outbox) == 3
    assert "API key integration: 100% of its daily limit" in mail.outbox[1].subject
    assert "limit of $2.00" in mail.outbox[1].body
