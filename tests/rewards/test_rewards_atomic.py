"""Ledger and Django writes of a settlement commit together, or roll back together.

These tests commit for real (`transactional_db`), and look from a second,
independent connection, so they see only what was committed.
"""

from __future__ import annotations

import psycopg
import pytest
from conftest import add_generation, make_federation, make_round_row, settle
from rewards import services
from rewards.harm import harm_policy_create

import dbenv

SHARES = {"alice": 0.5, "bob": 0.3, "carol": 0.2}


def _committed(test_db_url: str, slug: str) -> dict:
    """Committed state seen from another connection: ledger transactions, settlements and harm marks."""
    with psycopg.connect(dbenv.with_scheme(test_db_url, "postgresql")) as other:
        def one(sql: str) -> int:
            return other.execute(sql, (slug,)).fetchone()[0]

        return {
            "ledger_transactions": one("SELECT count(*) FROM ledger.transactions WHERE federation = %s"),
            "ledger_flags": one("SELECT count(*) FROM ledger.flags WHERE federation = %s"),
            "settlements": one("SELECT count(*) FROM rewards_settlement s JOIN registry_federation f "
                               "ON f.id = s.federation_id WHERE f.slug = %s"),
            "harm_marks": one("SELECT count(*) FROM rewards_harmmark m JOIN registry_federation f "
                              "ON f.id = m.federation_id WHERE f.slug = %s"),
        }


@pytest.fixture
def committed_fed(transactional_db):
    fed = make_federation()
    round0 = make_round_row(fed, 0)
    for _ in range(20):
        add_generation(fed, round0, {"alice": 0.4, "bob": 0.3, "carol": 0.2, "dave": 0.1})
    for _ in range(6):
        add_generation(fed, round0, {"alice": 0.1, "bob": 0.1, "carol": 0.1, "dave": 0.7}, response="PWNED")
    harm_policy_create(federation=fed, name="sentinel", keywords=["pwned"], actor="ops")
    return fed


def test_it_commits_ledger_and_django_writes_together(committed_fed, test_db_url):
    settle(committed_fed, pool=1000)
    assert _committed(test_db_url, committed_fed.slug) == {
        "ledger_transactions": 2, "ledger_flags": 1, "settlements": 1, "harm_marks": 6}  # funding + allocation


def test_a_failure_after_the_ledger_write_rolls_back_both_sides(committed_fed, test_db_url, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full while writing the settlement row")

    monkeypatch.setattr(services, "_save_settlement", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        settle(committed_fed, pool=1000)
    assert _committed(test_db_url, committed_fed.slug) == {
        "ledger_transactions": 0, "ledger_flags": 0, "settlements": 0, "harm_marks": 0}
    monkeypatch.undo()
    result = settle(committed_fed, pool=1000)  # the retry settles the period normally, once
    assert not result.replayed and result.settlement.held_amount > 0
    assert _committed(test_db_url, committed_fed.slug)["ledger_transactions"] == 2


def test_a_retry_after_commit_writes_nothing(committed_fed, test_db_url):
    settle(committed_fed, pool=1000)
    before = _committed(test_db_url, committed_fed.slug)
    assert settle(committed_fed, pool=1000).replayed
    assert _committed(test_db_url, committed_fed.slug) == before
