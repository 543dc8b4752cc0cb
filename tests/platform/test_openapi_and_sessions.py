"""The OpenAPI schema is served, and console users authenticate with their session, scoped by membership."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from platform_factories import ClientFactory, FederationFactory
from registry.models import Membership

pytestmark = pytest.mark.django_db


def test_it_serves_the_openapi_schema(db):
    schema = HttpClient().get("/api/v1/openapi.json").json()
    assert schema["info"]["title"] == "ProToken platform API"
    for path in ("/api/v1/rounds/upload", "/api/v1/generations", "/api/v1/generations/{generation_id}"):
        assert path in schema["paths"]


def test_it_scopes_a_console_user_to_their_memberships(federation):
    user = get_user_model().objects.create_user("ann", password="pw-12345678")
    Membership.objects.create(user=user, federation=federation, scopes=["read"])
    other = FederationFactory(slug="fed-b")
    ClientFactory(federation=other, client_id="eve")
    http = HttpClient()
    http.force_login(user)
    assert [c["client_id"] for c in http.get("/api/v1/clients").json()] == ["alice", "bob", "carol"]
    assert http.get("/api/v1/clients", {"federation": "fed-b"}).json()["code"] == "unknown_federation"
    response = http.post("/api/v1/clients", {"client_id": "zed"}, content_type="application/json")
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"


def test_it_asks_a_user_of_several_federations_to_name_one(federation):
    admin = get_user_model().objects.create_superuser("root", password="pw-12345678")
    FederationFactory(slug="fed-b")
    http = HttpClient()
    http.force_login(admin)
    response = http.get("/api/v1/clients")
    assert response.status_code == 422 and response.json()["code"] == "federation_required"
    assert http.get("/api/v1/clients", {"federation": "fed-b"}).json() == []


@pytest.mark.parametrize("path", ["/static/console/console.css", "/static/ninja/swagger-ui.css"])
def test_it_serves_static_files_without_a_proxy(db, settings, path):
    settings.DEBUG = False  # as under gunicorn in production: Django itself would not serve /static/
    response = HttpClient().get(path)
    assert response.status_code == 200
    assert b"".join(response.streaming_content)


def test_the_api_docs_load_swagger_from_this_server_not_a_cdn(db):
    page = HttpClient().get("/api/v1/docs").content.decode()
    assert "/static/ninja/" in page
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page
