"""Result objects (JSON round-trip, Inseq export, table) and the responsible-set rule."""

from __future__ import annotations

import json

import pytest
import torch

from attribution import AttributionResult, teacher_forced_attribute
from attribution.errors import ConfigError, ResultError
from attribution.responsible import calibrate_margin, f1, responsible_set

PROMPT = [72, 105, 33, 32, 50, 43, 50]


@pytest.fixture(scope="module")
def result(engine_round):
    loaded = engine_round("llama", "slice")
    response = loaded.tokenizer("=4\n", add_special_tokens=False)["input_ids"]
    return teacher_forced_attribute(loaded, PROMPT, response)


def test_it_round_trips_through_json_exactly(result):
    again = AttributionResult.from_json(result.to_json())
    for name in ("token_scores", "token_shares", "sequence_scores", "sequence_shares"):
        assert torch.equal(getattr(again, name), getattr(result, name))
    assert again.to_dict() == result.to_dict()
    assert again.provenance.config_hash == result.provenance.config_hash


def test_it_documents_shapes_and_provenance(result):
    tokens, clients = len(result.response_ids), len(result.client_ids)
    assert result.token_scores.shape == (tokens, clients) == result.token_shares.shape
    assert result.sequence_scores.shape == (clients,)
    assert torch.allclose(result.token_shares.sum(1), torch.ones(tokens, dtype=torch.float64))
    assert result.prompt_length == len(PROMPT)
    assert result.response_tokens == ["=", "4", "\n"]
    p = result.provenance
    assert p.federation == "engine-test" and p.round == 1 and p.kind == "weights" and p.engine == "fast"
    assert p.tracked_modules == ["model.layers.1.self_attn.o_proj", "model.layers.1.mlp", "lm_head"]
    assert len(p.client_sha256) == clients and len(p.global_sha256) == 64
    assert result.predicted_client == result.client_ids[int(result.sequence_scores.argmax())]
    assert result.responsible_set[0] == result.predicted_client


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("token_scores"),
    lambda d: d.update(format="other/1"),
    lambda d: d.update(token_scores=[[1.0]]),
    lambda d: d.update(mode="dreamed"),
    lambda d: d.update(predicted_client="nobody"),
    lambda d: d["provenance"].update(extra=1),
])
def test_it_refuses_malformed_result_json(result, damage):
    data = result.to_dict()
    damage(data)
    with pytest.raises(ResultError):
        AttributionResult.from_json(json.dumps(data))
    with pytest.raises(ResultError):
        AttributionResult.from_json("{not json")


def test_it_exports_inseq_style_json(result):
    data = json.loads(result.to_inseq_json())
    seq = data["sequence_attributions"][0]
    assert [t["id"] for t in seq["source"]] == PROMPT
    assert [t["id"] for t in seq["target"]] == PROMPT + result.response_ids
    assert (seq["attr_pos_start"], seq["attr_pos_end"]) == (len(PROMPT), len(PROMPT) + 3)
    for k, client in enumerate(result.client_ids):
        assert seq["step_scores"][f"protoken_score:{client}"] == result.token_scores[:, k].tolist()
    assert data["info"]["predicted_client"] == result.predicted_client


def test_it_renders_a_table_with_the_top_client_per_token(result):
    text = result.table()
    lines = text.splitlines()
    rows = [line for line in lines if line.strip().split(" ")[0].isdigit()]
    assert len(rows) == 3
    for row, top in zip(rows, result.top_clients(), strict=True):
        assert top in row
    assert f"predicted client: {result.predicted_client}" in text


def test_it_keeps_clients_within_the_margin_of_the_top():
    shares = torch.tensor([0.40, 0.35, 0.15, 0.10])
    ids = ["a", "b", "c", "d"]
    assert responsible_set(shares, ids, 0.0) == ["a"]
    assert responsible_set(shares, ids, 0.5) == ["a", "b"]
    assert responsible_set(shares, ids, 0.7) == ["a", "b", "c"]
    assert responsible_set(shares, ids, 1.0) == ["a", "b", "c", "d"]
    # The rule reads ratios only: scaling every share (e.g. another softmax shift) keeps the set.
    assert responsible_set(shares * 0.5, ids, 0.5) == ["a", "b"]
    with pytest.raises(ConfigError):
        responsible_set(shares, ids, 2.0)


def test_it_calibrates_the_margin_for_the_best_f1():
    ids = ["a", "b", "c"]
    cases = [(torch.tensor([0.5, 0.4, 0.1]), ids), (torch.tensor([0.45, 0.1, 0.45]), ids),
             (torch.tensor([0.8, 0.1, 0.1]), ids)]
    truths = [{"a", "b"}, {"a", "c"}, {"a"}]
    margin = calibrate_margin(cases, truths)
    # 1 - 0.4/0.5 = 0.2 is the smallest margin that admits b; 1 - 0.1/0.8 = 0.875 would admit noise.
    assert 0.2 <= margin < 0.75
    assert all(set(responsible_set(s, i, margin)) == t for (s, i), t in zip(cases, truths, strict=True))
    assert calibrate_margin([(torch.tensor([0.9, 0.1]), ["a", "b"])], [{"a"}]) < 1 - 0.1 / 0.9
    assert f1({"a"}, {"a", "b"}) == pytest.approx(2 / 3)
    with pytest.raises(ConfigError):
        calibrate_margin(cases, truths[:2])
