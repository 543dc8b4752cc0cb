"""Operational tasks: a worker self-check that proves the whole chain is wired."""

from __future__ import annotations

import os

from celery import shared_task
from django.db import connection


@shared_task(name="ops.worker_selfcheck")
def worker_selfcheck() -> dict:
    """Report what the worker sees: its pid, the database server and the ledger schema."""
    with connection.cursor() as cur:
        cur.execute("select current_database(), version()")
        database, version = cur.fetchone()
        cur.execute(
            "select exists (select 1 from information_schema.tables "
            "where table_schema = 'ledger' and table_name = 'alembic_version')"
        )
        (ledger_migrated,) = cur.fetchone()
    return {
        "worker_pid": os.getpid(),
        "database": database,
        "server": version.split(",")[0],
        "ledger_migrated": bool(ledger_migrated),
    }
