"""Submitting prompts (and prompt + response audits): queued rows, one task per commit, every bad input refused."""

from __future__ import annotations

import pytest
from audits.models import Generation
from platform_factories import ClientUpdateFactory, FederationFactory, GenerationFactory, RoundFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def rounds(federation):
    return [RoundFactory(federation=federation, number=n) for n in (0, 1)]


def test_it_queues_an_audit_and_enqueues_after_commit(api, rounds, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post("/generations", {"prompt": "Hi", "response": "Hello!", "round": 0})
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["source"], body["round"]) == ("queued", "submitted", 0)
    assert len(callbacks) == 1
    generation = Generation.objects.get(pk=body["id"])
    assert (generation.prompt, generation.response, generation.round.number) == ("Hi", "Hello!", 0)


def test_it_defaults_to_the_latest_round_and_generation(api, rounds):
    body = api.post("/generations", {"prompt": "Hi"}).json()
    assert (body["round"], body["source"]) == (1, "generated")


def test_it_groups_a_batch_into_one_task_per_round(api, rounds, django_capture_on_commit_callbacks):
    items = [{"prompt": f"p{i}", "response": "r", "round": i % 2} for i in range(5)]
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post("/generations/batch", {"items": items})
    assert response.status_code == 202
    assert len(response.json()["generations"]) == 5
    assert len(callbacks) == 2  # rounds 0 and 1
    assert Generation.objects.filter(batch_id=response.json()["batch_id"]).count() == 5


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompt": ""}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "x", "response": ""}, "response"),
        ({"prompt": "x", "max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt": "x", "round": -1}, "round"),
        ({"prompt": "x", "lineage": "maybe"}, "lineage"),
        ({"prompt": "x", "lineage": True, "lineage_credit": "sum"}, "lineage_credit"),
    ],
)
def test_it_names_the_invalid_field(api, rounds, body, field):
    response = api.post("/generations", body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid"
    assert response.json()["field"] == field
    assert Generation.objects.count() == 0


def test_a_lineage_credit_without_a_lineage_is_refused(api, rounds):
    response = api.post("/generations", {"prompt": "x", "lineage_credit": "cumulative"})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_lineage_credit"
    assert response.json()["field"] == "lineage_credit"
    assert "needs lineage: true" in response.json()["message"]
    assert Generation.objects.count() == 0


def test_it_names_the_invalid_item_of_a_batch(api, rounds):
    response = api.post("/generations/batch", {"items": [{"prompt": "ok"}, {"prompt": ""}]})
    assert response.status_code == 422
    assert response.json()["field"] == "items.1.prompt"
    assert Generation.objects.count() == 0


def test_it_refuses_an_unknown_round(api, rounds):
    response = api.post("/generations", {"prompt": "Hi", "round": 7})
    assert response.status_code == 404
    assert response.json() == {"code": "unknown_round", "message": "no round 7 in federation 'fed-a'", "field": "round"}


def test_it_refuses_a_federation_without_rounds(api, federation):
    response = api.post("/generations", {"prompt": "Hi"})
    assert response.status_code == 404
    assert response.json()["code"] == "no_rounds"


def test_it_needs_the_generate_scope(make_api, issue_token, federation, rounds):
    response = make_api(issue_token(federation, ["read", "ingest"])).post("/generations", {"prompt": "Hi"})
    assert response.status_code == 403
    assert response.json()["message"] == "this token lacks the 'generate' scope on federation 'fed-a'"


def test_it_hides_another_federations_generations(api, federation):
    theirs = GenerationFactory(round=RoundFactory(federation=FederationFactory(slug="fed-b")))
    response = api.get(f"/generations/{theirs.pk}")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_generation"
    assert api.get("/generations").json()["items"] == []


def test_it_lists_generations_with_filters_and_pages(api, federation):
    round_ = RoundFactory(federation=federation, number=3)
    ClientUpdateFactory(round=round_)
    done = [GenerationFactory(round=round_, status="done") for _ in range(3)]
    GenerationFactory(round=round_, status="failed")
    page = api.get("/generations", status="done", limit=2).json()
    assert [g["id"] for g in page["items"]] == [done[2].pk, done[1].pk]
    assert page["next_offset"] == 2
    rest = api.get("/generations", status="done", limit=2, offset=2).json()
    assert [g["id"] for g in rest["items"]] == [done[0].pk] and rest["next_offset"] is None
    assert api.get("/generations", status="exploded").json()["field"] == "status"
