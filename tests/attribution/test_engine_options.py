"""Options and invariances: targets, ablations, aggregations, chunking, client order, config checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attribution import (
    AttributionConfig,
    attribute,
    attribute_batch,
    generate_and_attribute,
    load_round,
    read_round,
    reference_attribute,
    teacher_forced_attribute,
)
from attribution.errors import ConfigError, InputError, ModuleError
from attribution.result import aggregate, zscore

PROMPT = [40, 41, 42, 43, 44, 45, 46]


def close(a, b) -> bool:
    scale = float(b.token_scores.abs().max())
    return a.response_ids == b.response_ids and bool(
        ((a.token_scores - b.token_scores).abs() <= 1e-4 * scale + 1e-5 * b.token_scores.abs()).all())


@pytest.mark.parametrize("kind", ["slice", "peft"])
@pytest.mark.parametrize("options", [
    {"target": "logprob"},
    {"target": "logprob", "last_n_blocks": 2},
    {"gradient_weighting": False},
    {"gradient_weighting": False, "last_n_blocks": 2},
    {"apply_fedavg_weights": True},
    {"include_lm_head": False},
    {"modules": ("model.layers.1.mlp.down_proj", "model.layers.0.self_attn.o_proj", "lm_head")},
])
def test_it_matches_the_reference_under_every_option(engine_round, kind, options):
    loaded = engine_round("qwen2", kind)
    config = AttributionConfig(**options)
    ref = reference_attribute(loaded, PROMPT, max_new_tokens=4, config=config, eos=False)
    assert close(generate_and_attribute(loaded, PROMPT, max_new_tokens=4, config=config, eos=False), ref)
    assert close(teacher_forced_attribute(loaded, PROMPT, ref.response_ids, config=config), ref)


@pytest.mark.parametrize("kind", ["slice", "peft"])
def test_it_does_not_depend_on_the_chunk_size(engine_round, kind):
    loaded = engine_round("llama", kind, n_clients=5)
    results = [teacher_forced_attribute(loaded, PROMPT, [1, 2, 3], config=AttributionConfig(client_chunk_size=size))
               for size in (1, 3, 5)]
    for other in results[1:]:
        assert torch.allclose(other.token_scores, results[0].token_scores, rtol=1e-6, atol=1e-6)


def test_it_permutes_results_with_the_client_order(engine_round_dir):
    path = engine_round_dir("llama", "slice", n_clients=5)
    snapshot = read_round(path)
    order = [3, 0, 4, 1, 2]
    permuted = dataclasses.replace(snapshot, clients=[snapshot.clients[i] for i in order])
    a = teacher_forced_attribute(load_round(snapshot), PROMPT, [5, 6, 7])
    b = teacher_forced_attribute(load_round(permuted), PROMPT, [5, 6, 7])
    assert b.client_ids == [a.client_ids[i] for i in order]
    assert torch.allclose(b.token_scores, a.token_scores[:, order], rtol=1e-6, atol=1e-6)
    assert torch.allclose(b.sequence_shares, a.sequence_shares[order], atol=1e-9)
    assert b.predicted_client == a.predicted_client


@pytest.mark.parametrize("method", ["sum", "zscore", "share"])
def test_it_leaves_shares_unchanged_when_a_constant_is_added(method):
    scores = torch.tensor([[1.0, 2.0, -0.5], [0.3, 0.1, 0.2]], dtype=torch.float64)
    _, shares = aggregate(scores, method)
    _, shifted = aggregate(scores + 17.0, method)
    assert torch.allclose(shares, shifted, atol=1e-12)
    assert float(shares.sum()) == pytest.approx(1.0)


def test_it_aggregates_as_documented():
    scores = torch.tensor([[10.0, 0.0, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    total, shares = aggregate(scores, "sum")
    assert total.tolist() == [10.0, 1.0, 2.0]
    assert torch.allclose(shares, torch.softmax(total, 0))
    # zscore: each token one vote; the 10-point spike no longer outweighs the rest.
    z = zscore(scores)
    assert torch.allclose(z.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(1, unbiased=False), torch.ones(2, dtype=torch.float64))
    votes, _ = aggregate(scores, "zscore")
    assert torch.allclose(votes, z.sum(0))
    counts, mean_shares = aggregate(scores, "share")
    assert torch.allclose(counts, torch.softmax(scores, 1).sum(0))
    assert torch.allclose(mean_shares, counts / 2)
    flat = zscore(torch.tensor([[3.0, 3.0]], dtype=torch.float64))
    assert flat.tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("aggregation", ["zscore", "share"])
def test_it_reports_the_aggregation_in_results(engine_round, aggregation):
    loaded = engine_round("llama", "slice")
    result = teacher_forced_attribute(loaded, PROMPT, [5, 6], config=AttributionConfig(aggregation=aggregation))
    expected, shares = aggregate(result.token_scores, aggregation)
    assert torch.allclose(result.sequence_scores, expected) and torch.allclose(result.sequence_shares, shares)
    assert result.provenance.config["aggregation"] == aggregation


def test_it_attributes_a_batch_like_single_items(engine_round):
    loaded = engine_round("llama", "slice")
    items = [{"prompt_ids": PROMPT, "response_ids": [5, 6, 7]},
             {"prompt_ids": PROMPT[:4], "max_new_tokens": 3, "eos": False},
             {"prompt_ids": PROMPT[2:], "response_ids": [9]}]
    batch = attribute_batch(loaded, items)
    singles = [attribute(loaded, **item) for item in items]
    for got, want in zip(batch, singles, strict=True):
        assert got.response_ids == want.response_ids and got.mode == want.mode
        assert torch.allclose(got.token_scores, want.token_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [
    {"last_n_blocks": 0}, {"last_n_blocks": True}, {"target": "prob"}, {"aggregation": "mean"},
    {"gradient_weighting": "yes"}, {"responsible_margin": 1.5}, {"responsible_margin": -0.1},
    {"client_chunk_size": 0}, {"dtype": "int8"}, {"device": "warp-drive"}, {"modules": ()},
    {"modules": "lm_head"}, {"modules": ("model.layers.1.mlp", "model.layers.1.mlp.down_proj")},
    {"modules": ("lm_head", "lm_head")},
])
def test_it_refuses_bad_config_values(bad):
    with pytest.raises(ConfigError) as info:
        AttributionConfig(**bad)
    assert next(iter(bad)) in str(info.value) or "module" in str(info.value)


def test_it_round_trips_and_hashes_configs():
    config = AttributionConfig(last_n_blocks=2, target="logprob", modules=None, aggregation="zscore")
    assert AttributionConfig.from_dict(config.to_dict()) == config
    assert config.config_hash() == AttributionConfig.from_dict(config.to_dict()).config_hash()
    assert config.config_hash() == config.replace(client_chunk_size=3, device="cpu").config_hash()
    assert config.config_hash() != config.replace(target="logit").config_hash()
    with pytest.raises(ConfigError, match="unknown attribution config key"):
        AttributionConfig.from_dict({"blocks": 3})


def test_it_refuses_selections_the_model_cannot_have(engine_round):
    loaded = engine_round("llama", "slice")
    with pytest.raises(ConfigError, match="only 2 blocks"):
        teacher_forced_attribute(loaded, PROMPT, [1], config=AttributionConfig(last_n_blocks=3))
    with pytest.raises(ModuleError, match="does not exist"):
        teacher_forced_attribute(loaded, PROMPT, [1], config=AttributionConfig(modules=("model.layers.9.mlp",)))
    with pytest.raises(ModuleError, match="only nn.Linear"):
        teacher_forced_attribute(loaded, PROMPT, [1], config=AttributionConfig(modules=("model.layers.1.input_layernorm",)))


@pytest.mark.parametrize("call", [
    lambda L: attribute(L, prompt_ids=[]),
    lambda L: attribute(L, prompt_ids=[1, 2], response_ids=[10**6]),
    lambda L: attribute(L, prompt_ids=[1, 2], max_new_tokens=0),
    lambda L: attribute(L, prompt="hi", prompt_ids=[1]),
    lambda L: attribute(L),
    lambda L: attribute(L, prompt=""),
    lambda L: attribute(L, prompt_ids=[1] * 250, max_new_tokens=32),
    lambda L: attribute(L, prompt_ids=["a"]),
    lambda L: attribute_batch(L, []),
    lambda L: attribute_batch(L, [{"prompt_ids": [1], "temperature": 2}]),
])
def test_it_refuses_bad_inputs_with_a_named_error(engine_round, call):
    with pytest.raises(InputError):
        call(engine_round("llama", "slice"))
