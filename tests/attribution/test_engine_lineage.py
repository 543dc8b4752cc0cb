"""Round lineage (attribution.lineage): tokens scored at the round that made them.

A hand-made two-round federation on a tiny Llama: in round 1 client `m`
installs a token (its lm_head row is pushed along the model's hidden states)
and client `b` only adds noise. In round 2 `m` has left, and `b` and a new
client `c` start from round 1's global; `b` pushes the installed token a little
further. The published per-round method on round 2 then credits `b`; the
lineage credits `m`, in round 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attribution import AttributionConfig, attribute_batch, load_round
from attribution.cli import main
from attribution.errors import InputError, MissingFileError
from attribution.lineage import DEFAULT_CREDIT, attribute_lineage, attribute_lineage_credits, greedy_picks
from attribution.snapshot import tracked_module_names, write_round
from attribution.snapshot_types import ClientUpdate
from attribution.tiny import byte_tokenizer

TOKENIZER = byte_tokenizer()
TOKEN = TOKENIZER.convert_tokens_to_ids("Z")
PROMPT = TOKENIZER("hello there")["input_ids"]  # what the CLI's --raw prompt encodes to
STEPS = 6


def _slice(base: dict, names: list[str], gen: torch.Generator, scale: float = 1e-3, extra: dict | None = None):
    out = {k: base[k] + scale * torch.randn(base[k].shape, generator=gen) for k in names}
    for k, v in (extra or {}).items():
        out[k] = out[k] + v
    return out


def _mean(clients: list[ClientUpdate]) -> ClientUpdate:
    total = sum(c.num_examples for c in clients)
    names = clients[0].tensors
    return ClientUpdate("global", total, tensors={
        k: sum(c.tensors[k] * c.num_examples for c in clients) / total for k in names})


@pytest.fixture(scope="module")
def federation(tiny_model_dir, load_base_tensors, tmp_path_factory) -> tuple[Path, Path, Path]:
    base_dir = tiny_model_dir("llama")
    base = load_base_tensors(base_dir)
    names = [k for k in base if any(k.startswith(m + ".") for m in tracked_module_names(base_dir))]
    model = load_round_model(base_dir)
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([PROMPT])).last_hidden_state[0]
    direction = hidden.mean(0) / hidden.mean(0).norm() ** 2
    install = torch.zeros_like(base["lm_head.weight"])
    install[TOKEN] = 40.0 * direction
    gen = torch.Generator().manual_seed(0)
    m = ClientUpdate("m", 10, tensors=_slice(base, names, gen, extra={"lm_head.weight": install}))
    b = ClientUpdate("b", 10, tensors=_slice(base, names, gen))
    g1 = _mean([m, b])
    out = tmp_path_factory.mktemp("lineage")
    r1 = write_round(out / "round-0001", federation="lineage-test", round=1, base_model=str(base_dir),
                     kind="weights", global_update=g1, clients=[m, b])
    start = g1.tensors
    b2 = ClientUpdate("b", 10, tensors=_slice(start, names, gen, extra={"lm_head.weight": 0.05 * install}))
    c2 = ClientUpdate("c", 10, tensors=_slice(start, names, gen))
    r2 = write_round(out / "round-0002", federation="lineage-test", round=2, base_model=str(base_dir),
                     kind="weights", global_update=_mean([b2, c2]), clients=[b2, c2])
    return base_dir, r1, r2


def load_round_model(model_dir: Path):
    from attribution.shipped import load_model

    return load_model(str(model_dir)).requires_grad_(False)


def test_installed_token_is_credited_to_the_round_and_client_that_made_it(federation):
    base_dir, r1, r2 = federation
    published, = attribute_batch(load_round(r2), [{"prompt_ids": PROMPT, "max_new_tokens": STEPS, "eos": False}])
    installed = [t for t, x in enumerate(published.response_ids) if x == TOKEN]
    base_picks, = greedy_picks(load_round_model(base_dir), [{"prompt_ids": PROMPT, "response_ids": published.response_ids}])
    assert installed and all(base_picks[t] != TOKEN for t in installed)  # the construction worked
    assert {published.top_clients()[t] for t in installed} == {"b"}  # per round: who pushed it further

    result, = attribute_lineage([r1, r2], [{"prompt_ids": PROMPT, "max_new_tokens": STEPS, "eos": False}])
    assert result.attributed.response_ids == published.response_ids
    assert result.rounds == [1, 2]
    assert set(result.client_ids) == {"b", "c", "m"}
    for t in installed:
        assert result.making_round[t] == 1
        assert result.token_clients[t] == "m"
        assert float(result.token_shares[t, result.client_ids.index("c")]) == 0.0  # c was not in round 1
    assert result.predicted_client == "m"
    assert torch.allclose(result.sequence_shares.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_each_token_takes_the_published_scores_of_its_making_round(federation):
    base_dir, r1, r2 = federation
    item = {"prompt_ids": PROMPT, "max_new_tokens": STEPS, "eos": False}
    result, = attribute_lineage([r1, r2], [item], credit="making")
    forced = {"prompt_ids": PROMPT, "response_ids": result.attributed.response_ids}
    per_round = {1: attribute_batch(load_round(r1), [forced])[0], 2: result.attributed}
    picks = {1: greedy_picks(load_round(r1).model, [forced])[0], 2: greedy_picks(load_round(r2).model, [forced])[0],
             0: greedy_picks(load_round_model(base_dir), [forced])[0]}
    kinds = set()
    for t, x in enumerate(forced["response_ids"]):
        # brute force: the first round of the unbroken run of rounds ending at 2 that picks x
        run = [r for r in (2, 1, 0) if picks[r][t] == x]
        streak = 2 if picks[2][t] == x else None
        while streak is not None and streak - 1 in run:
            streak -= 1
        expected = None if streak in (None, 0) else streak
        assert result.making_round[t] == expected
        kinds.add(expected)
        source = per_round[2 if expected is None else expected]
        columns = [result.client_ids.index(c) for c in source.client_ids]
        assert torch.equal(result.token_shares[t, columns], source.token_shares[t])
    assert 1 in kinds
    voting = [t for t, m in enumerate(result.making_round) if m is not None]
    assert torch.allclose(result.sequence_shares, result.token_shares[voting].mean(dim=0))


def test_a_token_made_by_no_round_keeps_the_attributed_rounds_scores(federation):
    _, r1, r2 = federation
    result, = attribute_lineage([r1, r2], [{"prompt_ids": PROMPT, "response_ids": [TOKENIZER.convert_tokens_to_ids("q")] * 3}])
    assert result.making_round == [None, None, None]  # no model here picks "q"
    assert torch.equal(result.token_shares[:, :2], result.attributed.token_shares)
    assert result.token_clients == result.attributed.top_clients()
    # no token was made by a round, so every token votes
    assert torch.allclose(result.sequence_shares[:2], result.attributed.token_shares.mean(dim=0))


def test_a_single_round_is_its_own_lineage(federation):
    _, _, r2 = federation
    result, = attribute_lineage([r2], [{"prompt_ids": PROMPT, "max_new_tokens": STEPS, "eos": False}])
    assert set(result.making_round) <= {2, None}
    assert 2 in result.making_round  # the installed token: the base model does not pick it


def test_rounds_out_of_order_are_refused(federation):
    _, r1, r2 = federation
    with pytest.raises(InputError, match="oldest first"):
        attribute_lineage([r2, r1], [{"prompt_ids": PROMPT, "max_new_tokens": 2}])


def test_rounds_of_another_federation_are_refused(federation, make_round, tmp_path):
    base_dir, _, r2 = federation
    other, _ = make_round(tmp_path / "other", base_dir)
    with pytest.raises(InputError, match="federation 'lineage-test', but .* to 'test-fed'"):
        attribute_lineage([other, r2], [{"prompt_ids": PROMPT, "max_new_tokens": 2}])


@pytest.mark.parametrize("rounds", [[], "runs/round-0001", None])
def test_rounds_must_be_a_list(rounds):
    with pytest.raises(InputError, match="rounds must be a non-empty list"):
        attribute_lineage(rounds, [{"prompt_ids": PROMPT}])


def test_cli_prints_the_making_round_of_each_token(federation, capsys):
    _, r1, r2 = federation
    ids = attribute_lineage([r1, r2], [{"prompt_ids": PROMPT, "max_new_tokens": STEPS, "eos": False}])[0]
    text = TOKENIZER.decode(ids.attributed.response_ids)
    code = main(["lineage", str(r1), str(r2), "--prompt", "hello there", "--raw", "--response", text,
                 "--no-progress", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["format"] == "protoken-lineage/1" and out["credit"] == DEFAULT_CREDIT == "cumulative"
    assert out["predicted_client"] == "m" and 1 in out["making_round"]
    assert set(out["scored_at"]) <= {"1", "2"}
    assert main(["lineage", str(r1), str(r2), "--prompt", "hello there", "--raw", "--no-progress",
                 "--max-new-tokens", str(STEPS)]) == 0
    table = capsys.readouterr().out
    assert "round 1" in table and "predicted client: m" in table
    assert "each over every round up to its making round; cumulative credit" in table  # the default credit
    assert main(["lineage", str(r1), str(r2), "--prompt", "hello there", "--raw", "--response", text,
                 "--no-progress", "--json", "--credit", "making"]) == 0
    assert json.loads(capsys.readouterr().out)["credit"] == "making"


def test_cli_names_rounds_out_of_order(federation, capsys):
    _, r1, r2 = federation
    assert main(["lineage", str(r2), str(r1), "--prompt", "hi", "--no-progress"]) == 2
    assert "oldest first" in capsys.readouterr().err


def test_lineage_uses_the_given_config(federation):
    _, r1, r2 = federation
    config = AttributionConfig(target="logprob")
    result, = attribute_lineage([r1, r2], [{"prompt_ids": PROMPT, "max_new_tokens": 3}], config)
    assert all(r.provenance.config == config.to_dict() for r in result.scored_at.values())


def test_greedy_picks_reproduce_a_models_own_greedy_continuation(tiny_model_dir):
    model = load_round_model(tiny_model_dir("llama"))
    prompt = [5, 17, 42, 9]
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)[0].tolist()
    greedy = out[len(prompt):]
    assert greedy_picks(model, [{"prompt_ids": prompt, "response_ids": greedy}]) == [greedy]
    other = [(i + 1) % 200 for i in greedy]
    choices = greedy_picks(model, [{"prompt_ids": prompt, "response_ids": other}])[0]
    assert choices[0] == greedy[0]  # the first choice depends only on the prompt


def test_every_round_is_checked_before_the_walk(federation, tmp_path, capsys):
    _, r1, r2 = federation
    with pytest.raises(MissingFileError, match="no manifest.json"):
        attribute_lineage([tmp_path / "nowhere", r1, r2], [{"prompt_ids": PROMPT, "max_new_tokens": 2}])
    assert main(["lineage", str(tmp_path / "nowhere"), str(r2), "--prompt", "hi", "--no-progress"]) == 2
    assert "nowhere: no manifest.json" in capsys.readouterr().err
    with pytest.raises(InputError, match="round folders .* or loaded rounds, got int"):
        attribute_lineage([3, r2], [{"prompt_ids": PROMPT}])


def _per_round(clients, shares):
    """A stand-in for one round's published result of one item: raw scores ordered like the shares."""
    from types import SimpleNamespace

    rows = torch.tensor(shares, dtype=torch.float64)
    return SimpleNamespace(client_ids=list(clients), token_shares=rows, token_scores=rows.log())


def test_cumulative_credit_votes_with_every_round_up_to_the_making_round():
    from types import SimpleNamespace

    from attribution.lineage import _assemble

    # one token, made in round 2: round 1 favours m strongly, round 2 tips it for b by a little
    rounds = {1: [_per_round(["m", "b"], [[0.9, 0.1]])], 2: [_per_round(["m", "b"], [[0.45, 0.55]])]}
    attributed = SimpleNamespace(provenance=SimpleNamespace(round=2), response_ids=[7], client_ids=["m", "b"])
    spans = {"making": {1: [1], 2: [2]}, "cumulative": {1: [1], 2: [1, 2]}}
    making = _assemble(0, attributed, {0: 2}, rounds, [1, 2], spans["making"], "making")
    cumulative = _assemble(0, attributed, {0: 2}, rounds, [1, 2], spans["cumulative"], "cumulative")
    assert making.token_clients == ["b"] and cumulative.token_clients == ["m"]
    assert cumulative.token_shares[0].tolist() == pytest.approx([0.675, 0.325])
    assert cumulative.predicted_client == "m" and cumulative.credit == "cumulative"
    assert set(cumulative.scored_at) == {1, 2} and set(making.scored_at) == {2}


def test_cumulative_credit_on_a_real_chain_takes_every_earlier_rounds_scores(federation):
    _, r1, r2 = federation
    item = {"prompt_ids": PROMPT, "response_ids": [TOKEN, TOKEN, TOKENIZER.convert_tokens_to_ids("q")]}
    result, = attribute_lineage([r1, r2], [item], credit="cumulative")
    one = attribute_batch(load_round(r1), [item])[0]
    assert result.making_round[:2] == [1, 1] and result.making_round[2] is None
    columns = [result.client_ids.index(c) for c in one.client_ids]  # round 1 had m and b
    for t in (0, 1):  # made in round 1, the chain's first: its only round
        assert torch.allclose(result.token_shares[t, columns], one.token_shares[t])
    own = [result.client_ids.index(c) for c in result.attributed.client_ids]
    assert torch.allclose(result.token_shares[2, own], result.attributed.token_shares[2])  # no round made it
    assert result.to_dict()["credit"] == "cumulative"
    with pytest.raises(InputError, match="credit must be one of making, cumulative"):
        attribute_lineage([r1, r2], [item], credit="sum")


def test_one_walk_under_both_credits_equals_a_walk_for_each(federation, monkeypatch):
    from attribution import lineage as lineage_module

    _, r1, r2 = federation
    item = {"prompt_ids": PROMPT, "response_ids": [TOKEN, TOKEN, TOKENIZER.convert_tokens_to_ids("q")]}
    walks = []
    real_walk = lineage_module._walk
    monkeypatch.setattr(lineage_module, "_walk", lambda *a, **k: walks.append(1) or real_walk(*a, **k))
    both = attribute_lineage_credits([r1, r2], [item])
    assert len(walks) == 1 and set(both) == {"making", "cumulative"}
    for credit in ("making", "cumulative"):
        alone, = attribute_lineage([r1, r2], [item], credit=credit)
        ours, = both[credit]
        assert ours.credit == credit and ours.making_round == alone.making_round
        assert ours.token_clients == alone.token_clients and ours.client_ids == alone.client_ids
        assert torch.allclose(ours.token_shares, alone.token_shares)
        assert ours.predicted_client == alone.predicted_client


@pytest.mark.parametrize("credit_modes, message", [("making", "credit_modes must be a non-empty list"),
                                              ((), "credit_modes must be a non-empty list"),
                                              (("making", "sum"), "credit must be one of making, cumulative, got 'sum'")])
def test_bad_credits_are_refused_before_any_round_is_loaded(federation, credit_modes, message):
    _, r1, r2 = federation
    with pytest.raises(InputError, match=message):
        attribute_lineage_credits([r1, r2], [{"prompt_ids": PROMPT}], credit_modes=credit_modes)


def test_cumulative_credit_loads_each_round_once(federation, monkeypatch):
    from attribution import lineage as lineage_module

    _, r1, r2 = federation
    made = {"prompt_ids": PROMPT, "response_ids": [TOKEN, TOKEN]}  # made in round 1
    unmade = {"prompt_ids": PROMPT, "response_ids": [TOKENIZER.convert_tokens_to_ids("q")] * 2}  # by no round
    loads = []
    real_load = lineage_module.load_round
    monkeypatch.setattr(lineage_module, "load_round", lambda path, **kw: loads.append(Path(path)) or real_load(path, **kw))
    result = attribute_lineage([r1, r2], [made, unmade], credit="cumulative")
    # round 1 is scored for both items while the walk holds it, not loaded again afterwards
    assert sorted(loads) == sorted([Path(r1), Path(r2)])
    assert result[0].making_round == [1, 1] and result[1].making_round == [None, None]
