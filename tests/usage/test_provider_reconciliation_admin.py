"""The admin's reconciliation page: the cron's figures, and a drill-down to our rows."""

from __future__ import annotations

import html
import io
import json
import re

import pytest
from django.core.management import CommandError, call_command

from tests.usage.provider_world import (
    NOV3,
    NOV4,
    NOV5,
    OPENAI_MAP,
    import_anthropic,
    import_openai,
    record_anthropic_usage,
    record_openai_usage,
)

pytestmark = pytest.mark.django_db
PAGE = "/admin/usage/providerbucket/reconciliation/"
DAYS = "since=2026-11-03&until=2026-11-05"


@pytest.fixture
def world():
    rows = record_openai_usage() | record_anthropic_usage()
    import_openai(project_map=str(OPENAI_MAP))
    import_anthropic()
    return rows


def cron(provider: str) -> dict:
    out = io.StringIO()
    with pytest.raises(CommandError):  # both samples have gaps: exit status 1
        call_command(
            "reconcile_provider", "--provider", provider, "--since", "2026-11-03",
            "--until", "2026-11-05", "--json", stdout=out,
        )  # fmt: skip
    return json.loads(out.getvalue())["reports"][0]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_page_shows_the_cron_s_figures(staff_client, world, provider):
    response = staff_client.get(f"{PAGE}?provider={provider}&{DAYS}")
    assert response.status_code == 200
    assert response.context["report"].as_json() == cron(provider)


def test_the_page_marks_each_line_and_totals_the_loss(staff_client, world):
    body = staff_client.get(f"{PAGE}?provider=openai&{DAYS}").content.decode()
    assert body.count('class="recon-status matches"') == 4
    assert body.count('class="recon-status we_recorded_less"') == 1
    assert body.count('class="recon-status we_recorded_more"') == 1
    assert "+24,000" in body and "+3,000" in body and "~2 generations" in body
    assert 'data-amount="0.08">$0.08<' in body  # lost, at our prices
    assert "826,750 tokens of other projects left out" in body
    only_gaps = staff_client.get(f"{PAGE}?provider=openai&{DAYS}&gaps=on")
    assert [row["line"].status for row in only_gaps.context["rows"]] == [
        "we_recorded_less",
        "we_recorded_more",
    ]


def _links(body: str) -> list[str]:
    return [
        html.unescape(u) for u in re.findall(r'href="(/admin/usage/questiongeneration[^"]+)"', body)
    ]


def test_a_mismatched_day_and_model_drills_down_to_our_rows(staff_client, world):
    response = staff_client.get(f"{PAGE}?provider=openai&{DAYS}&gaps=on")
    less, more = [row["drill_down"] for row in response.context["rows"]]
    assert less in _links(response.content.decode())
    assert less.endswith("?utc_day=2026-11-04&model=gpt-4o")
    listed = staff_client.get(less).context["cl"].result_list
    # Includes the Tokyo company's row at 23:30 UTC (already the 5th in Tokyo).
    assert sorted(u.pk for u in listed) == sorted(world[(NOV4, "gpt-4o")])
    listed = staff_client.get(more).context["cl"].result_list
    assert sorted(u.pk for u in listed) == sorted(world[(NOV5, "gpt-4o-mini")])


def test_a_line_of_several_of_our_names_drills_down_to_all_of_them(staff_client, world):
    response = staff_client.get(f"{PAGE}?provider=openai&{DAYS}")
    first = response.context["rows"][0]["drill_down"]
    assert first.endswith("utc_day=2026-11-03&model__in=gpt-4o%2Cgpt-4o-2024-08-06")
    listed = staff_client.get(first).context["cl"].result_list
    expected = world[(NOV3, "gpt-4o")] + world[(NOV3, "gpt-4o-2024-08-06")]
    assert sorted(u.pk for u in listed) == sorted(expected)


def test_the_page_reads_in_a_few_queries(staff_client, world, django_assert_max_num_queries):
    with django_assert_max_num_queries(14):
        assert staff_client.get(f"{PAGE}?provider=anthropic&{DAYS}").status_code == 200


def test_without_imports_the_page_says_what_to_run(staff_client):
    body = staff_client.get(PAGE).content.decode()
    assert "manage.py import_provider_usage PATH --provider openai" in body


def test_wrong_choices_show_errors_not_a_500(staff_client, world):
    response = staff_client.get(f"{PAGE}?provider=gemini&since=2026-13-01&until=soon")
    assert response.status_code == 200
    assert "Some of the choices were not valid" in response.content.decode()
    backwards = staff_client.get(f"{PAGE}?since=2026-11-05&until=2026-11-03")
    assert "The last day is before the first." in backwards.content.decode()
    future = staff_client.get(f"{PAGE}?since=2099-01-01")  # after the default last day
    assert future.status_code == 200
    assert "The last day is before the first." in future.content.decode()
    ages = staff_client.get(f"{PAGE}?since=1990-01-01&until=2026-11-05")
    assert "days at once" in ages.content.decode()


def test_a_wrong_utc_day_on_the_usage_list_is_refused_cleanly(staff_client, world):
    response = staff_client.get("/admin/usage/questiongenerationusage/?utc_day=yesterday")
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_only_staff_with_the_view_permission_see_the_page(client, django_user_model, world):
    user = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(user)
    assert client.get(PAGE).status_code == 403
    client.logout()
    assert client.get(PAGE).status_code == 302  # to the admin's login


IMPORT = "/admin/usage/providerbucket/import/"


def upload(*paths, **fields) -> dict:
    return {"pages": [open(p, "rb") for p in paths], **fields}  # noqa: SIM115 - the client reads them


def test_staff_upload_a_month_of_pages_and_land_on_its_reconciliation(staff_client):
    from tests.usage.provider_world import OPENAI_COSTS, OPENAI_USAGE
    from usage.models import ProviderBucket, ProviderProjectMap

    record_openai_usage()
    data = upload(
        *OPENAI_USAGE, OPENAI_COSTS, provider="openai", project_map=open(OPENAI_MAP, "rb")
    )  # noqa: SIM115
    response = staff_client.post(IMPORT, data, follow=True)
    assert response.redirect_chain[-1][0].endswith(
        "reconciliation/?provider=openai&since=2026-11-03&until=2026-11-05"
    )
    body = response.content.decode()
    assert "Imported 6 daily buckets of openai (3 usage, 3 cost) from 3 files: 6 new" in body
    assert response.context["report"].as_json() == cron("openai")
    assert ProviderBucket.objects.count() == 6
    assert ProviderProjectMap.objects.get(provider="openai").exclude == ["proj_helpdesk"]
    again = staff_client.post(IMPORT, upload(*OPENAI_USAGE, provider="openai"), follow=True)
    assert "0 new, 3 unchanged, 0 replaced" in again.content.decode()


def test_a_broken_upload_is_named_on_the_form_and_nothing_is_stored(staff_client, tmp_path):
    from tests.usage.provider_world import OPENAI_USAGE
    from usage.models import ProviderBucket

    broken = tmp_path / "november.json"
    broken.write_text('{"object": "page", "data": [{"start_time": 1793664000}]}')
    response = staff_client.post(IMPORT, upload(OPENAI_USAGE[0], broken, provider="openai"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "november.json: data[0]: `end_time` must be Unix seconds" in body
    assert "provider-pages-" not in body  # the temporary copy is not named
    assert not ProviderBucket.objects.exists()
    dry = staff_client.post(
        IMPORT, upload(OPENAI_USAGE[0], provider="openai", dry_run="on"), follow=True
    )
    assert "Dry run, nothing stored: would import 2 daily buckets" in dry.content.decode()
    assert not ProviderBucket.objects.exists()


def test_only_staff_who_may_add_buckets_upload(client, django_user_model):
    user = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(user)
    assert client.get(IMPORT).status_code == 403
