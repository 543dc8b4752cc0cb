"""The /api/v1/rewards endpoints: settle, flags and review, harm marks, export and download."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import add_generation, ledger_balances
from django.test import Client as HttpClient
from registry.services import token_issue

BENIGN = ("alice", "bob", "carol", "dave")


class Api:
    def __init__(self, secret: str) -> None:
        self.http, self.headers = HttpClient(), {"Authorization": f"Bearer {secret}"}

    def get(self, path: str, **params):
        return self.http.get(f"/api/v1/rewards{path}", params, headers=self.headers)

    def post(self, path: str, body: dict | None = None):
        return self.http.post(f"/api/v1/rewards{path}", json.dumps(body or {}), "application/json",
                              headers=self.headers)

    def delete(self, path: str):
        return self.http.delete(f"/api/v1/rewards{path}", headers=self.headers)


@pytest.fixture
def api(fed):
    return Api(token_issue(federation=fed, name="finance", scopes=["ingest", "read"])[1])


@pytest.fixture
def reader(fed):
    return Api(token_issue(federation=fed, name="reader", scopes=["read"])[1])


@pytest.fixture
def harmful(fed, round0):
    for i in range(20):
        top = BENIGN[i % 4]
        add_generation(fed, round0, {c: 0.55 if c == top else 0.15 for c in BENIGN})
    return [add_generation(fed, round0, {"alice": 0.1, "bob": 0.1, "carol": 0.1, "dave": 0.7}) for _ in range(6)]


SETTLE = {"period_start": "2026-01-05T00:00:00Z", "period_end": "2026-01-06T00:00:00Z", "pool_amount": 1000,
          "currency": "EUR"}


def test_marking_settling_reviewing_and_exporting_over_the_api(api, fed, harmful):
    for gen in harmful:
        assert api.post(f"/generations/{gen.pk}/harm", {"note": "sentinel"}).status_code == 201
    created = api.post("/settlements", SETTLE)
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["status"], body["harmful_count"], body["flags_count"], body["replayed"]) == ("settled", 6, 1, False)
    again = api.post("/settlements", SETTLE)
    assert again.status_code == 200 and again.json()["replayed"] and again.json()["id"] == body["id"]
    (flag,) = api.get("/flags", state="open").json()
    assert flag["client_id"] == "dave" and len(flag["evidence"]["generations"]) == 6
    reviewed = api.post(f"/flags/{flag['id']}/review", {"state": "dismissed", "note": "checked"})
    assert reviewed.status_code == 200 and reviewed.json()["flag"]["state"] == "dismissed"
    assert len(reviewed.json()["released"]) == 1
    assert ledger_balances(fed)[("payable", "dave")] == body["held_amount"]
    export = api.post(f"/settlements/{body['id']}/export")
    assert export.status_code == 201 and export.json()["total_amount"] == 1000
    download = api.get(f"/exports/{export.json()['id']}/download", format="json")
    assert download.status_code == 200 and download["Content-Type"] == "application/json"
    assert download["X-Content-SHA256"] == hashlib.sha256(download.content).hexdigest() == export.json()["json_sha256"]
    assert api.post(f"/settlements/{body['id']}/export").json()["replayed"] is True


def test_bad_requests_get_4xx_with_the_services_message(api, fed, harmful):
    bad = api.post("/settlements", {**SETTLE, "period_end": "2026-01-04T00:00:00Z"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_period"
    assert api.post("/settlements", {**SETTLE, "currency": "eur"}).json()["field"] == "currency"
    assert api.post("/settlements", {**SETTLE, "pool_amount": -1}).status_code == 422
    assert api.post("/settlements", {**SETTLE, "rules": {"exclude": ["zed"]}}).json()["code"] == "unknown_client"
    missing = api.post("/flags/99999/review", {"state": "confirmed"})
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_flag"
    assert api.post("/generations/99999/harm").status_code == 404
    assert api.get("/exports/99999/download").status_code == 404
    assert api.get("/settlements").json() == []


def test_writes_need_the_write_scope_and_other_federations_are_invisible(reader, api, fed, harmful):
    assert reader.post("/settlements", SETTLE).status_code == 403
    assert reader.get("/settlements").status_code == 200
    assert api.get("/flags", federation="someone-else").status_code == 404


def test_harm_policies_over_the_api(api):
    created = api.post("/harm-policies", {"name": "sentinel", "keywords": ["PWNED"], "patterns": [r"\bkey=\w+"]})
    assert created.status_code == 201 and created.json()["keywords"] == ["pwned"]
    assert api.post("/harm-policies", {"name": "broken", "patterns": ["("]}).status_code == 422
    assert [p["name"] for p in api.get("/harm-policies").json()] == ["sentinel"]
