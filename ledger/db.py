"""Engines and sessions: the ledger's own pool, and a session riding someone else's connection.

`session_scope` is the normal unit of work: one session on a pooled engine,
committed on success and rolled back on error.

`session_on_connection` serves the platform, whose ledger writes must commit
or roll back together with Django's inside ``transaction.atomic()``. A
SQLAlchemy engine whose ``creator`` returns Django's psycopg connection looks
right but is a trap: the pool "resets" the connection when the session closes
by calling ``rollback()`` on it, which silently discards Django's pending
work (and ``session.commit()`` would commit it early). So the session gets a
proxy of the connection whose ``commit``, ``rollback`` and ``close`` do
nothing: the session can only execute and flush, and the owner decides. Its
cursors are plain server-binding ``psycopg.Cursor`` objects with psycopg's
default JSON loaders, because Django replaces the jsonb loader and the cursor
factory on its own connection and the ledger needs neither.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import JsonbLoader, JsonLoader
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

import dbenv
from ledger.errors import InvalidInput

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def sqlalchemy_url(url: str | None = None) -> str:
    """`url` (canonical ``postgresql://`` or already ``postgresql+psycopg://``) for SQLAlchemy."""
    if url is not None and not url.startswith(("postgresql", "postgres")):
        raise InvalidInput(f"database URL must start with postgresql://, got {url.split('://')[0]!r}://")
    return dbenv.sqlalchemy_url(url)


def get_engine(url: str | None = None) -> Engine:
    """The pooled engine for `url` (default: `dbenv.database_url()`), created once per process."""
    key = sqlalchemy_url(url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(key, pool_pre_ping=True, use_native_hstore=False)
            _engines[key] = engine
        return engine


def dispose_engine() -> None:
    """Drop every pooled connection (Celery's worker_process_init: never share sockets across fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)  # after fork the parent's sockets are not ours to close
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    session = Session(bind=get_engine(url), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


class BorrowedConnection:
    """A psycopg connection lent by its owner: transaction control stays with the owner."""

    def __init__(self, connection: psycopg.Connection) -> None:
        object.__setattr__(self, "_owner", connection)

    def commit(self) -> None:
        """The owner commits."""

    def rollback(self) -> None:
        """The owner rolls back (SQLAlchemy calls this on every pool check-in)."""

    def close(self) -> None:
        """The owner closes."""

    def cursor(self, *args: Any, **kwargs: Any) -> psycopg.Cursor:
        cursor = psycopg.Cursor(self._owner, row_factory=kwargs.get("row_factory") or tuple_row)
        cursor.adapters.register_loader("json", JsonLoader)
        cursor.adapters.register_loader("jsonb", JsonbLoader)
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # e.g. `autocommit` or `isolation_level`: changing them would change the owner's transaction
        raise AttributeError(f"the ledger may not set {name!r} on a borrowed connection")


def session_on_connection(dbapi_connection: Any) -> Session:
    """A session that only flushes on `dbapi_connection` (psycopg 3), inside its owner's transaction.

    ``session.commit()`` flushes and ``session.close()`` releases, but neither
    commits, rolls back or closes the owner's connection.
    """
    raw = getattr(dbapi_connection, "connection", dbapi_connection)  # accept a Django wrapper too
    if not isinstance(raw, psycopg.Connection):
        raise InvalidInput(f"session_on_connection needs a psycopg 3 connection, got {type(raw).__name__}")
    if raw.closed:
        raise InvalidInput("session_on_connection got a closed connection")
    borrowed = BorrowedConnection(raw)
    engine = create_engine("postgresql+psycopg://", creator=lambda: borrowed, poolclass=StaticPool,
                           use_native_hstore=False)
    return Session(bind=engine, expire_on_commit=False)
