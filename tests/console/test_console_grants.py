"""`manage.py grant_access`: one command sets the console role and the API session scopes together."""

from __future__ import annotations

import pytest
from console.models import Membership
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse
from registry.models import Membership as ApiMembership

pytestmark = pytest.mark.django_db


@pytest.fixture
def dana(db):
    return get_user_model().objects.create_user("dana", password="pw-dana-123")


def test_it_grants_console_and_api_access_together(dana, fed_a, client):
    call_command("grant_access", "dana", "fed-a", "--role", "auditor")
    assert Membership.objects.get(user=dana, federation=fed_a).role == "auditor"
    assert ApiMembership.objects.get(user=dana, federation=fed_a).scopes == ["read"]
    client.force_login(dana)
    assert client.get(reverse("console:federation", args=["fed-a"])).status_code == 200


def test_it_changes_a_role_in_place_and_revokes_both(dana, fed_a):
    call_command("grant_access", "dana", "fed-a", "--role", "finance")
    call_command("grant_access", "dana", "fed-a", "--role", "operator")
    assert Membership.objects.filter(user=dana).count() == 1
    assert ApiMembership.objects.get(user=dana).scopes == ["ingest", "generate", "read"]
    call_command("grant_access", "dana", "fed-a", "--revoke")
    assert not Membership.objects.filter(user=dana).exists() and not ApiMembership.objects.filter(user=dana).exists()


@pytest.mark.parametrize(("args", "message"), [
    (["nobody", "fed-a", "--role", "auditor"], "unknown_user: no user 'nobody'"),
    (["dana", "no-such-fed", "--role", "auditor"], "unknown_federation: no federation 'no-such-fed'"),
    (["dana", "fed-a"], "give exactly one of --role ROLE or --revoke"),
    (["dana", "fed-a", "--revoke"], "unknown_membership: 'dana' has no access to 'fed-a'"),
])
def test_it_names_the_problem_in_bad_input(dana, fed_a, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("grant_access", *args)
