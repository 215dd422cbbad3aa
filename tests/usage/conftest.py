"""Fixtures for the billing page tests: company members and a logged-in client."""

from __future__ import annotations

import pytest

from billing.members import add_member


@pytest.fixture
def member_client(client, company):
    """A client logged in as an admin of `company` (not staff)."""
    membership = add_member(company=company, username="owner", password="pw-owner-123").membership
    client.force_login(membership.user)
    return client
