"""The Celery app. Configuration comes from Django settings (CELERY_* names)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

from .broker import register as register_broker_transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
register_broker_transport()  # before any connection: the default broker polls every BROKER_POLL_MS

app = Celery("protoken")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # A forked worker must not share the parent's sockets: drop inherited pools.
    from django.db import connections

    for conn in connections.all():
        conn.close_if_unusable_or_obsolete()
    try:
        from ledger.db import dispose_engine
    except ImportError:  # ledger not installed in this deployment
        return
    dispose_engine()
