"""Allocation posting, holds for flagged clients, and the flag review workflow."""

import pytest

from ledger import (
    AllocationRules,
    balances,
    forfeit_held,
    fund_pool,
    list_flags,
    post_allocation,
    record_findings,
    release_held,
    review_flag,
    verify,
)
from ledger.errors import (
    HoldActive,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    InvalidTransition,
    NotFound,
    NothingToAllocate,
)
from ledger.flags import blocking_clients
from ledger.screening import Finding

CONTRIBUTIONS = {"alice": "0.5", "bob": "0.3", "mallory": "0.2"}


def _balance(session, federation, kind, client=""):
    return sum(b.balance for b in balances(session, federation) if (b.kind, b.client_id) == (kind, client))


def _allocate(session, federation, pool=10_000, contributions=CONTRIBUTIONS, **kwargs):
    return post_allocation(session, federation=federation, period="2025-06", currency="EUR", pool_amount=pool,
                           contributions=contributions, **kwargs)


def _flag(session, federation, client="mallory", method="update-robust-z/1"):
    [view] = record_findings(session, federation=federation, period="2025-06",
                             findings=[Finding(client, method, 5.0, 1e-6, 1e-4, {"rounds": [1, 2, 3]})])
    return view


@pytest.fixture
def funded(session, federation):
    fund_pool(session, federation=federation, amount=10_000, currency="EUR", idempotency_key="fund")
    return federation


def test_it_posts_an_allocation_as_one_balanced_transaction(session, funded):
    posted = _allocate(session, funded)
    session.commit()
    assert posted.allocation.amounts == {"alice": 5000, "bob": 3000, "mallory": 2000}
    assert _balance(session, funded, "pool") == 0
    assert [_balance(session, funded, "payable", c) for c in ("alice", "bob", "mallory")] == [5000, 3000, 2000]
    assert posted.receipt.metadata["contributions_sha256"] and posted.receipt.seq == 2
    assert verify(session, funded).ok


def test_it_allocates_a_period_once_and_refuses_changed_inputs_under_the_same_key(session, funded):
    first = _allocate(session, funded)
    again = _allocate(session, funded)
    assert again.replayed and again.receipt.id == first.receipt.id
    assert again.allocation.amounts == first.allocation.amounts
    assert _balance(session, funded, "payable", "alice") == 5000
    with pytest.raises(IdempotencyConflict):
        _allocate(session, funded, contributions={**CONTRIBUTIONS, "alice": "0.51"})


def test_it_refuses_to_allocate_more_than_the_pool_holds(session, federation):
    fund_pool(session, federation=federation, amount=100, currency="EUR", idempotency_key="small")
    with pytest.raises(InsufficientFunds, match="holds 100"):
        _allocate(session, federation, pool=101)


def test_it_refuses_an_allocation_that_pays_nobody(session, funded):
    with pytest.raises(NothingToAllocate, match="suspended"):
        _allocate(session, funded, rules=AllocationRules(excluded=frozenset(CONTRIBUTIONS)))
    with pytest.raises(InvalidInput, match="basis"):
        _allocate(session, funded, basis="vibes")


def test_it_holds_the_payout_of_a_flagged_client(session, funded):
    _flag(session, funded)
    posted = _allocate(session, funded)
    assert posted.allocation.held == {"mallory": 2000}
    assert _balance(session, funded, "held", "mallory") == 2000
    assert _balance(session, funded, "payable", "mallory") == 0
    assert blocking_clients(session, funded) == {"mallory"}


def test_it_can_exclude_flagged_clients_instead(session, funded):
    _flag(session, funded)
    posted = _allocate(session, funded, rules=AllocationRules(flagged_policy="exclude"))
    assert posted.allocation.amounts == {"alice": 6250, "bob": 3750}
    assert posted.allocation.not_paid == {"mallory": "flagged"}


def test_it_keeps_payouts_held_while_a_flag_is_confirmed_and_forfeits_them(session, funded):
    flag = _flag(session, funded)
    _allocate(session, funded)
    review = review_flag(session, federation=funded, flag_id=flag.id, state="confirmed", actor="auditor")
    assert review.changed and review.flag.state == "confirmed" and review.released == []
    with pytest.raises(HoldActive, match="confirmed"):
        release_held(session, federation=funded, client_id="mallory")
    forfeited = forfeit_held(session, federation=funded, client_id="mallory", actor="auditor")
    session.commit()
    assert [r.kind for r in forfeited] == ["forfeit"]
    assert _balance(session, funded, "held", "mallory") == 0 and _balance(session, funded, "pool") == 2000
    assert verify(session, funded).ok


def test_dismissing_the_last_flag_releases_the_held_payout(session, funded):
    update_flag = _flag(session, funded)
    evidence_flag = _flag(session, funded, method="evidence-binomial-bh/1")
    _allocate(session, funded)
    first = review_flag(session, federation=funded, flag_id=update_flag.id, state="dismissed", actor="auditor")
    assert first.released == []  # another flag still blocks the client
    second = review_flag(session, federation=funded, flag_id=evidence_flag.id, state="dismissed", actor="auditor",
                         note="false positive")
    assert [r.kind for r in second.released] == ["release"]
    assert _balance(session, funded, "payable", "mallory") == 2000
    assert _balance(session, funded, "held", "mallory") == 0
    with pytest.raises(HoldActive, match="no confirmed flag"):
        forfeit_held(session, federation=funded, client_id="mallory")


def test_it_records_the_review_history_and_enforces_transitions(session, funded):
    flag = _flag(session, funded)
    assert _flag(session, funded).id == flag.id  # recording the same finding again keeps the flag
    review_flag(session, federation=funded, flag_id=flag.id, state="confirmed", actor="a")
    repeat = review_flag(session, federation=funded, flag_id=flag.id, state="confirmed", actor="a")
    assert not repeat.changed
    with pytest.raises(InvalidTransition, match="it can move to dismissed"):
        review_flag(session, federation=funded, flag_id=flag.id, state="open", actor="a")
    review_flag(session, federation=funded, flag_id=flag.id, state="dismissed", actor="b", note="appeal upheld")
    review_flag(session, federation=funded, flag_id=flag.id, state="open", actor="c")
    [view] = list_flags(session, funded)
    assert [h["state"] for h in view.history] == ["open", "confirmed", "dismissed", "open"]
    assert [h["actor"] for h in view.history] == ["screening", "a", "b", "c"]
    assert list_flags(session, funded, state="dismissed") == []
    session.commit()
    assert verify(session, funded).ok


def test_it_refuses_bad_reviews(session, funded):
    flag = _flag(session, funded)
    with pytest.raises(InvalidInput, match="state must be"):
        review_flag(session, federation=funded, flag_id=flag.id, state="closed", actor="a")
    with pytest.raises(NotFound, match="no flag"):
        review_flag(session, federation=funded, flag_id=10**12, state="confirmed", actor="a")
    with pytest.raises(InvalidInput, match="actor"):
        review_flag(session, federation=funded, flag_id=flag.id, state="confirmed", actor="")
