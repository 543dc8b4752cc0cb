"""The celery beat entry of the rewards app, built from the environment (imported by settings).

``REWARDS_SETTLE_CRON`` (default ``15 0 * * *``: 00:15 UTC daily; empty turns
it off) runs `rewards.settle_due`, which enqueues one settlement per active
`RewardPlan` for the previous day or ISO week (the plan's cadence). A
weekly plan is therefore retried daily; a settled period is a no-op replay.
Importing this module must not touch Django models: settings are not ready.
"""

from __future__ import annotations

from celery.schedules import crontab

SETTLE_DUE_TASK = "rewards.settle_due"


class InvalidSchedule(ValueError):
    """REWARDS_SETTLE_CRON is not a 5-field cron expression."""


def beat_schedule(cron: str, queue: str = "default") -> dict:
    if not cron.strip():
        return {}
    if len(cron.split()) != 5:
        raise InvalidSchedule(f"REWARDS_SETTLE_CRON must have 5 fields (minute hour day month weekday), got {cron!r}")
    try:
        schedule = crontab.from_string(cron)
    except ValueError as exc:
        raise InvalidSchedule(f"REWARDS_SETTLE_CRON {cron!r} is not a valid cron expression: {exc}") from exc
    return {"rewards-settle-due": {"task": SETTLE_DUE_TASK, "schedule": schedule, "options": {"queue": queue}}}
