"""Cases whose scores can be worked out by hand from the global model's own logits and hidden state."""

from __future__ import annotations

import pytest
import torch

from attribution import (
    AttributionConfig,
    load_round,
    reference_attribute,
    teacher_forced_attribute,
    write_round,
)
from attribution.snapshot_types import ClientUpdate

PROMPT = [72, 101, 108, 108, 111, 44, 32]  # "Hello, "


@pytest.fixture
def head_round(tiny_model_dir, load_base_tensors, tmp_path):
    """Clients that differ only in lm_head: same as the base, row x moved by v, row y moved, a duplicate."""
    base_dir = tiny_model_dir("llama")
    head = load_base_tensors(base_dir)["lm_head.weight"]
    gen = torch.Generator().manual_seed(7)
    v = torch.randn(head.shape[1], generator=gen)
    x, y = 65, 66
    moved_x, moved_y = head.clone(), head.clone()
    moved_x[x] += v
    moved_y[y] += v
    clients = [ClientUpdate("same", 1, tensors={"lm_head.weight": head.clone()}),
               ClientUpdate("row-x", 1, tensors={"lm_head.weight": moved_x}),
               ClientUpdate("row-y", 1, tensors={"lm_head.weight": moved_y}),
               ClientUpdate("row-x-twin", 1, tensors={"lm_head.weight": moved_x.clone()})]
    path = write_round(tmp_path / "round", federation="hand", round=0, base_model=str(base_dir), kind="weights",
                       global_update={}, clients=clients)
    return load_round(path), x, v


def final_hidden(loaded, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]


def test_it_scores_a_client_equal_to_the_global_model_with_the_raw_logit(head_round):
    loaded, x, v = head_round
    config = AttributionConfig(modules=("lm_head",))
    result = teacher_forced_attribute(loaded, PROMPT, [x], config=config)
    with torch.no_grad():
        logit = loaded.model(input_ids=torch.tensor([PROMPT])).logits[0, -1, x]
    assert float(result.token_scores[0, 0]) == pytest.approx(float(logit), rel=1e-5)


def test_it_adds_exactly_v_dot_h_for_a_moved_chosen_row(head_round):
    loaded, x, v = head_round
    config = AttributionConfig(modules=("lm_head",))
    scores = teacher_forced_attribute(loaded, PROMPT, [x], config=config).token_scores[0]
    expected = float(v @ final_hidden(loaded, PROMPT))
    assert float(scores[1] - scores[0]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # Moving a row that was not chosen changes nothing under the raw-logit target.
    assert float(scores[2]) == pytest.approx(float(scores[0]), abs=1e-6)


def test_it_gives_identical_clients_identical_scores(head_round):
    loaded, x, _ = head_round
    for config in (AttributionConfig(), AttributionConfig(target="logprob"), AttributionConfig(last_n_blocks=2)):
        result = teacher_forced_attribute(loaded, PROMPT, [x, 70, 71], config=config)
        assert torch.equal(result.token_scores[:, 1], result.token_scores[:, 3])


def test_it_scores_the_log_prob_target_by_hand(head_round):
    loaded, x, _ = head_round
    config = AttributionConfig(modules=("lm_head",), target="logprob")
    result = teacher_forced_attribute(loaded, PROMPT, [x], config=config)
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([PROMPT])).logits[0, -1].double()
    # g = e_x - softmax, so <W h, g> = z_x - sum_v p_v z_v for the unchanged client.
    expected = logits[x] - (torch.softmax(logits, 0) * logits).sum()
    assert float(result.token_scores[0, 0]) == pytest.approx(float(expected), rel=1e-5)


def test_it_sums_every_output_without_gradient_weighting(head_round):
    loaded, x, v = head_round
    config = AttributionConfig(modules=("lm_head",), gradient_weighting=False)
    result = teacher_forced_attribute(loaded, PROMPT, [x], config=config)
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([PROMPT])).logits[0, -1]
    assert float(result.token_scores[0, 0]) == pytest.approx(float(logits.sum()), rel=1e-4, abs=1e-4)
    # Rows x and y moved by the same v add the same amount once every row counts.
    assert float(result.token_scores[0, 1]) == pytest.approx(float(result.token_scores[0, 2]), rel=1e-5)
    ref = reference_attribute(loaded, PROMPT, response_ids=[x], config=config)
    assert torch.allclose(result.token_scores, ref.token_scores, rtol=1e-5, atol=1e-4)


def test_it_multiplies_by_fedavg_weights_when_asked(tiny_model_dir, load_base_tensors, tmp_path):
    base_dir = tiny_model_dir("llama")
    head = load_base_tensors(base_dir)["lm_head.weight"]
    clients = [ClientUpdate(f"c{i}", n, tensors={"lm_head.weight": head + 0.01 * i}) for i, n in enumerate((1, 3, 6))]
    path = write_round(tmp_path / "r", federation="hand", round=0, base_model=str(base_dir), kind="weights",
                       global_update={}, clients=clients)
    loaded = load_round(path)
    plain = teacher_forced_attribute(loaded, PROMPT, [65, 66], config=AttributionConfig())
    weighted = teacher_forced_attribute(loaded, PROMPT, [65, 66], config=AttributionConfig(apply_fedavg_weights=True))
    rho = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    assert torch.allclose(weighted.token_scores, plain.token_scores * rho, rtol=1e-12)
    ref = reference_attribute(loaded, PROMPT, response_ids=[65, 66], config=AttributionConfig(apply_fedavg_weights=True))
    assert torch.allclose(weighted.token_scores, ref.token_scores, rtol=1e-5, atol=1e-5)
