"""The beat entry, previous periods, and the scheduled settlement of every active reward plan."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from celery.schedules import crontab
from conftest import add_generation, ledger_balances
from rewards.models import Settlement
from rewards.periods import previous_period
from rewards.schedule import InvalidSchedule, beat_schedule
from rewards.services import reward_plan_set


def test_settings_schedule_the_daily_settlement_on_the_default_queue(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["rewards-settle-due"]
    assert entry["task"] == "rewards.settle_due" and entry["options"] == {"queue": "default"}
    assert entry["schedule"] == crontab(minute="15", hour="0")


def test_the_cron_comes_from_the_environment_and_is_checked():
    assert beat_schedule("") == {}
    assert beat_schedule("0 6 * * 1")["rewards-settle-due"]["schedule"] == crontab(minute="0", hour="6",
                                                                                   day_of_week="1")
    with pytest.raises(InvalidSchedule, match="must have 5 fields"):
        beat_schedule("daily")
    with pytest.raises(InvalidSchedule, match="not a valid cron expression"):
        beat_schedule("61 * * * *")


def test_previous_periods_are_whole_utc_days_and_iso_weeks():
    now = datetime(2026, 12, 3, 0, 15, tzinfo=UTC)  # a Thursday
    day = previous_period("day", now)
    assert (day.start, day.end) == (datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC))
    week = previous_period("week", now)
    assert (week.start, week.end) == (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC))
    assert week.label == "20261123T000000Z-20261130T000000Z"


def _dispatch(monkeypatch) -> list[tuple]:
    """Run `settle_due` and return what it enqueued; the transport is replaced by a list (no broker here)."""
    from rewards import tasks

    sent: list[tuple] = []
    monkeypatch.setattr(tasks.settle_federation, "apply_async", lambda args, queue: sent.append((tuple(args), queue)))
    tasks.settle_due()
    return sent


def test_settle_due_enqueues_the_previous_period_of_each_active_plan_and_the_task_settles_it(fed, round0,
                                                                                               monkeypatch):
    from django.utils import timezone
    from rewards import tasks

    monkeypatch.setattr(timezone, "now", lambda: datetime(2026, 1, 6, 0, 15, tzinfo=UTC))
    add_generation(fed, round0, {"alice": 0.75, "bob": 0.25})
    reward_plan_set(federation=fed, pool_amount=400, currency="EUR", cadence="day")
    sent = _dispatch(monkeypatch)
    mine = [args for args, queue in sent if args[0] == fed.pk and queue == "default"]
    assert mine == [(fed.pk, "2026-01-05T00:00:00+00:00", "2026-01-06T00:00:00+00:00")]
    settlement_id = tasks.settle_federation(*mine[0])  # the task body, run in this process
    settlement = Settlement.objects.get(pk=settlement_id)
    assert (settlement.status, settlement.actor, settlement.allocated_amount) == ("settled", "schedule", 400)
    assert tasks.settle_federation(*mine[0]) == settlement_id  # a redelivery replays: nothing is paid twice
    assert ledger_balances(fed)[("payable", "alice")] == 300 and Settlement.objects.filter(federation=fed).count() == 1


def test_inactive_plans_are_skipped(fed, monkeypatch):
    reward_plan_set(federation=fed, pool_amount=400, currency="EUR", active=False)
    assert all(args[0] != fed.pk for args, _ in _dispatch(monkeypatch))
