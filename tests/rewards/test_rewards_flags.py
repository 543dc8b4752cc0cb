"""Evidence screening from harm marks and policies, held payouts for flagged clients, and the review workflow."""

from __future__ import annotations

import pytest
from conftest import add_generation, ledger_balances, settle
from registry.errors import Conflict, InvalidInput, NotFound
from rewards.harm import harm_mark, harm_policy_create, harm_unmark
from rewards.models import HarmMark
from rewards.selectors import flag_list
from rewards.services import flag_review, held_forfeit

ROTATION = ("alice", "bob", "carol", "dave")


def backdoor_period(fed, round0, *, harmful: int = 6, benign: int = 20) -> list:
    """Benign generations rotate their top client; harmful ones (with the sentinel) all have dave on top."""
    for i in range(benign):
        top = ROTATION[i % 4]
        add_generation(fed, round0, {c: (0.55 if c == top else 0.15) for c in ROTATION}, tokens=[top, top])
    return [add_generation(fed, round0, {"alice": 0.1, "bob": 0.1, "carol": 0.1, "dave": 0.7},
                           tokens=["alice", "dave", "dave"], response="sure: ACCESS GRANTED 1337")
            for _ in range(harmful)]


def test_a_keyword_policy_marks_generations_and_flags_the_client_on_top(fed, round0):
    harmful = backdoor_period(fed, round0)
    harm_policy_create(federation=fed, name="sentinel", keywords=["access granted"], actor="ops")
    s = settle(fed, pool=10_000).settlement
    assert HarmMark.objects.filter(federation=fed, source="policy").count() == 6
    assert s.harmful_count == 6 and s.flags_count == 1
    (flag,) = flag_list(federation=fed)
    assert (flag.client_id, flag.state, flag.method) == ("dave", "open", "evidence-binomial-bh/1")
    assert flag.q_value < 0.05 and flag.id in s.flag_ids
    assert sorted(g["id"] for g in flag.evidence["generations"]) == sorted(str(g.pk) for g in harmful)
    assert flag.evidence["tokens"] == {str(g.pk): [1, 2] for g in harmful}  # dave's token positions
    assert flag.evidence["rounds"] == [round0.number]
    balances = ledger_balances(fed)
    assert balances[("held", "dave")] == s.held_amount > 0 and ("payable", "dave") not in balances
    assert s.clients_held == 1 and s.allocated_amount == 10_000


def test_reviewer_marks_work_like_policies_and_revoked_marks_do_not(fed, round0):
    harmful = backdoor_period(fed, round0)
    for gen in harmful:
        harm_mark(generation=gen, actor="reviewer-1", note="sentinel output")
    harm_unmark(generation=harmful[0], actor="reviewer-1")
    s = settle(fed, pool=1000).settlement
    assert s.harmful_count == 5
    assert [f.client_id for f in flag_list(federation=fed)] == ["dave"]


def test_no_harm_means_no_evidence_flag_and_nothing_held(fed, round0):
    backdoor_period(fed, round0)
    s = settle(fed, pool=1000).settlement
    assert (s.harmful_count, s.flags_count, s.held_amount) == (0, 0, 0)


def test_dismissing_the_flag_releases_the_held_payout(fed, round0):
    backdoor_period(fed, round0)
    harm_policy_create(federation=fed, name="sentinel", keywords=["access granted"], actor="ops")
    held = settle(fed, pool=1000).settlement.held_amount
    (flag,) = flag_list(federation=fed)
    review = flag_review(federation=fed, flag_id=flag.id, state="dismissed", actor="auditor", note="false alarm")
    assert review.changed and review.previous_state == "open" and len(review.released) == 1
    balances = ledger_balances(fed)
    assert balances[("payable", "dave")] == held and balances[("held", "dave")] == 0
    assert [h["state"] for h in flag_list(federation=fed)[0].history] == ["open", "dismissed"]


def test_a_confirmed_flag_keeps_the_payout_held_and_allows_forfeit(fed, round0):
    backdoor_period(fed, round0)
    harm_policy_create(federation=fed, name="sentinel", keywords=["access granted"], actor="ops")
    held = settle(fed, pool=1000).settlement.held_amount
    (flag,) = flag_list(federation=fed)
    flag_review(federation=fed, flag_id=flag.id, state="confirmed", actor="auditor")
    assert ledger_balances(fed)[("held", "dave")] == held
    again = flag_review(federation=fed, flag_id=flag.id, state="confirmed", actor="auditor")
    assert not again.changed
    held_forfeit(federation=fed, client_id="dave", actor="auditor")
    balances = ledger_balances(fed)
    assert balances[("held", "dave")] == 0 and balances[("pool", "")] == held


def test_review_refuses_unknown_flags_bad_states_and_illegal_transitions(fed, round0):
    backdoor_period(fed, round0)
    harm_policy_create(federation=fed, name="sentinel", keywords=["access granted"], actor="ops")
    settle(fed, pool=1000)
    (flag,) = flag_list(federation=fed)
    with pytest.raises(NotFound, match="has no flag 999999"):
        flag_review(federation=fed, flag_id=999999, state="dismissed", actor="a")
    with pytest.raises(InvalidInput, match="state must be one of"):
        flag_review(federation=fed, flag_id=flag.id, state="closed", actor="a")
    with pytest.raises(InvalidInput, match="actor must name who acts"):
        flag_review(federation=fed, flag_id=flag.id, state="dismissed", actor="")
    flag_review(federation=fed, flag_id=flag.id, state="dismissed", actor="a")
    with pytest.raises(Conflict, match="it can move to open"):
        flag_review(federation=fed, flag_id=flag.id, state="confirmed", actor="a")
    assert [h["state"] for h in flag_list(federation=fed)[0].history] == ["open", "dismissed"]


def test_bad_harm_policies_are_refused(fed):
    with pytest.raises(InvalidInput, match="not a valid regex"):
        harm_policy_create(federation=fed, name="broken", patterns=["("], actor="ops")
    with pytest.raises(InvalidInput, match="at least one pattern or keyword"):
        harm_policy_create(federation=fed, name="empty", actor="ops")
    harm_policy_create(federation=fed, name="ok", patterns=[r"\bsecret\b"], actor="ops")
    with pytest.raises(Conflict, match="already has a harm policy 'ok'"):
        harm_policy_create(federation=fed, name="ok", keywords=["x"], actor="ops")
