"""A ledger session on Django's own connection, so ledger and Django writes share one transaction.

`ledger.session_on_connection` lends the session a proxy whose commit,
rollback and close do nothing: ``transaction.atomic()`` alone decides. A
session opened outside an atomic block would run in autocommit, each ledger
statement committing on its own, so that is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection
from sqlalchemy.orm import Session

from ledger import session_on_connection


class NotInTransaction(RuntimeError):
    """A ledger session was asked for outside ``transaction.atomic()``."""


@contextmanager
def ledger_session() -> Iterator[Session]:
    if not connection.in_atomic_block:
        raise NotInTransaction("ledger writes from the platform must run inside transaction.atomic()")
    connection.ensure_connection()
    session = session_on_connection(connection.connection)
    try:
        yield session
        session.flush()
    finally:
        session.close()
