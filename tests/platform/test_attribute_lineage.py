"""Lineage generations: the worker walks back through the federation's registered rounds and stores the lineage."""

from __future__ import annotations

import pytest
import torch
from audits.models import AttributionRun, Generation
from audits.services import Submission, generation_attribute, generation_submit, generations_attribute
from registry.services import round_register_from_folder

from attribution.lineage import CREDITS, DEFAULT_CREDIT, attribute_lineage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_round_cache")]


@pytest.fixture
def folders(federation, make_round):
    out = [make_round(number=n, seed=n) for n in (1, 2, 3)]
    for folder in out:
        round_register_from_folder(federation=federation, folder=folder)
    return out


def _submit(federation, *, lineage=True, round_number=3, **kw):
    kw = {"prompt": "The cat", "response": " sat on the mat", **kw}
    submission = Submission(chat_template=False, lineage=lineage, round_number=round_number, **kw)
    return generation_submit(federation=federation, submission=submission, enqueue=False)


def test_it_stores_the_engines_lineage_beside_the_published_rows(federation, folders):
    generation = generation_attribute(generation_id=_submit(federation).pk)
    assert generation.status == "done" and generation.lineage
    run = AttributionRun.objects.get(generation=generation)
    expected, = attribute_lineage(folders, [{"prompt": "The cat", "response": " sat on the mat",
                                             "chat_template": False}])
    document = run.lineage
    assert document["format"] == "protoken-lineage/1"
    assert document["making_round"] == expected.making_round
    assert document["token_clients"] == expected.token_clients
    assert document["predicted_client"] == expected.predicted_client
    assert document["sequence_shares"] == pytest.approx(expected.sequence_shares.tolist(), abs=1e-9)
    assert set(document["scored_at"]) == {str(r) for r in expected.scored_at}
    assert "attributed" not in document  # the run's own rows hold the per-round result
    # the per-round rows are the published method's, exactly as without a lineage
    assert run.predicted_client.client_id == expected.attributed.predicted_client
    assert run.num_tokens == len(expected.making_round)


def test_a_cumulative_lineage_stores_the_engines_cumulative_credit(federation, folders):
    generation = generation_attribute(generation_id=_submit(federation, lineage_credit="cumulative").pk)
    assert generation.status == "done" and generation.lineage_credit == "cumulative"
    expected, = attribute_lineage(folders, [{"prompt": "The cat", "response": " sat on the mat",
                                             "chat_template": False}], credit="cumulative")
    document = AttributionRun.objects.get(generation=generation).lineage
    assert document["credit"] == "cumulative"
    assert document["token_clients"] == expected.token_clients
    assert torch.allclose(torch.tensor(document["token_shares"], dtype=torch.float64), expected.token_shares, atol=1e-9)
    assert document["predicted_client"] == expected.predicted_client


def test_the_credit_defaults_with_a_lineage_and_is_blank_without(federation, folders):
    from audits.services import DEFAULT_LINEAGE_CREDIT

    assert DEFAULT_LINEAGE_CREDIT == DEFAULT_CREDIT  # the platform's copy of the engine's default
    assert set(Generation.LineageCredit.values) == set(CREDITS)
    assert _submit(federation).lineage_credit == DEFAULT_CREDIT
    assert _submit(federation, lineage=False).lineage_credit == ""


def test_a_batch_runs_each_credit_apart(federation, folders):
    making, cumulative = (_submit(federation, lineage_credit=c) for c in ("making", "cumulative"))
    again = _submit(federation, lineage_credit="cumulative", prompt="A dog")
    done = generations_attribute(generation_ids=[making.pk, cumulative.pk, again.pk])
    assert [g.status for g in done] == ["done"] * 3
    runs = {r.generation_id: r.lineage for r in AttributionRun.objects.all()}
    assert [runs[g.pk]["credit"] for g in (making, cumulative, again)] == ["making", "cumulative", "cumulative"]


def test_a_batch_keeps_plain_and_lineage_generations_apart(federation, folders):
    plain = [_submit(federation, lineage=False, prompt=f"Prompt {i}") for i in range(2)]
    walked = [_submit(federation, prompt=f"Prompt {i}") for i in range(2)]
    done = generations_attribute(generation_ids=[g.pk for g in [*plain, *walked]])
    assert [g.status for g in done] == ["done"] * 4
    runs = {r.generation_id: r for r in AttributionRun.objects.all()}
    assert [runs[g.pk].lineage for g in plain] == [None, None]
    assert all(runs[g.pk].lineage["rounds"][-1] == 3 for g in walked)
    # a lineage does not change the published rows: plain and lineage runs of one prompt agree
    assert runs[plain[0].pk].predicted_client_id == runs[walked[0].pk].predicted_client_id
    scores = [torch.tensor([t.scores for t in runs[g.pk].token_rows.order_by("position")]) for g in (plain[0], walked[0])]
    assert torch.allclose(*scores, rtol=1e-5, atol=1e-6)


def test_the_first_round_walks_back_to_the_base_model_only(federation, folders):
    generation = generation_attribute(generation_id=_submit(federation, round_number=1).pk)
    assert generation.status == "done"
    document = AttributionRun.objects.get(generation=generation).lineage
    assert document["rounds"] == [1] and set(document["making_round"]) <= {1, None}


def test_a_federation_whose_rounds_changed_base_model_fails_with_the_reason(federation, folders, make_round, tiny_base,
                                                                             tmp_path):
    import json

    fourth = make_round(number=4, seed=4)
    manifest = json.loads((fourth / "manifest.json").read_text())
    (tmp_path / "other-base").symlink_to(tiny_base)
    manifest["base_model"] = str(tmp_path / "other-base")
    (fourth / "manifest.json").write_text(json.dumps(manifest))
    round_register_from_folder(federation=federation, folder=fourth)
    generation = generation_attribute(generation_id=_submit(federation, round_number=4).pk)
    assert generation.status == "failed" and generation.failure_code == "invalid_input"
    assert "has base model" in generation.failure_reason
    assert not AttributionRun.objects.filter(generation=generation).exists()


def test_the_api_takes_the_flag_and_returns_the_lineage(api, federation, folders):
    body = api.post("/generations", {"prompt": "The cat", "response": " sat", "chat_template": False,
                                     "lineage": True}).json()
    generation_attribute(generation_id=body["id"])
    out = api.get(f"/generations/{body['id']}").json()
    assert out["lineage"] is True and out["status"] == "done" and out["lineage_credit"] == DEFAULT_CREDIT
    lineage = out["attribution"]["lineage"]
    assert lineage["credit"] == DEFAULT_CREDIT
    assert lineage["rounds"][-1] == 3 and len(lineage["making_round"]) == len(out["attribution"]["tokens"])
    assert torch.tensor(lineage["sequence_shares"]).sum().item() == pytest.approx(1.0)
    plain = api.post("/generations", {"prompt": "The cat", "response": " sat", "chat_template": False}).json()
    generation_attribute(generation_id=plain["id"])
    out = api.get(f"/generations/{plain['id']}").json()
    assert out["lineage"] is False and out["attribution"]["lineage"] is None and out["lineage_credit"] == ""
    cumulative = api.post("/generations", {"prompt": "The cat", "response": " sat", "chat_template": False,
                                           "lineage": True, "lineage_credit": "cumulative"}).json()
    generation_attribute(generation_id=cumulative["id"])
    out = api.get(f"/generations/{cumulative['id']}").json()
    assert out["lineage_credit"] == "cumulative" and out["attribution"]["lineage"]["credit"] == "cumulative"
    assert Generation.objects.count() == 3
