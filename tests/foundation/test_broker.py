"""The default broker (kombu's SQLAlchemy transport) polls at BROKER_POLL_MS, not kombu's one second."""

import os
import subprocess
import sys

from config.broker import Transport
from kombu import Connection

import dbenv


def test_it_gives_the_sqlalchemy_transport_the_configured_interval(settings):
    settings.BROKER_POLL_MS = 250
    conn = Connection("sqla+postgresql+psycopg://postgres@127.0.0.1:1/never-connected")
    assert type(conn.transport) is Transport
    assert conn.transport.polling_interval == 0.25


def test_it_polls_every_100_ms_by_default(settings):
    assert settings.BROKER_POLL_MS == 100
    assert Connection("sqlalchemy+postgresql://postgres@127.0.0.1:1/x").transport.polling_interval == 0.1


def test_it_leaves_other_brokers_alone():
    assert not isinstance(Connection("redis://127.0.0.1:6379/0").transport, Transport)


def test_it_refuses_an_interval_out_of_range():
    env = {**os.environ, "BROKER_POLL_MS": "5", "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=dbenv.PROJECT_ROOT,
                         env={**env, "PYTHONPATH": f"{dbenv.PROJECT_ROOT}:{dbenv.PROJECT_ROOT / 'platform'}"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "BROKER_POLL_MS must be in 10..60000 milliseconds, got 5" in out.stderr
