"""alembic environment for Postgres schema ``ledger`` only.

Django owns every other table of the database, so autogenerate and ``alembic
check`` look at schema ``ledger`` alone (``include_schemas`` +
``include_name``) and the version table lives there too.

Where the database is, first match wins:
1. a connection passed in ``config.attributes["connection"]`` (run inside the
   caller's transaction, which the caller commits);
2. ``alembic -x url=postgresql://...``;
3. ``config.attributes["url"]`` (what `ledger.migrate` sets) or a
   ``sqlalchemy.url`` set in the Config;
4. `dbenv.database_url()`: DATABASE_URL or the embedded server.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from ledger.db import sqlalchemy_url
from ledger.models import SCHEMA, Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    if type_ == "schema":
        return name == SCHEMA
    return True


def database_url() -> str:
    url = (context.get_x_argument(as_dictionary=True).get("url") or config.attributes.get("url")
           or config.get_main_option("sqlalchemy.url"))
    return sqlalchemy_url(url or None)


def configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        include_schemas=True,
        include_name=include_name,
        version_table_schema=SCHEMA,
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    configure(url=database_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    borrowed = config.attributes.get("connection")
    if borrowed is not None:
        # the version table lives in the schema, so it must exist before alembic looks for it
        borrowed.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        run_on(borrowed)
        return
    engine = create_engine(database_url(), poolclass=NullPool)
    with engine.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        connection.commit()
        run_on(connection)
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
