"""Who may see a company's billing page: adding members."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from billing.audit import record_audit
from billing.models import Company, Membership
from core.errors import InvalidInput


@dataclass(frozen=True)
class MemberResult:
    membership: Membership
    user_created: bool
    created: bool
    role_changed: bool


def add_member(
    *,
    company: Company,
    username: str,
    role: str = Membership.Role.ADMIN,
    password: str | None = None,
    email: str = "",
    actor=None,
    actor_label: str = "",
) -> MemberResult:
    """Make `username` an admin or viewer of `company`, creating the user if needed.

    Idempotent: adding an existing member again changes nothing (or only the
    role). A password is set only on a user created here; existing users keep
    theirs. Members are never staff: they see only their company's page.
    """
    if role not in Membership.Role.values:
        raise InvalidInput(f"Unknown role {role!r}.", fields={"role": "must be admin or viewer"})
    if not username.strip():
        raise InvalidInput("A username is required.", fields={"username": "is required"})
    user_model = get_user_model()
    with transaction.atomic():
        user, user_created = user_model.objects.get_or_create(
            username=username, defaults={"email": email}
        )
        if user_created:
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save(update_fields=["password"])
        membership, created = Membership.objects.get_or_create(
            user=user, company=company, defaults={"role": role}
        )
        role_changed = not created and membership.role != role
        if role_changed:
            membership.role = role
            membership.save(update_fields=["role"])
        if created or role_changed:
            record_audit(
                action="member.add" if created else "member.role",
                actor=actor,
                actor_label=actor_label,
                company=company,
                obj=membership,
                after={"username": username, "role": role, "user_created": user_created},
            )
    return MemberResult(membership, user_created, created, role_changed)
