"""The default broker's transport: kombu's SQLAlchemy transport, polling faster.

With no CELERY_BROKER_URL the broker is a table on our own Postgres (kombu's
SQLAlchemy transport). A worker finds new messages by polling, and kombu's
virtual transports sleep `polling_interval` seconds (1.0 by default) whenever
a queue is empty. That second is added to the latency of the first audit after
any idle spell, and the SQLAlchemy transport cannot be given another interval
through `broker_transport_options`: it hands every option to
`sqlalchemy.create_engine()`, which refuses unknown keywords.

So `register()` points kombu's `sqla` alias at this subclass, whose interval
comes from settings (BROKER_POLL_MS, default 100 ms: an idle worker then runs
ten cheap queries a second). Other brokers (Redis, RabbitMQ) are untouched.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport

ALIASES = ("sqla", "sqlalchemy")


class Transport(SQLAlchemyTransport):
    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        from django.conf import settings

        self.polling_interval = settings.BROKER_POLL_MS / 1000


def register() -> None:
    for alias in ALIASES:
        TRANSPORT_ALIASES[alias] = f"{__name__}:Transport"
