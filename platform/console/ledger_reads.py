"""Reads from the ledger (flags, payout exports), on Django's own database connection.

The ledger is a SQLAlchemy library in the same Postgres database (schema
`ledger`). The console only reads it, so the session rides Django's
connection (`ledger.session_on_connection`): one connection per request,
and it reads whatever database Django is on, the test database included.
The ledger names a federation by its slug.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.db import connection
from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import FlagView, list_flags, session_on_connection
from ledger.models import PayoutExport

BLOCKING_STATES = ("open", "confirmed")


@contextmanager
def ledger_session() -> Iterator[Session]:
    connection.ensure_connection()
    session = session_on_connection(connection.connection)
    try:
        yield session
    finally:
        session.close()


def federation_flags(*, federation_slug: str, client_id: str | None = None) -> list[FlagView]:
    """The federation's flags (optionally one client's), newest first."""
    with ledger_session() as session:
        flags = list_flags(session, federation_slug, client_id=client_id)
    return sorted(flags, key=lambda f: f.id, reverse=True)


def flags_for_period(*, federation_slug: str, since: datetime, until: datetime) -> list[FlagView]:
    """Flags raised in the period, plus every flag still blocking a client now."""
    return [
        f
        for f in federation_flags(federation_slug=federation_slug)
        if since <= f.created_at < until or f.state in BLOCKING_STATES
    ]


def payout_exports(*, federation_slug: str) -> list[dict]:
    """The federation's payout export runs with their file hashes, newest first."""
    query = (
        select(PayoutExport)
        .where(PayoutExport.federation == federation_slug)
        .order_by(PayoutExport.created_at.desc(), PayoutExport.id.desc())
    )
    with ledger_session() as session:
        return [
            {
                "id": e.id,
                "period": e.period,
                "currency": e.currency,
                "csv_sha256": e.csv_sha256,
                "json_sha256": e.json_sha256,
                "created_at": e.created_at,
            }
            for e in session.execute(query).scalars()
        ]
