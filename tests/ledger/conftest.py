"""Fixtures for the ledger: a fresh database on the real server, migrated by alembic.

The ledger stands alone (no Django), so its tests create
``protoken_test_ledger_<pid>`` on the server of `dbenv.database_url()`, run
`ledger.migrate.upgrade` on it, and drop it at the end. Every ledger row
belongs to a federation, so each test uses a fresh federation name and never
sees another test's rows (nothing can be truncated anyway: the ledger
refuses it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.orm import Session

import dbenv
from ledger import db
from ledger.migrate import upgrade


def _admin(url: str) -> psycopg.Connection:
    # The maintenance database: the one named in DATABASE_URL may not exist yet on a fresh server.
    return psycopg.connect(dbenv.with_scheme(dbenv.with_database(url, "postgres"), "postgresql"), autocommit=True)


@pytest.fixture(scope="session")
def ledger_url() -> Iterator[str]:
    server = dbenv.database_url()
    name = f"protoken_test_ledger_{os.getpid()}"
    with _admin(server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = dbenv.with_database(server, name)
    upgrade(url)
    yield url
    db.dispose_engine()
    with _admin(server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def federation() -> str:
    return f"fed-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def session(ledger_url: str) -> Iterator[Session]:
    """A session whose work the test commits itself (``session.commit()``); rolled back if left open."""
    session = Session(bind=db.get_engine(ledger_url), expire_on_commit=False)
    yield session
    session.rollback()
    session.close()


@pytest.fixture
def raw(ledger_url: str) -> Iterator[psycopg.Connection]:
    """A plain psycopg connection to the test database, for direct SQL the library would never send."""
    with psycopg.connect(dbenv.with_scheme(ledger_url, "postgresql")) as conn:
        yield conn


@pytest.fixture
def populate():
    """``populate(session, federation)`` fills every ledger table for that federation and commits."""
    return fill_every_table


def fill_every_table(session: Session, federation: str) -> None:
    """Rows in every ledger table: funding, an allocation with a hold, a flag with a review, a reversal, an export."""
    from ledger import (
        export_payouts,
        fund_pool,
        post_allocation,
        post_transaction,
        record_findings,
        reverse_transaction,
        review_flag,
        transfer,
    )
    from ledger.screening import Finding

    fund_pool(session, federation=federation, amount=10_000, currency="EUR", idempotency_key="fund")
    [flag] = record_findings(session, federation=federation, period="2025-06", findings=[
        Finding("mallory", "update-robust-z/1", 4.25, 1e-5, 3e-4, {"rounds": [1, 2], "median_z": 4.25})])
    post_allocation(session, federation=federation, period="2025-06", currency="EUR", pool_amount=10_000,
                    contributions={"alice": "0.5", "bob": "0.3", "mallory": "0.2"})
    review_flag(session, federation=federation, flag_id=flag.id, state="confirmed", actor="auditor")
    mistake = post_transaction(session, federation=federation, kind="adjustment", idempotency_key="oops",
                               legs=transfer(("pool", ""), ("payable", "bob"), 1, "EUR"))
    reverse_transaction(session, federation=federation, transaction_id=mistake.id, reason="posted by mistake")
    export_payouts(session, federation=federation, period="2025-06", currency="EUR")
    session.commit()
