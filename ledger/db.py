"""Engines and sessions for the ledger schema.

Two ways in:

- `make_engine()` / `session_scope()`: the ledger's own pool on ``DATABASE_URL``
  (or the embedded server, via `dbenv`). The CLI, benchmarks and tests use it.
- `session_on_connection(dbapi_connection)`: a session that rides a connection
  somebody else owns, e.g. Django's inside ``transaction.atomic()``, so that a
  ledger write commits or rolls back with the caller's writes. The ledger never
  commits that connection and never rolls it back on close; the owner does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

SCHEMA = "ledger"


def database_url() -> str:
    """The canonical PostgreSQL URL the whole project uses."""
    import dbenv  # local import: dbenv may start the embedded server

    return dbenv.database_url()


def sqlalchemy_url(url: str | None = None) -> str:
    url = url or database_url()
    rest = url.split("://", 1)[1]
    return f"postgresql+psycopg://{rest}"


def make_engine(url: str | None = None, **kwargs) -> Engine:
    """An engine on the given (canonical) URL, or on ``DATABASE_URL``."""
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", int(os.environ.get("LEDGER_POOL_SIZE", "5")))
    return create_engine(sqlalchemy_url(url), **kwargs)


_engine: Engine | None = None


def default_engine() -> Engine:
    """One engine per process; Celery workers call `dispose_default_engine` after fork."""
    global _engine
    if _engine is None:
        _engine = make_engine()
    return _engine


def dispose_default_engine() -> None:
    global _engine
    if _engine is not None:
        _engine.dispose(close=False)  # after fork: drop the parent's sockets, don't close them
        _engine = None


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with Session(engine or default_engine(), expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def session_on_connection(dbapi_connection) -> Iterator[Session]:
    """A session on a psycopg connection whose transaction belongs to the caller.

    Everything the session does is flushed into the caller's open transaction
    inside a savepoint; `Session.commit()` only releases that savepoint. The
    pool never resets the borrowed connection, because SQLAlchemy's default
    reset-on-return is a ROLLBACK that would silently discard the caller's
    uncommitted writes (the bug STYLE.md warns about).
    """
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: dbapi_connection,
        poolclass=StaticPool,
        pool_reset_on_return=None,
    )

    @event.listens_for(engine, "close")
    def _never_close(*_args):  # the owner closes its own connection
        return None

    connection = engine.connect()
    outer = connection.begin()  # psycopg is already in the caller's transaction: no BEGIN is sent
    try:
        with Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False) as s:
            yield s
            s.flush()
    finally:
        # Detach without COMMIT or ROLLBACK: the caller decides.
        outer._deactivate_from_connection()  # noqa: SLF001
        connection.invalidate() if False else None
        connection.detach()
        engine.dispose(close=False)
