"""Suite-wide fixtures: the test database holds both Django's tables and the ledger schema.

pytest-django creates `test_<name>` on the server from DATABASE_URL (or the
embedded Postgres); after it has run Django's migrations we run the ledger's
alembic migrations on the same database, exactly as `manage.py migrate_all` does.
"""

from __future__ import annotations

import pytest


def test_database_url() -> str:
    import dbenv
    from django.conf import settings
    from django.db import connection

    return dbenv.with_database(settings.DATABASE_URL, connection.settings_dict["NAME"])


test_database_url.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        from ledger.migrate import upgrade

        upgrade(test_database_url())


@pytest.fixture
def test_db_url(django_db_setup) -> str:
    return test_database_url()
