"""Which saved job a draft key belongs to: the one rule of usage.jobs, in Python and in SQL.

Every case is checked against the Python rule (JobIndex.for_draft), the SQL rule
(saved_job_sql) and the paths that use them: recording, saving a job, the nightly
reconciliation and the admin's "job saved, not yet linked" filter.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from tests.conftest import make_company, make_event
from usage.admin import _with_saved_job
from usage.errors import CrossTenantJob
from usage.jobs import job_index, link_drafts, saved_job_sql
from usage.models import Job, QuestionGenerationUsage
from usage.reconcile import reconcile_drafts
from usage.recording import record_usage

pytestmark = pytest.mark.django_db

IDS = {name: uuid.uuid4() for name in ("j1", "j2", "j3", "j4", "j5")}


def _world():
    """Jobs of a new company C (and one of another company), created without linking."""
    return _world_for(make_company())


def _world_for(company):
    """Jobs of company C, one of another company, created without linking drafts (as if
    the save call was lost); a draft id that spells another job's own id included."""
    other = make_company()
    jobs = {
        "j1": Job.objects.create(id=IDS["j1"], company=company, title="1", draft_id="tmp-1"),
        "j2": Job.objects.create(id=IDS["j2"], company=company, title="2"),
        "j3": Job.objects.create(id=IDS["j3"], company=other, title="3", draft_id="tmp-3"),
        "j4": Job.objects.create(id=IDS["j4"], company=company, title="4", draft_id=str(IDS["j5"])),
        "j5": Job.objects.create(id=IDS["j5"], company=company, title="5"),
    }
    return company, jobs


# (draft key of company C, the job it belongs to)
CASES = [
    ("tmp-1", "j1"),  # the job's draft id
    (str(IDS["j1"]), "j1"),  # the job's own id
    (str(IDS["j2"]), "j2"),
    (str(IDS["j2"]).upper(), None),  # not canonical text: no job's id::text
    ("tmp-3", None),  # a draft id of another company's job
    (str(IDS["j3"]), None),  # another company's job id
    (str(IDS["j5"]), "j5"),  # own id of j5 beats j4's draft id
    ("unknown", None),
]


def _sql_rule(company, key):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {saved_job_sql('%(company)s::uuid', '%(key)s::text')}",
            {"company": company.pk, "key": key},
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize(("key", "expected"), CASES)
def test_python_and_sql_give_a_draft_key_the_same_job(key, expected):
    company, jobs = _world()
    want = jobs[expected].pk if expected else None
    python = job_index([(company.pk, None, key)]).for_draft(company.pk, key)
    assert (python.pk if python else None) == want
    assert _sql_rule(company, key) == want


def test_reconcile_links_each_draft_key_by_the_rule():
    company = make_company()
    rows = {key: record_usage(make_event(company, draft_job_id=key)).usage for key, _ in CASES}
    company, jobs = _world_for(company)
    assert reconcile_drafts().reconciled_rows == sum(1 for _, job in CASES if job)
    for key, expected in CASES:
        row = QuestionGenerationUsage.objects.get(pk=rows[key].pk)
        assert row.job_id == (jobs[expected].pk if expected else None), key


def test_the_admin_filter_finds_exactly_the_drafts_the_rule_links():
    company = make_company()
    rows = {key: record_usage(make_event(company, draft_job_id=key)).usage for key, _ in CASES}
    company, jobs = _world_for(company)
    found = set(_with_saved_job(QuestionGenerationUsage.objects.filter(job__isnull=True)))
    assert {r.draft_job_id for r in found} == {key for key, job in CASES if job}
    assert all(rows[r.draft_job_id].pk == r.pk for r in found)


def test_saving_a_job_links_only_the_drafts_that_belong_to_it():
    company = make_company()
    rows = {key: record_usage(make_event(company, draft_job_id=key)).usage for key, _ in CASES}
    company, jobs = _world_for(company)
    linked = link_drafts(company=company, job=jobs["j4"])  # draft id = j5's own id
    assert linked == 0
    assert QuestionGenerationUsage.objects.get(pk=rows[str(IDS["j5"])].pk).job_id is None
    assert link_drafts(company=company, job=jobs["j5"]) == 1
    assert QuestionGenerationUsage.objects.get(pk=rows[str(IDS["j5"])].pk).job_id == IDS["j5"]


@pytest.mark.parametrize(("key", "expected"), CASES)
def test_recording_under_a_draft_key_links_by_the_same_rule(key, expected):
    company, jobs = _world()
    usage = record_usage(make_event(company, draft_job_id=key)).usage
    assert usage.job_id == (jobs[expected].pk if expected else None)
    assert usage.status == ("linked" if expected else "draft")


def test_a_job_id_is_a_saved_job_in_any_spelling_and_never_another_company_s():
    company, jobs = _world()
    upper = record_usage(make_event(company, job_id=str(IDS["j2"]).upper())).usage
    assert upper.job_id == IDS["j2"]
    with pytest.raises(CrossTenantJob):
        record_usage(make_event(company, job_id=str(IDS["j3"])))


def test_a_not_yet_saved_job_id_is_kept_as_its_canonical_draft_key():
    company = make_company()
    job_id = uuid.uuid4()
    usage = record_usage(make_event(company, job_id=str(job_id).upper())).usage
    assert (usage.job_id, usage.draft_job_id) == (None, str(job_id))
    job = Job.objects.create(id=job_id, company=company, title="later")
    assert link_drafts(company=company, job=job) == 1
