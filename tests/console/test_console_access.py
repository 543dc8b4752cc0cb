"""Who sees what: sign-in, membership (403), unknown federations and other federations' objects (404), roles."""

from __future__ import annotations

import pytest
from console.access import NotAMember, federation_access, visible_federations
from console_data import PASSWORD, attributed_generation
from django.urls import reverse

pytestmark = pytest.mark.django_db

SHARES = {"alice": 0.6, "bob": 0.3, "carol": 0.1}
TOKENS = [("Paris", [2.0, 0.5, 0.1])]


def test_it_sends_anonymous_users_to_the_login_page(client, fed_a):
    response = client.get(reverse("console:federation", args=["fed-a"]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("console:login") + "?next=/f/fed-a/")


def test_it_signs_in_with_a_password_and_out_again(client, users):
    response = client.post(reverse("console:login"), {"username": "alice_op", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("console:overview")
    assert client.get(reverse("console:overview")).status_code == 200
    client.post(reverse("console:logout"))
    assert client.get(reverse("console:overview")).status_code == 302


def test_it_refuses_a_wrong_password_with_a_message(client, users):
    response = client.post(reverse("console:login"), {"username": "alice_op", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_it_lists_only_the_members_federations(as_user, users):
    page = as_user(users["outsider"]).get(reverse("console:overview")).content.decode()
    assert "/f/fed-b/" in page and "/f/fed-a/" not in page


def test_it_lists_every_federation_for_a_superuser(users):
    assert [a.federation.slug for a in visible_federations(users["superuser"])] == ["fed-a", "fed-b"]
    assert {a.role for a in visible_federations(users["superuser"])} == {"superuser"}


def test_it_answers_403_with_a_reason_for_a_non_member(as_user, users):
    response = as_user(users["outsider"]).get(reverse("console:federation", args=["fed-a"]))
    assert response.status_code == 403
    assert "not a member of federation &#x27;fed-a&#x27;" in response.content.decode()
    with pytest.raises(NotAMember):
        federation_access(users["outsider"], "fed-a")


def test_it_answers_404_for_an_unknown_federation(as_user, users):
    response = as_user(users["operator"]).get(reverse("console:federation", args=["no-such-fed"]))
    assert response.status_code == 404
    assert "there is no federation &#x27;no-such-fed&#x27;" in response.content.decode()


def test_it_hides_another_federations_generation_behind_404(as_user, users, fed_a, fed_b):
    foreign = attributed_generation(fed_b, shares={"dave": 0.7, "erin": 0.3}, tokens=[("x", [1.0, 0.0])])
    client = as_user(users["outsider"])
    assert client.get(reverse("console:generation", args=["fed-b", foreign.pk])).status_code == 200
    # A member of fed-a asks for fed-b's generation through fed-a's URL: it does not exist there.
    response = as_user(users["operator"]).get(reverse("console:generation", args=["fed-a", foreign.pk]))
    assert response.status_code == 404
    assert f"no generation {foreign.pk}" in response.content.decode()


def test_it_keeps_other_federations_reports_and_clients_out(as_user, users, fed_b):
    client = as_user(users["operator"])
    assert client.get(reverse("console:client", args=["fed-a", "dave"])).status_code == 404
    assert client.get(reverse("console:client", args=["fed-b", "dave"])).status_code == 403
    assert client.get(reverse("console:reports", args=["fed-b"])).status_code == 403


def test_it_keeps_generation_contents_from_the_finance_role(as_user, users, fed_a):
    generation = attributed_generation(fed_a, shares=SHARES, tokens=TOKENS)
    client = as_user(users["finance"])
    for url in (reverse("console:generations", args=["fed-a"]), reverse("console:generation", args=["fed-a", generation.pk])):
        response = client.get(url)
        assert response.status_code == 403
        assert "the finance role may not read generations" in response.content.decode()
    # ...but finance sees the federation's shares, the client pages without token texts, and payouts.
    page = client.get(reverse("console:federation", args=["fed-a"])).content.decode()
    assert "Payout exports" in page and "60.0%" in page
    client_page = client.get(reverse("console:client", args=["fed-a", "alice"])).content.decode()
    assert "is top-1" not in client_page and "Paris" not in client_page


def test_it_lets_only_operators_and_auditors_build_reports(as_user, users):
    body = {"start": "2025-01-01", "end": "2025-01-07"}
    response = as_user(users["finance"]).post(reverse("console:reports", args=["fed-a"]), body)
    assert response.status_code == 403
    assert "may not build audit reports" in response.content.decode()
    response = as_user(users["auditor"]).post(reverse("console:reports", args=["fed-a"]), body)
    assert response.status_code == 302
