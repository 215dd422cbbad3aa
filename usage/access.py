"""Tenant isolation for the billing pages: the one place that decides who sees what.

Every billing view gets its company from :func:`company_for`. Platform staff
(staff users allowed to view companies) see every company; anyone else sees
only the companies they hold a Membership of, and any other id is a 404, so
an outsider cannot even learn that the company exists.
"""

from __future__ import annotations

import uuid

from django.http import Http404

from billing.models import Company


def is_platform_staff(user) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm("billing.view_company"))


def visible_companies(user):
    """The companies this user may see (all of them for platform staff)."""
    if not user.is_authenticated or not user.is_active:
        return Company.objects.none()
    if is_platform_staff(user):
        return Company.objects.all()
    return Company.objects.filter(memberships__user=user)


def company_for(user, company_id: str | uuid.UUID) -> Company:
    """The company `company_id` if this user may see it; Http404 otherwise."""
    try:
        pk = uuid.UUID(str(company_id))
    except ValueError:
        raise Http404("No such company.")
    company = visible_companies(user).filter(pk=pk).first()
    if company is None:
        raise Http404("No such company.")
    return company
