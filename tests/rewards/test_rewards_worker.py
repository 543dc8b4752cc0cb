"""The scheduled settlement end to end in a real Celery worker process, on the server-less broker."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from conftest import add_generation, make_federation, make_round_row
from django.utils import timezone
from ops.worker import running_worker
from rewards.models import Settlement
from rewards.periods import previous_period
from rewards.services import reward_plan_set
from rewards.tasks import settle_due


def _wait_for_settlement(fed, proc, timeout: float = 180.0) -> Settlement:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = Settlement.objects.filter(federation=fed).first()
        if found is not None:
            return found
        assert proc.poll() is None, "the Celery worker exited"
        time.sleep(0.5)
    raise AssertionError("no settlement was written by the worker")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_task_settles_the_previous_day_in_a_worker(celery_test_db, tmp_path):
    fed = make_federation()
    period = previous_period("day", timezone.now())
    add_generation(fed, make_round_row(fed, 0), {"alice": 0.6, "bob": 0.4}, at=period.start + timedelta(hours=2))
    reward_plan_set(federation=fed, pool_amount=500, currency="EUR", cadence="day")
    with running_worker(celery_test_db, queues="default", log_path=tmp_path / "worker.log") as proc:
        settle_due.delay()  # what celery beat sends; the worker fans out one settlement per plan
        settlement = _wait_for_settlement(fed, proc)
    assert (settlement.period, settlement.status, settlement.actor) == (period.label, "settled", "schedule")
    assert (settlement.allocated_amount, settlement.clients_paid) == (500, 2)
