"""Who is calling, and what they may see: API tokens (Bearer) and console sessions.

Both authenticators return a `Caller`: the federations it may see, each with
its scopes. A token grants exactly one federation; a console user gets their
`Membership` rows, and a superuser every federation with every scope. Every
endpoint asks the caller for the federation it acts on *with a scope*
(`Caller.federation(scope, slug)`), so scoping happens in one place:

- a federation the caller cannot see is `unknown_federation` (404), the same
  answer as one that does not exist, so ids cannot be probed;
- a federation it can see but without the scope is `missing_scope` (403).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth
from registry.errors import Forbidden, InvalidInput, NotFound
from registry.models import SCOPES, ApiToken, Federation, Membership
from registry.services import token_authenticate


@dataclass(frozen=True)
class Caller:
    grants: dict[int, frozenset[str]]  # federation id -> scopes
    token: ApiToken | None = None
    user_id: int | None = None
    federations: dict[int, Federation] = field(default_factory=dict)

    def federation_ids(self, scope: str) -> list[int]:
        return [fid for fid, scopes in self.grants.items() if scope in scopes]

    def federation(self, scope: str, slug: str | None = None) -> Federation:
        """The one federation this request acts on, checked for `scope`."""
        if slug is not None:
            found = [f for f in self.federations.values() if f.slug == slug]
            if not found:
                raise NotFound("unknown_federation", f"no federation {slug!r}", field="federation")
            return self._with_scope(found[0], scope)
        if len(self.federations) != 1:
            raise InvalidInput(
                "federation_required",
                "this account can see several federations: name one with ?federation=<slug>",
                field="federation",
            )
        return self._with_scope(next(iter(self.federations.values())), scope)

    def _with_scope(self, federation: Federation, scope: str) -> Federation:
        if scope not in self.grants.get(federation.pk, frozenset()):
            who = "this token" if self.token is not None else "this account"
            raise Forbidden("missing_scope", f"{who} lacks the {scope!r} scope on federation {federation.slug!r}")
        return federation


def caller_for_token(token: ApiToken) -> Caller:
    return Caller(
        grants={token.federation_id: frozenset(token.scopes)},
        token=token,
        federations={token.federation_id: token.federation},
    )


def caller_for_user(user) -> Caller | None:
    if not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        federations = {f.pk: f for f in Federation.objects.all()}
        return Caller({fid: frozenset(SCOPES) for fid in federations}, user_id=user.pk, federations=federations)
    memberships = Membership.objects.filter(user=user).select_related("federation")
    return Caller(
        {m.federation_id: frozenset(m.scopes) for m in memberships},
        user_id=user.pk,
        federations={m.federation_id: m.federation for m in memberships},
    )


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Caller | None:
        api_token = token_authenticate(secret=token)
        return caller_for_token(api_token) if api_token is not None else None


class ConsoleSessionAuth(SessionAuth):
    """Django session login (the console); CSRF is checked on unsafe methods.

    Without a session cookie it steps aside before the CSRF check, so a request
    with a bad Bearer token gets 401 `unauthenticated`, not a CSRF failure.
    """

    def __call__(self, request: HttpRequest) -> Caller | None:
        if self.param_name not in request.COOKIES:
            return None
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Caller | None:
        return caller_for_user(request.user)
