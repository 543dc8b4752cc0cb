"""Registering, updating and reading clients through the API, scoped to the caller's federation."""

from __future__ import annotations

import pytest
from platform_factories import ClientFactory, FederationFactory
from registry.models import Client

pytestmark = pytest.mark.django_db


def test_it_registers_a_client_with_its_registration_data(api, federation):
    body = {
        "client_id": "dave",
        "display_name": "Dave's Hospital",
        "organisation": "St. Elsewhere",
        "contact": "ops@example.org",
        "payout_account_ref": "IBAN-XX-1",
    }
    response = api.post("/clients", body)
    assert response.status_code == 201
    assert {k: response.json()[k] for k in body} == body
    assert response.json()["status"] == "active"
    assert Client.objects.get(federation=federation, client_id="dave").organisation == "St. Elsewhere"


def test_it_refuses_a_duplicate_client(api, federation):
    response = api.post("/clients", {"client_id": "alice"})
    assert response.status_code == 409
    assert response.json() == {"code": "client_exists", "message": "client 'alice' is already registered",
                               "field": "client_id"}


@pytest.mark.parametrize("client_id", ["has space", "", "x" * 65, "semi;colon"])
def test_it_names_the_field_of_an_invalid_client_id(api, federation, client_id):
    response = api.post("/clients", {"client_id": client_id})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid"
    assert response.json()["field"] == "client_id"


def test_it_names_the_field_of_an_invalid_status(api, federation):
    response = api.post("/clients", {"client_id": "zed", "status": "deleted"})
    assert response.status_code == 422
    assert response.json()["field"] == "status"


def test_it_updates_and_suspends_a_client(api, federation):
    response = api.patch("/clients/bob", {"status": "suspended", "contact": "bob@example.org"})
    assert response.status_code == 200
    bob = Client.objects.get(federation=federation, client_id="bob")
    assert (bob.status, bob.contact) == ("suspended", "bob@example.org")


def test_it_hides_another_federations_clients(api, federation):
    other = FederationFactory(slug="fed-b")
    ClientFactory(federation=other, client_id="eve")
    response = api.get("/clients/eve")
    assert response.status_code == 404
    assert response.json() == {"code": "unknown_client", "message": "no client 'eve' in federation 'fed-a'",
                               "field": "client_id"}
    assert api.patch("/clients/eve", {"status": "suspended"}).status_code == 404
    assert [c["client_id"] for c in api.get("/clients").json()] == ["alice", "bob", "carol"]


def test_it_refuses_naming_a_federation_the_token_cannot_see(api, federation):
    FederationFactory(slug="fed-b")
    response = api.get("/clients", federation="fed-b")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_federation"


def test_it_needs_the_ingest_scope_to_register(make_api, issue_token, federation):
    response = make_api(issue_token(federation, ["read"])).post("/clients", {"client_id": "dave"})
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"
