"""The console's permission model, in one place.

Every console page acts on one federation, named by slug in its URL, and
asks `federation_access(user, slug)` first:

- a slug that names no federation is `FederationNotFound` (404);
- a federation the user is not a member of is `NotAMember` (403);
  superusers are members of every federation with every capability;
- a page that needs a capability the member's role lacks raises
  `RoleForbids` (403) through `Access.require`.

Objects inside a federation (generations, clients, reports) are always
looked up *through* the federation, so an id from another federation is a
404 on this one's URL, whatever the caller may see elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.models import Federation

from .models import ALL_CAPABILITIES, ROLE_CAPABILITIES, Membership


class ConsoleError(Exception):
    """A console request that cannot be served; `status` is the HTTP answer, the message is shown."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FederationNotFound(ConsoleError):
    status = 404


class ObjectNotFound(ConsoleError):
    status = 404


class NotAMember(ConsoleError):
    status = 403


class RoleForbids(ConsoleError):
    status = 403


CAPABILITY_WORDS = {
    "view_generations": "read generations (prompts, responses and their token attributions)",
    "build_reports": "build audit reports",
    "view_payouts": "see payout exports",
}


@dataclass(frozen=True)
class Access:
    """What one user may do in one federation."""

    federation: Federation
    role: str  # a Membership role, or "superuser"
    capabilities: frozenset[str]

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, capability: str) -> None:
        if not self.can(capability):
            raise RoleForbids(
                f"the {self.role} role may not {CAPABILITY_WORDS[capability]} in federation {self.federation.slug!r}"
            )


def visible_federations(user) -> list[Access]:
    """Every federation the user may open, by slug."""
    if user.is_superuser:
        return [_superuser_access(f) for f in Federation.objects.order_by("slug")]
    memberships = Membership.objects.filter(user=user).select_related("federation").order_by("federation__slug")
    return [_member_access(m) for m in memberships]


def federation_access(user, slug: str) -> Access:
    federation = Federation.objects.filter(slug=slug).first()
    if federation is None:
        raise FederationNotFound(f"there is no federation {slug!r}")
    if user.is_superuser:
        return _superuser_access(federation)
    membership = Membership.objects.filter(user=user, federation=federation).first()
    if membership is None:
        raise NotAMember(f"you are not a member of federation {slug!r}; ask its operator for access")
    return _member_access(membership)


def _superuser_access(federation: Federation) -> Access:
    return Access(federation, "superuser", ALL_CAPABILITIES)


def _member_access(membership: Membership) -> Access:
    return Access(membership.federation, membership.role, ROLE_CAPABILITIES[membership.role])
