"""Django and the ledger share one transaction when they share Django's connection.

STYLE.md's trap: a SQLAlchemy session naively bound to Django's connection
rolls Django's work back when it closes (pool reset-on-return) or commits it
early. `ledger.db.session_on_connection` must ride the connection without
owning its transaction.
"""

import pytest
from django.db import connection, transaction
from registry.models import Federation
from sqlalchemy import text

from ledger.db import session_on_connection

PROBE = "ledger.bridge_probe"


@pytest.fixture
def probe_table(transactional_db):
    with connection.cursor() as cur:
        cur.execute(f"create table if not exists {PROBE} (id serial primary key, note text not null)")
        cur.execute(f"truncate {PROBE}")
    yield
    with connection.cursor() as cur:
        cur.execute(f"drop table if exists {PROBE}")


def _write_both(note: str) -> None:
    Federation.objects.create(slug=note, name=note)
    session = session_on_connection(connection.connection)
    session.execute(text(f"insert into {PROBE} (note) values (:n)"), {"n": note})
    session.commit()  # must not commit the outer transaction early
    session.close()  # must not roll Django's row back


def _probe_notes() -> list[str]:
    with connection.cursor() as cur:
        cur.execute(f"select note from {PROBE} order by id")
        return [row[0] for row in cur.fetchall()]


class Boom(Exception):
    pass


def test_it_commits_both_writes_together(probe_table):
    with transaction.atomic():
        _write_both("together")
    assert Federation.objects.filter(slug="together").exists()
    assert _probe_notes() == ["together"]


def test_it_rolls_back_both_writes_together(probe_table):
    with pytest.raises(Boom), transaction.atomic():
        _write_both("doomed")
        raise Boom
    assert not Federation.objects.filter(slug="doomed").exists()
    assert _probe_notes() == []


def test_it_detects_the_naive_bridge_losing_djangos_row(probe_table):
    """The trap is real: a plain engine on Django's connection silently drops the row."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import StaticPool

    naive = create_engine("postgresql+psycopg://", creator=lambda: connection.connection, poolclass=StaticPool)
    with transaction.atomic():
        Federation.objects.create(slug="lost", name="lost")
        session = Session(bind=naive)
        session.execute(text(f"insert into {PROBE} (note) values ('lost')"))
        session.close()  # rolls back the shared transaction behind Django's back
    assert not Federation.objects.filter(slug="lost").exists()
