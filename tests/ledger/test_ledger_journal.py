"""Double-entry core against real Postgres: balance, idempotency, reversals, and the database's own guards."""

import psycopg
import pytest
from sqlalchemy import text

from ledger import journal
from ledger.errors import IdempotencyConflict, InvalidInput, NotFound, NotReversible, UnbalancedTransaction
from ledger.journal import Leg, balances, post_transaction, reverse_transaction, transfer
from ledger.models import APPEND_ONLY_TABLES
from ledger.verify import verify


def _fund(session, federation, amount=1000, key="fund-1", currency="EUR"):
    return post_transaction(session, federation=federation, kind="funding", idempotency_key=key,
                            legs=transfer(("funding", ""), ("pool", ""), amount, currency))


def _balance_map(session, federation):
    return {(b.kind, b.client_id, b.currency): b.balance for b in balances(session, federation)}


def test_it_posts_a_balanced_transaction_and_chains_it(session, federation):
    first = _fund(session, federation)
    second = _fund(session, federation, 250, key="fund-2")
    session.commit()
    assert (first.seq, second.seq) == (1, 2)
    assert _balance_map(session, federation) == {("funding", "", "EUR"): -1250, ("pool", "", "EUR"): 1250}
    stored = journal.get_transaction(session, federation, seq=2)
    assert stored.prev_hash == first.hash and stored.hash == second.hash
    assert verify(session, federation).ok


def test_it_returns_the_original_for_a_retried_key_and_writes_nothing(session, federation):
    first = _fund(session, federation)
    again = _fund(session, federation)
    session.commit()
    assert again.replayed and not first.replayed
    assert (again.id, again.hash) == (first.id, first.hash)
    assert _balance_map(session, federation)[("pool", "", "EUR")] == 1000


def test_it_refuses_a_reused_key_with_a_different_body(session, federation):
    _fund(session, federation, 1000)
    with pytest.raises(IdempotencyConflict, match="different request"):
        _fund(session, federation, 999)


def test_it_refuses_unbalanced_legs_before_touching_the_database(session, federation):
    with pytest.raises(UnbalancedTransaction, match="sum to {'EUR': 1}"):
        post_transaction(session, federation=federation, kind="adjustment", idempotency_key="k",
                         legs=[Leg("pool", "", 5, "EUR"), Leg("funding", "", -4, "EUR")])
    with pytest.raises(UnbalancedTransaction, match="per currency"):
        post_transaction(session, federation=federation, kind="adjustment", idempotency_key="k",
                         legs=[Leg("pool", "", 5, "EUR"), Leg("funding", "", -5, "USD")])


@pytest.mark.parametrize("leg, message", [
    (dict(kind="pool", client_id="a", amount=1, currency="EUR"), "belongs to the federation"),
    (dict(kind="payable", client_id="", amount=1, currency="EUR"), "invalid client id"),
    (dict(kind="wallet", client_id="a", amount=1, currency="EUR"), "account kind"),
    (dict(kind="pool", client_id="", amount=0, currency="EUR"), "must not be zero"),
    (dict(kind="pool", client_id="", amount=1.5, currency="EUR"), "integer number of minor units"),
    (dict(kind="pool", client_id="", amount=2**63, currency="EUR"), "64-bit"),
    (dict(kind="pool", client_id="", amount=1, currency="euro"), "invalid currency"),
])
def test_it_refuses_malformed_legs(leg, message):
    with pytest.raises(InvalidInput, match=message):
        Leg(**leg)


def test_it_reverses_a_transaction_exactly_once(session, federation):
    _fund(session, federation)
    payout = post_transaction(session, federation=federation, kind="adjustment", idempotency_key="adj",
                              legs=transfer(("pool", ""), ("payable", "alice"), 300, "EUR"))
    before = _balance_map(session, federation)
    reversal = reverse_transaction(session, federation=federation, transaction_id=payout.id, reason="typo")
    session.commit()
    after = _balance_map(session, federation)
    assert after[("payable", "alice", "EUR")] == 0 and after[("pool", "", "EUR")] == 1000
    assert before[("payable", "alice", "EUR")] == 300
    assert reversal.metadata["reverses_seq"] == payout.seq
    assert reverse_transaction(session, federation=federation, transaction_id=payout.id, reason="typo").replayed
    with pytest.raises(NotReversible, match="already reversed"):
        reverse_transaction(session, federation=federation, transaction_id=payout.id, idempotency_key="other")
    with pytest.raises(NotReversible, match="itself a reversal"):
        reverse_transaction(session, federation=federation, transaction_id=reversal.id)
    with pytest.raises(NotFound, match="no transaction"):
        reverse_transaction(session, federation=federation, transaction_id=10**12)


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_the_database_refuses_update_delete_and_truncate(session, raw, federation, table, populate):
    populate(session, federation)
    for statement in (f"UPDATE ledger.{table} SET {_column(table)} = {_column(table)}",
                      f"DELETE FROM ledger.{table}", f"TRUNCATE ledger.{table} CASCADE"):
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            raw.execute(statement)
        raw.rollback()


def _column(table: str) -> str:
    return "entry_id" if table == "export_items" else "id"


def _direct_entries(raw, txn_id: int, account_ids: list[int], amounts: list[int]) -> None:
    for account, amount in zip(account_ids, amounts, strict=True):
        raw.execute("INSERT INTO ledger.entries (transaction_id, account_id, currency, amount) "
                    "VALUES (%s, %s, 'EUR', %s)", (txn_id, account, amount))


def _direct_transaction(raw, federation: str, key: str) -> int:
    return raw.execute(
        "INSERT INTO ledger.transactions (federation, seq, kind, idempotency_key, request_hash, description, "
        "metadata, created_at, prev_hash, hash) VALUES (%s, 99, 'adjustment', %s, '', '', '{}', now(), '', '') "
        "RETURNING id", (federation, key)).fetchone()[0]


def _account_ids(session, federation) -> list[int]:
    return list(session.execute(text("SELECT id FROM ledger.accounts WHERE federation = :f ORDER BY kind"),
                                {"f": federation}).scalars())


def test_the_database_refuses_unbalanced_entries_at_commit(session, raw, federation):
    _fund(session, federation)
    session.commit()
    accounts = _account_ids(session, federation)
    txn = _direct_transaction(raw, federation, "sneaky")
    _direct_entries(raw, txn, accounts, [10, -9])
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        raw.commit()


def test_the_database_refuses_a_transaction_without_entries(raw, session, federation):
    _direct_transaction(raw, federation, "empty")
    with pytest.raises(psycopg.errors.CheckViolation, match="has no entries"):
        raw.commit()


def test_the_database_rechecks_entries_added_after_an_immediate_check(session, raw, federation):
    _fund(session, federation)
    session.commit()
    accounts = _account_ids(session, federation)
    txn = _direct_transaction(raw, federation, "late")
    _direct_entries(raw, txn, accounts, [10, -10])
    raw.execute("SET CONSTRAINTS ALL IMMEDIATE")  # checks now and remembers this transaction as balanced
    raw.execute("SET CONSTRAINTS ALL DEFERRED")
    _direct_entries(raw, txn, accounts[:1], [5])
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        raw.commit()


def test_the_database_refuses_entries_added_to_a_committed_transaction(session, raw, federation):
    receipt = _fund(session, federation)
    session.commit()
    _direct_entries(raw, receipt.id, _account_ids(session, federation)[:1], [7])
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        raw.commit()


def test_it_lists_balances_filtered_by_client_and_currency(session, federation):
    _fund(session, federation, 100, key="e")
    _fund(session, federation, 50, key="u", currency="USD")
    post_transaction(session, federation=federation, kind="adjustment", idempotency_key="a",
                     legs=transfer(("pool", ""), ("payable", "bob"), 40, "USD"))
    assert [(b.kind, b.balance) for b in balances(session, federation, currency="USD", client_id="bob")] == [
        ("payable", 40)]
    assert sum(b.balance for b in balances(session, federation)) == 0
