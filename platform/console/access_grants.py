"""Granting a person access to a federation: one call keeps the console role and the API session scopes in step.

Two tables hold a user's access: `console.Membership` (the console role:
operator, auditor, finance) and `registry.Membership` (the scopes the same
session has on the JSON API). An operator grants both at once here, so a
user can never see a federation in the console and be refused it by the API
(or the reverse). Revoking deletes both rows.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from registry.errors import InvalidInput, NotFound
from registry.models import Federation
from registry.models import Membership as ApiMembership

from .models import Membership, Role

# What a role may do through the API with its browser session.
ROLE_SCOPES: dict[str, list[str]] = {
    Role.OPERATOR: ["ingest", "generate", "read"],
    Role.AUDITOR: ["read"],
    Role.FINANCE: ["read"],
}


def access_grant(*, username: str, federation: Federation, role: str) -> Membership:
    """Give `username` the console `role` on `federation` and the matching API scopes (idempotent)."""
    if role not in ROLE_SCOPES:
        raise InvalidInput("invalid_role", f"role must be one of {', '.join(ROLE_SCOPES)}; got {role!r}", field="role")
    user = _user(username)
    with transaction.atomic():
        membership, _ = Membership.objects.update_or_create(user=user, federation=federation, defaults={"role": role})
        ApiMembership.objects.update_or_create(user=user, federation=federation,
                                               defaults={"scopes": ROLE_SCOPES[role]})
    return membership


def access_revoke(*, username: str, federation: Federation) -> int:
    """Remove every access of `username` to `federation`; returns the number of rows deleted."""
    user = _user(username)
    with transaction.atomic():
        console, _ = Membership.objects.filter(user=user, federation=federation).delete()
        api, _ = ApiMembership.objects.filter(user=user, federation=federation).delete()
    if console + api == 0:
        raise NotFound("unknown_membership", f"{username!r} has no access to {federation.slug!r}", field="username")
    return console + api


def _user(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound("unknown_user", f"no user {username!r} (create it with manage.py createsuperuser or the admin)",
                       field="username")
    return user
