"""`period_settle`: contributions from stored attributions, exact allocation, idempotent re-runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import END, START, add_generation, ledger_balances, settle
from registry.errors import Conflict
from registry.models import Client
from rewards.models import Settlement
from rewards.rules import SettlementRules

SHARES = {"alice": 0.5, "bob": 0.3, "carol": 0.2}


def test_it_pays_the_pool_in_proportion_to_summed_sequence_shares(fed, round0):
    for _ in range(4):
        add_generation(fed, round0, SHARES)
    add_generation(fed, round0, {"alice": 1.0}, at=END + timedelta(minutes=1))  # next period: not counted
    result = settle(fed, pool=1000)
    s = result.settlement
    assert not result.replayed and s.status == "settled"
    assert (s.allocated_amount, s.held_amount, s.retained_amount, s.clients_paid) == (1000, 0, 0, 3)
    assert s.generations_count == 4 and s.flags_count == 0 and s.ledger_seq is not None and len(s.ledger_hash) == 64
    balances = ledger_balances(fed)
    assert {c: balances[("payable", c)] for c in SHARES} == {"alice": 500, "bob": 300, "carol": 200}
    assert balances[("pool", "")] == 0 and balances[("funding", "")] == -1000
    assert sum(balances.values()) == 0


def test_it_only_counts_the_latest_run_of_a_generation(fed, round0):
    from audits.models import AttributionRun, ClientAttribution

    gen = add_generation(fed, round0, {"alice": 0.9, "bob": 0.1})
    old = AttributionRun.objects.get(generation=gen)
    newer = AttributionRun.objects.create(**{f.name: getattr(old, f.name) for f in old._meta.fields
                                             if f.name not in ("id", "config_hash")}, config_hash="f" * 64)
    for row in ClientAttribution.objects.filter(run=old):
        row.pk, row.run = None, newer
        row.share = 0.25 if row.client.client_id == "alice" else 0.75
        row.save()
    settle(fed, pool=100)
    balances = ledger_balances(fed)
    assert (balances[("payable", "alice")], balances[("payable", "bob")]) == (25, 75)


def test_token_mass_counts_tokens_where_a_client_is_top_1(fed, round0):
    add_generation(fed, round0, {"alice": 0.9, "bob": 0.1}, tokens=["alice", "bob", "bob", "bob"])
    add_generation(fed, round0, {"alice": 0.9, "bob": 0.1}, tokens=["carol", "bob", "bob", "bob"])
    settle(fed, pool=800, basis="token_mass")
    balances = ledger_balances(fed)
    assert [balances[("payable", c)] for c in ("alice", "bob", "carol")] == [100, 600, 100]


def test_token_mass_can_sum_top_shares_instead(fed, round0):
    add_generation(fed, round0, {"alice": 1.0}, tokens=["alice", "bob", "bob"])
    settle(fed, pool=300, basis="token_mass", rules=SettlementRules(token_weight="top_share"))
    balances = ledger_balances(fed)
    assert (balances[("payable", "alice")], balances[("payable", "bob")]) == (100, 200)


def test_rerunning_a_settled_period_is_a_replay_and_pays_nothing_twice(fed, round0):
    add_generation(fed, round0, SHARES)
    first = settle(fed, pool=1000)
    before = ledger_balances(fed)
    add_generation(fed, round0, {"carol": 1.0})  # late attribution: the settled period does not move
    again = settle(fed, pool=1000)
    assert again.replayed and again.settlement.pk == first.settlement.pk
    assert ledger_balances(fed) == before
    assert Settlement.objects.filter(federation=fed).count() == 1


def test_a_different_request_for_a_settled_period_is_refused(fed, round0):
    add_generation(fed, round0, SHARES)
    settle(fed, pool=1000)
    before = ledger_balances(fed)
    with pytest.raises(Conflict, match="already settled with pool 1000"):
        settle(fed, pool=2000)
    assert ledger_balances(fed) == before


def test_suspended_and_excluded_clients_get_nothing(fed, round0):
    Client.objects.filter(federation=fed, client_id="carol").update(status="suspended")
    add_generation(fed, round0, {"alice": 0.5, "bob": 0.25, "carol": 0.25})
    settle(fed, pool=90, rules=SettlementRules(exclude=("bob",)))
    balances = ledger_balances(fed)
    assert balances[("payable", "alice")] == 90
    assert ("payable", "bob") not in balances and ("payable", "carol") not in balances


def test_cap_and_minimum_payout_reach_the_ledger(fed, round0):
    add_generation(fed, round0, {"alice": 0.9, "bob": 0.09, "carol": 0.01})
    result = settle(fed, pool=1000, rules=SettlementRules(cap_per_client=600, minimum_payout=50))
    balances = ledger_balances(fed)
    assert balances[("payable", "alice")] == 600 and balances[("payable", "bob")] == 400
    assert ("payable", "carol") not in balances
    assert result.settlement.rules["cap_per_client"] == 600


def test_an_empty_period_is_recorded_without_posting_and_can_be_settled_later(fed, round0):
    empty = settle(fed, pool=1000)
    assert empty.settlement.status == "empty" and empty.settlement.ledger_seq is None
    assert ledger_balances(fed) == {}
    add_generation(fed, round0, {"alice": 1.0})
    later = settle(fed, pool=1000)
    assert later.settlement.pk == empty.settlement.pk and later.settlement.status == "settled"
    assert ledger_balances(fed)[("payable", "alice")] == 1000


def test_periods_are_half_open(fed, round0):
    add_generation(fed, round0, {"alice": 1.0}, at=START)
    add_generation(fed, round0, {"bob": 1.0}, at=END)
    settle(fed, pool=10)
    assert ledger_balances(fed) == {("funding", ""): -10, ("pool", ""): 0, ("payable", "alice"): 10}
