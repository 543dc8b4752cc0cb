"""`session_on_connection` rides an owner's psycopg transaction: both writes commit or roll back together.

The owner here is a plain psycopg 3 connection in an explicit transaction,
standing in for Django's connection inside ``transaction.atomic()``.
"""

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

import dbenv
from ledger import balances, fund_pool
from ledger.db import session_on_connection
from ledger.errors import InvalidInput


@pytest.fixture
def owner(ledger_url):
    """An owner connection with a scratch table of its own, in an explicit transaction."""
    conn = psycopg.connect(dbenv.with_scheme(ledger_url, "postgresql"))
    conn.execute("CREATE TABLE IF NOT EXISTS public.owner_writes (note text PRIMARY KEY)")
    conn.commit()
    yield conn
    if not conn.closed:
        conn.rollback()
        conn.close()


def _observed(ledger_url, note, federation) -> tuple[bool, int]:
    """What a separate connection sees: the owner's row, and the ledger pool's balance."""
    with psycopg.connect(dbenv.with_scheme(ledger_url, "postgresql")) as other:
        row = other.execute("SELECT 1 FROM public.owner_writes WHERE note = %s", (note,)).fetchone()
        pool = other.execute(
            "SELECT coalesce(sum(e.amount), 0) FROM ledger.entries e JOIN ledger.accounts a ON a.id = e.account_id "
            "WHERE a.federation = %s AND a.kind = 'pool'", (federation,)).fetchone()[0]
    return row is not None, int(pool)


def _write_both(owner, federation, note) -> None:
    owner.execute("INSERT INTO public.owner_writes (note) VALUES (%s)", (note,))
    session = session_on_connection(owner)
    fund_pool(session, federation=federation, amount=700, currency="EUR", idempotency_key="bridged")
    session.commit()  # only flushes
    assert [b.balance for b in balances(session, federation) if b.kind == "pool"] == [700]
    session.close()  # must not roll the owner's transaction back
    assert owner.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert not owner.closed


def test_it_commits_both_writes_when_the_owner_commits(owner, ledger_url, federation):
    with owner.transaction():
        _write_both(owner, federation, f"commit-{federation}")
        assert _observed(ledger_url, f"commit-{federation}", federation) == (False, 0)  # not yet committed
    assert _observed(ledger_url, f"commit-{federation}", federation) == (True, 700)


def test_it_rolls_both_writes_back_when_the_owner_rolls_back(owner, ledger_url, federation):
    _write_both(owner, federation, f"rollback-{federation}")
    owner.rollback()
    assert _observed(ledger_url, f"rollback-{federation}", federation) == (False, 0)


def test_a_naive_bridge_would_have_lost_the_owners_write(owner, ledger_url, federation):
    """The trap this module avoids: a plain engine on the owner's connection rolls it back on close."""
    naive = create_engine("postgresql+psycopg://", creator=lambda: owner, poolclass=NullPool)
    owner.execute("INSERT INTO public.owner_writes (note) VALUES (%s)", (f"naive-{federation}",))
    session = Session(bind=naive)
    session.execute(text("SELECT 1"))
    session.close()  # the pool "resets" (rolls back) and, with NullPool, even closes the owner's connection
    assert owner.closed or owner.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert _observed(ledger_url, f"naive-{federation}", federation) == (False, 0)


def test_it_refuses_what_is_not_an_open_psycopg_connection(ledger_url):
    with pytest.raises(InvalidInput, match="psycopg 3 connection"):
        session_on_connection(object())
    closed = psycopg.connect(dbenv.with_scheme(ledger_url, "postgresql"))
    closed.close()
    with pytest.raises(InvalidInput, match="closed connection"):
        session_on_connection(closed)
