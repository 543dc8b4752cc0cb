"""The fast engine equals the reference on the shipped SmolLM2-135M-Instruct (tied embeddings)."""

from __future__ import annotations

import pytest
import torch

from attribution import (
    AttributionConfig,
    attribute,
    encode_prompt,
    load_round,
    reference_attribute,
    teacher_forced_attribute,
    write_round,
)
from attribution.shipped import base_model_spec
from attribution.snapshot import tracked_module_names
from attribution.snapshot_types import ClientUpdate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_round(smollm2_dir, tmp_path_factory):
    spec = base_model_spec(smollm2_dir)
    modules = tracked_module_names(smollm2_dir, 1, include_lm_head=False)
    names = [k for k in spec.shapes if any(k.startswith(m + ".") for m in modules)]
    base = {k: spec.load_tensor(k) for k in names}
    clients = []
    for i in range(3):
        gen = torch.Generator().manual_seed(i)
        clients.append(ClientUpdate(f"c{i}", 10 + i, tensors={
            k: v + 0.05 * v.std() * torch.randn(v.shape, generator=gen) for k, v in base.items()}))
    total = sum(c.num_examples for c in clients)
    glob = {k: sum(c.tensors[k] * c.num_examples for c in clients) / total for k in names}
    path = write_round(tmp_path_factory.mktemp("smol") / "round", federation="smol", round=0,
                       base_model="smollm2-135m-instruct", kind="weights", global_update=glob, clients=clients)
    return load_round(path)


def test_it_matches_the_reference_on_smollm2(smol_round):
    loaded = smol_round
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    prompt = encode_prompt(loaded, "Name a colour.")
    ref = reference_attribute(loaded, prompt, max_new_tokens=5, eos=False)
    fast = attribute(loaded, prompt_ids=prompt, max_new_tokens=5, eos=False)
    forced = teacher_forced_attribute(loaded, prompt, ref.response_ids)
    scale = float(ref.token_scores.abs().max())
    for result in (fast, forced):
        assert result.response_ids == ref.response_ids
        assert float((result.token_scores - ref.token_scores).abs().max()) <= 1e-4 * scale
        assert result.predicted_client == ref.predicted_client


def test_it_matches_the_reference_over_two_blocks_on_smollm2(smol_round):
    config = AttributionConfig(last_n_blocks=2, target="logprob")
    prompt = encode_prompt(smol_round, "Say hi.")
    ref = reference_attribute(smol_round, prompt, response_ids=[19556, 17], config=config)
    fast = teacher_forced_attribute(smol_round, prompt, [19556, 17], config=config)
    scale = float(ref.token_scores.abs().max())
    assert float((fast.token_scores - ref.token_scores).abs().max()) <= 1e-4 * scale
