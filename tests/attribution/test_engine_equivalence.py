"""The fast engine returns the reference's numbers on every architecture, snapshot kind and selection.

Matrix: {llama, qwen2, qwen3, gemma3_text} x {weights full, weights slice, peft}
x {last 1 block, last 2 blocks} x {teacher-forced, generate_and_attribute}.
Tolerance: |fast - reference| <= 1e-4 * max|reference score of the response|
+ 1e-5 * |reference|, with identical token ids.
"""

from __future__ import annotations

import pytest
import torch

from attribution import (
    AttributionConfig,
    generate_and_attribute,
    reference_attribute,
    teacher_forced_attribute,
)
from attribution.tiny import ARCHITECTURES

KINDS = ("full", "slice", "peft")
PROMPT_LENGTH, NEW_TOKENS = 7, 5


def random_prompt(seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (PROMPT_LENGTH,), generator=gen).tolist()


def assert_same_scores(fast, ref) -> None:
    assert fast.response_ids == ref.response_ids
    assert fast.client_ids == ref.client_ids
    scale = float(ref.token_scores.abs().max())
    assert scale > 0
    diff = (fast.token_scores - ref.token_scores).abs()
    bound = 1e-4 * scale + 1e-5 * ref.token_scores.abs()
    assert bool((diff <= bound).all()), f"max diff {float(diff.max()):.3g} vs max |score| {scale:.3g}"
    assert torch.allclose(fast.sequence_shares, ref.sequence_shares, atol=1e-4)
    assert fast.predicted_client == ref.predicted_client


@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_it_matches_the_reference(engine_round, arch, kind, blocks):
    loaded = engine_round(arch, kind)
    config = AttributionConfig(last_n_blocks=blocks)
    prompt = random_prompt(10 * ARCHITECTURES.index(arch) + 2 * KINDS.index(kind) + blocks)
    ref = reference_attribute(loaded, prompt, max_new_tokens=NEW_TOKENS, config=config, eos=False)
    assert len(ref.response_ids) == NEW_TOKENS
    generated = generate_and_attribute(loaded, prompt, max_new_tokens=NEW_TOKENS, config=config, eos=False)
    assert_same_scores(generated, ref)
    forced = teacher_forced_attribute(loaded, prompt, ref.response_ids, config=config)
    assert_same_scores(forced, ref)
    assert forced.mode == "teacher_forced" and generated.mode == "generated"
    expected_modules = 2 * blocks + 1
    assert len(forced.provenance.tracked_modules) == expected_modules


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_it_matches_the_reference_teacher_forced_on_a_given_response(engine_round, arch):
    loaded = engine_round(arch, "slice")
    prompt, response = random_prompt(1), random_prompt(2)[:4]
    ref = reference_attribute(loaded, prompt, response_ids=response)
    assert ref.response_ids == response
    assert_same_scores(teacher_forced_attribute(loaded, prompt, response), ref)


@pytest.mark.parametrize("kind", ["slice", "peft"])
def test_it_handles_tied_embeddings(engine_round, kind):
    loaded = engine_round("llama", kind, tied=True)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    prompt = random_prompt(3)
    ref = reference_attribute(loaded, prompt, max_new_tokens=NEW_TOKENS, eos=False)
    assert_same_scores(generate_and_attribute(loaded, prompt, max_new_tokens=NEW_TOKENS, eos=False), ref)
