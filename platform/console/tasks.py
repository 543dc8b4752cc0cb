"""Celery tasks: thin wrappers that take ids and ISO dates and call a service.

Beat runs `console.build_period_reports` (CELERY_BEAT_SCHEDULE in settings,
AUDIT_REPORT_CRON / AUDIT_REPORT_PERIOD_DAYS): it fans out one
`console.build_report` per federation for the period that just ended. A
scheduled build is idempotent per (federation, period), so redelivery and
duplicate ticks build nothing twice.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.utils import timezone
from registry.models import Federation

from .periods import Period, parse_day
from .services import report_build_scheduled


@shared_task(name="console.build_report", acks_late=True, ignore_result=True)
def build_report(federation_id: int, start: str, end: str) -> int:
    """Build the federation's scheduled report for start..end (inclusive ISO dates); returns its id."""
    federation = Federation.objects.get(pk=federation_id)
    return report_build_scheduled(federation=federation, period=Period.parse(start, end)).pk


@shared_task(name="console.build_period_reports", ignore_result=True)
def build_period_reports(today: str | None = None) -> list[int]:
    """Enqueue every federation's report of the period that ended before `today` (ISO date; default: now, UTC).

    Passing `today` rebuilds a missed week: ``build_period_reports.delay("2025-03-10")``.
    """
    day = parse_day(today, "today") if today is not None else timezone.now().date()
    period = Period.previous(settings.AUDIT_REPORT_PERIOD_DAYS, today=day)
    ids = list(Federation.objects.order_by("pk").values_list("pk", flat=True))
    for federation_id in ids:
        build_report.delay(federation_id, period.start.isoformat(), period.end.isoformat())
    return ids
