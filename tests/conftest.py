"""Suite-wide fixtures: the test database holds both Django's tables and the ledger schema.

pytest-django creates `test_<name>` on the server from DATABASE_URL (or the
embedded Postgres); after it has run Django's migrations we run the ledger's
alembic migrations on the same database, exactly as `manage.py migrate_all` does.
"""

from __future__ import annotations

import pytest


def test_database_url() -> str:
    from django.conf import settings
    from django.db import connection

    import dbenv

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


def _reset_celery_connections(app) -> None:
    """Drop the app's cached broker pool, producer pool and result backend so new URLs take effect."""
    from kombu import pools

    pools.reset()  # closes and forgets kombu's process-wide connection/producer pools
    app._pool = None
    app.amqp._producer_pool = None
    app._local.__dict__.pop("backend", None)
    from kombu.transport.sqlalchemy import Channel

    # kombu caches one SQLAlchemy engine per broker URL at class level; its pooled
    # connections would keep the test database from being dropped.
    for engine, _session in Channel._engines.values():
        engine.dispose()
    Channel._engines.clear()


@pytest.fixture
def celery_test_db(django_db_setup, settings) -> str:
    """Point this process's Celery app (broker and results) at the pytest-django test database."""
    from config.celery import app

    import dbenv

    url = test_database_url()
    saved = (app.conf.broker_url, app.conf.result_backend)
    app.conf.broker_url = dbenv.with_scheme(url, "sqla+postgresql+psycopg")
    app.conf.result_backend = dbenv.with_scheme(url, "db+postgresql+psycopg")
    _reset_celery_connections(app)
    yield url
    app.conf.broker_url, app.conf.result_backend = saved
    _reset_celery_connections(app)
