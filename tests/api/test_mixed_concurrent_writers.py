"""Mixed concurrent writers (batches, single posts, job saves) keep balance == sum(ledger),
the balance_after chain and the rollup."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest
from django.db.models import Count, Sum

from billing.models import CreditBalance, LedgerEntry
from tests.api.conftest import api_client_for, usage_payload
from tests.api.test_concurrency import _in_threads
from tests.conftest import give_credit, make_company, make_price
from usage.models import QuestionGenerationUsage, UsageDailyRollup


def assert_books_balance() -> None:
    for balance in CreditBalance.objects.all():
        entries = list(LedgerEntry.objects.filter(company_id=balance.company_id).order_by("id"))
        assert balance.balance == sum((e.amount for e in entries), Decimal(0))
        running = Decimal(0)
        for entry in entries:  # each entry's balance_after follows the one before it
            running += entry.amount
            assert entry.balance_after == running
    raw = defaultdict(lambda: [0, Decimal(0)])
    for row in QuestionGenerationUsage.objects.values(
        "company_id", "occurred_on", "model", "status"
    ).annotate(n=Count("id"), cost=Sum("cost")):
        key = (row["company_id"], row["occurred_on"], row["model"], row["status"])
        raw[key] = [row["n"], row["cost"] or Decimal(0)]
    rolled = {
        (r.company_id, r.day, r.model, r.status): [r.generations, r.cost]
        for r in UsageDailyRollup.objects.all()
        if r.generations
    }
    assert rolled == dict(raw)


@pytest.mark.django_db(transaction=True)
def test_batches_singles_and_job_saves_of_two_companies_at_once():
    companies = [make_company(), make_company()]
    make_price()
    for company in companies:
        give_credit(company, "10")
    api = api_client_for()
    events = [
        usage_payload(c, idempotency_key=f"k{i}", draft_job_id=f"d{i % 5}", cost=f"0.{i:03d}")
        for i in range(40)
        for c in companies
    ]

    def work(i: int):
        if i < 4:  # batches over both companies, in opposite orders
            ordered = events if i % 2 else list(reversed(events))
            return api.post("/usage/batch", {"events": ordered}).status_code
        if i < 8:  # single events racing the batches
            return [api.post("/usage", e).status_code for e in events[i::7]]
        company = companies[i % 2]  # saving the jobs links drafts meanwhile
        return [
            api.post(
                "/jobs", {"company": str(company.pk), "title": "t", "draft_job_id": f"d{n}"}
            ).status_code
            for n in range(5)
        ]

    results = _in_threads(10, work)

    assert results[:4] == [200] * 4
    assert QuestionGenerationUsage.objects.count() == 80
    assert LedgerEntry.objects.filter(kind="usage").count() == 80
    assert_books_balance()


@pytest.mark.django_db(transaction=True)
def test_draft_usage_racing_the_save_of_its_job_is_linked():
    # The usage looked its job up before its transaction, and saving the job linked only
    # drafts already committed: a draft recorded while its job was being saved stayed a
    # draft although the job existed (dozens of rows in a run of this test).
    company = make_company()
    make_price()
    api = api_client_for()
    drafts = 60

    def work(i: int):
        if i == 0:
            for k in range(drafts):
                body = {"company": str(company.pk), "title": "t", "draft_job_id": f"d{k}"}
                assert api.post("/jobs", body).status_code == 201
            return
        for k in range(drafts):
            payload = usage_payload(company, idempotency_key=f"{i}-{k}", draft_job_id=f"d{k}")
            if i == 3:  # one writer sends batches of one, the set-based path
                response = api.post("/usage/batch", {"events": [payload]})
                assert response.json()["results"][0]["status"] == 201
            else:
                assert api.post("/usage", payload).status_code == 201

    _in_threads(4, work)

    assert QuestionGenerationUsage.objects.count() == 3 * drafts
    assert not QuestionGenerationUsage.objects.filter(job__isnull=True).exists()
    assert_books_balance()


@pytest.mark.django_db(transaction=True)
def test_batches_mixing_saved_jobs_and_drafts_racing_their_saves_end_linked():
    # Batches take draft locks only for their events left without a job, and look
    # those up again under the locks; events naming saved jobs take none. A batch
    # mixing both, racing the save of its drafts' jobs, must still leave nothing
    # pending whose job exists.
    company = make_company()
    make_price()
    api = api_client_for()
    saved = api.post("/jobs", {"company": str(company.pk), "title": "saved"}).json()["id"]
    drafts = 40

    def work(i: int):
        if i == 0:
            for k in range(drafts):
                body = {"company": str(company.pk), "title": "t", "draft_job_id": f"d{k}"}
                assert api.post("/jobs", body).status_code == 201
            return
        for k in range(0, drafts, 4):
            events = [
                usage_payload(company, idempotency_key=f"{i}-{k + j}", draft_job_id=f"d{k + j}")
                for j in range(4)
            ] + [usage_payload(company, idempotency_key=f"{i}-{k}-saved", job_id=saved)]
            results = api.post("/usage/batch", {"events": events}).json()["results"]
            assert [r["status"] for r in results] == [201] * 5

    _in_threads(4, work)

    assert QuestionGenerationUsage.objects.count() == 3 * (drafts + drafts // 4)
    assert not QuestionGenerationUsage.objects.filter(job__isnull=True).exists()
    assert QuestionGenerationUsage.objects.filter(job_id=saved).count() == 3 * drafts // 4
    assert_books_balance()
