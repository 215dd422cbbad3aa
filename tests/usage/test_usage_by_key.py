"""The usage tab filters and groups by API key, by its name and never by its secret."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.api_keys import create_api_key
from tests.conftest import give_credit, make_company, make_usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def keyed(price):
    company = make_company()
    give_credit(company, "100")
    ci, ci_secret = create_api_key(name="CI pipeline", company=company)
    prod, _ = create_api_key(name="Main product", company=company)
    make_usage(company, cost="1", api_key=ci)
    make_usage(company, cost="2", api_key=prod)
    make_usage(company, cost="3", api_key=prod)
    make_usage(company, cost="4")  # imported: no key
    return company, ci, prod, ci_secret


def test_grouped_by_key_each_key_shows_its_name_and_spend(staff_client, keyed):
    company, ci, prod, secret = keyed
    url = reverse("billing:company", args=[company.pk])
    response = staff_client.get(url, {"tab": "usage", "group": "key"})
    rows = {row["api_key__name"]: row["cost"] for row in response.context["rows"]}
    assert rows == {"Main product": 5, "CI pipeline": 1, None: 4}
    html = response.content.decode()
    assert "CI pipeline" in html and "No key (imported)" in html
    assert ci.prefix not in html and secret not in html


def test_filtered_by_key_the_totals_table_and_csv_are_that_keys(staff_client, keyed):
    company, ci, prod, secret = keyed
    url = reverse("billing:company", args=[company.pk])
    for group in ("day", "model", "generation"):
        response = staff_client.get(url, {"tab": "usage", "group": group, "key": prod.pk})
        assert response.context["totals"].cost == 5, group
        assert response.context["totals"].generations == 2
    html = response.content.decode()
    assert f'<option value="{prod.pk}" selected>Main product</option>' in html
    csv = staff_client.get(
        url, {"tab": "usage", "group": "generation", "key": ci.pk, "format": "csv"}
    )
    lines = b"".join(csv.streaming_content).decode().splitlines()
    assert len(lines) == 2 and lines[1].endswith(",1.00")
    by_key = staff_client.get(url, {"tab": "usage", "group": "key", "format": "csv"})
    text = b"".join(by_key.streaming_content).decode()
    assert text.splitlines()[0].startswith("api_key,generations")
    assert "Main product" in text and ci.prefix not in text


def test_another_companys_key_is_no_filter_choice(staff_client, keyed):
    company, *_ = keyed
    other = make_company()
    stranger, _ = create_api_key(name="Stranger", company=other)
    url = reverse("billing:company", args=[company.pk])
    response = staff_client.get(url, {"tab": "usage", "key": stranger.pk})
    assert "Stranger" not in response.content.decode()
    assert response.context["form"].errors  # refused, this month unfiltered instead
    assert response.context["totals"].cost == 10
