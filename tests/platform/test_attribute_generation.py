"""The worker's service on a real tiny round: stored rows match the engine, re-runs change nothing, bad input fails."""

from __future__ import annotations

import pytest
import torch
from audits import engine
from audits.models import AttributionRun, ClientAttribution, Generation, TokenAttribution
from audits.services import Submission, generation_attribute, generation_submit, generations_attribute
from registry.services import round_register_from_folder

from attribution import attribute, load_round

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_round_cache")]


@pytest.fixture
def round_(federation, make_round):
    return round_register_from_folder(federation=federation, folder=make_round())[0]


def _submit(federation, prompt="The cat", response=" sat on the mat", **kw):
    submission = Submission(prompt=prompt, response=response, chat_template=False, **kw)
    return generation_submit(federation=federation, submission=submission, enqueue=False)


def test_it_stores_the_engines_numbers(federation, round_, make_round):
    generation = generation_attribute(generation_id=_submit(federation).pk)
    assert generation.status == "done" and generation.attempts == 1 and generation.engine_ms is not None
    expected = attribute(load_round(make_round()), prompt="The cat", response=" sat on the mat", chat_template=False)
    run = AttributionRun.objects.get(generation=generation)
    assert run.client_ids == ["alice", "bob", "carol"]
    assert run.predicted_client.client_id == expected.predicted_client
    assert run.method_version == expected.provenance.method_version
    assert run.config_hash == expected.provenance.config_hash
    assert run.tracked_modules == expected.provenance.tracked_modules
    assert run.snapshot_hashes["global"] == round_.global_sha256
    rows = {r.client.client_id: r for r in ClientAttribution.objects.filter(run=run)}
    for k, cid in enumerate(run.client_ids):
        assert rows[cid].raw_score == pytest.approx(float(expected.sequence_scores[k]), rel=1e-5, abs=1e-6)
        assert rows[cid].share == pytest.approx(float(expected.sequence_shares[k]), rel=1e-5, abs=1e-6)
    assert sum(r.share for r in rows.values()) == pytest.approx(1.0)
    assert sorted(r.rank for r in rows.values()) == [1, 2, 3]
    assert rows[expected.predicted_client].rank == 1
    tokens = list(TokenAttribution.objects.filter(run=run).order_by("position"))
    assert [t.token_id for t in tokens] == expected.response_ids
    assert "".join(t.text for t in tokens) == " sat on the mat"
    assert torch.allclose(torch.tensor([t.scores for t in tokens], dtype=torch.float64), expected.token_scores.double(), rtol=1e-5, atol=1e-5)


def test_it_changes_nothing_when_run_again(federation, round_):
    generation = generation_attribute(generation_id=_submit(federation).pk)
    counts = (AttributionRun.objects.count(), ClientAttribution.objects.count(), TokenAttribution.objects.count())
    Generation.objects.filter(pk=generation.pk).update(status="queued")  # as if the message were redelivered
    again = generation_attribute(generation_id=generation.pk)
    assert again.status == "done"
    assert (AttributionRun.objects.count(), ClientAttribution.objects.count(), TokenAttribution.objects.count()) == counts
    assert generation_attribute(generation_id=generation.pk).attempts == 1  # done: not even claimed


def test_it_generates_a_response_when_none_is_given(federation, round_):
    generation = _submit(federation, response=None, max_new_tokens=5)
    done = generation_attribute(generation_id=generation.pk)
    assert done.status == "done" and done.source == "generated"
    run = AttributionRun.objects.get(generation=done)
    assert 1 <= run.num_tokens <= 5
    assert done.response == "".join(run.token_rows.order_by("position").values_list("text", flat=True))


def test_it_attributes_a_batch_in_one_pass_and_isolates_a_bad_item(federation, round_, make_round):
    good = [_submit(federation, prompt=f"Prompt {i}", response=f" answer {i}") for i in range(3)]
    too_long = _submit(federation, prompt="x" * 300, response=" y")  # past the tiny model's 256 positions
    done = generations_attribute(generation_ids=[g.pk for g in [*good, too_long]])
    assert [g.status for g in done] == ["done", "done", "done", "failed"]
    assert done[3].failure_code == "invalid_input"
    assert "256" in done[3].failure_reason
    assert engine.round_cache().loads == 1
    expected = attribute(load_round(make_round()), prompt="Prompt 1", response=" answer 1", chat_template=False)
    shares = dict(ClientAttribution.objects.filter(generation=good[1]).values_list("client__client_id", "share"))
    assert [shares[c] for c in expected.client_ids] == pytest.approx(expected.sequence_shares.tolist(), rel=1e-5)


def test_it_fails_a_generation_whose_round_files_are_corrupt(federation, round_, settings):
    from django.core.files.storage import storages

    path = storages["artifacts"].path(f"{round_.artifact_path}/clients/bob/model.safetensors")
    with open(path, "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\0\0\0\0")
    done = generation_attribute(generation_id=_submit(federation).pk)
    assert done.status == "failed"
    assert done.failure_code == "invalid_round"
    assert "bob" in done.failure_reason and "sha256" in done.failure_reason
    assert AttributionRun.objects.count() == 0


def test_it_computes_in_the_dtype_its_stored_config_names(federation, round_, settings):
    settings.ATTRIBUTION_CONFIG = {"dtype": "float64"}
    generation = generation_attribute(generation_id=_submit(federation).pk)
    run = AttributionRun.objects.get(generation=generation)
    assert run.config["dtype"] == "float64"
    (loaded,) = [engine.round_cache()._items[k] for k in engine.round_cache().keys()]
    assert next(loaded.model.parameters()).dtype == torch.float64
