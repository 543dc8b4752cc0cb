"""API tokens: stored hashed, shown once, scoped, revocable, with a last-used time."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from registry.models import ApiToken
from registry.services import token_authenticate, token_issue, token_revoke

pytestmark = pytest.mark.django_db


def test_it_stores_only_the_hash_of_the_secret(federation):
    token, secret = token_issue(federation=federation, name="recorder", scopes=["ingest"])
    row = ApiToken.objects.get(pk=token.pk)
    assert row.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {row.digest, row.prefix, row.name}
    assert secret.startswith(row.prefix) and len(row.prefix) == 12
    assert len(secret) > 40


def test_it_records_last_use(federation, make_api):
    token, secret = token_issue(federation=federation, name="t", scopes=["read"])
    assert token.last_used_at is None
    assert make_api(secret).get("/clients").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_it_stops_accepting_a_revoked_token(federation, make_api):
    token, secret = token_issue(federation=federation, name="t", scopes=["read"])
    token_revoke(token=token)
    assert token_authenticate(secret=secret) is None
    response = make_api(secret).get("/clients")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


@pytest.mark.parametrize("scopes", [[], ["admin"], ["read", "write"]])
def test_it_refuses_unknown_scopes(federation, scopes):
    from registry.errors import InvalidInput

    with pytest.raises(InvalidInput, match="scopes must be a non-empty subset of ingest, generate, read"):
        token_issue(federation=federation, name="t", scopes=scopes)


def test_it_issues_and_revokes_from_the_command_line(federation):
    out, err = StringIO(), StringIO()
    call_command("issue_token", "fed-a", "--scopes", "ingest,read", "--name", "cli", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    token = token_authenticate(secret=secret)
    assert token is not None and token.scopes == ["ingest", "read"]
    call_command("issue_token", "fed-a", "--revoke", secret[:12], stdout=StringIO())
    assert token_authenticate(secret=secret) is None


def test_it_reports_an_unknown_federation_on_the_command_line(db):
    with pytest.raises(CommandError, match="unknown_federation: no federation 'nope'"):
        call_command("issue_token", "nope", stdout=StringIO(), stderr=StringIO())
