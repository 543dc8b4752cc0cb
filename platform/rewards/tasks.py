"""Celery tasks of the rewards app: thin, they take ids and ISO strings and call a service.

`settle_due` (celery beat) enqueues `settle_federation` on the ``default``
queue for every active reward plan's previous period. `settle_federation`
is idempotent: a redelivered message replays the stored settlement, so it
acknowledges late and retries database errors with backoff.
"""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from .models import RewardPlan
from .periods import previous_period
from .schedule import SETTLE_DUE_TASK
from .services import plan_settle

# Database trouble is worth retrying (the settlement rolled back whole); a PlatformError is not.
TRANSIENT = (OperationalError, InterfaceError)


@shared_task(name=SETTLE_DUE_TASK, ignore_result=True)
def settle_due() -> list[list]:
    """Enqueue the previous period of every active plan; returns [federation_id, start, end] per plan."""
    now = timezone.now()
    queued = []
    for plan in RewardPlan.objects.filter(active=True).order_by("federation_id"):
        period = previous_period(plan.cadence, now)
        args = [plan.federation_id, period.start.isoformat(), period.end.isoformat()]
        settle_federation.apply_async(args=args, queue="default")
        queued.append(args)
    return queued


@shared_task(name="rewards.settle_federation", acks_late=True, autoretry_for=TRANSIENT, retry_backoff=5,
             retry_backoff_max=300, max_retries=5)
def settle_federation(federation_id: int, period_start: str, period_end: str) -> int:
    """Settle one federation's period under its plan; returns the Settlement id."""
    result = plan_settle(federation_id=federation_id, period_start=datetime.fromisoformat(period_start),
                         period_end=datetime.fromisoformat(period_end))
    return result.settlement.pk
