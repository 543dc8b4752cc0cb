"""Settlement periods: half-open UTC intervals [start, end) and the ledger's label for them.

The label is what the ledger keys the period by (allocation and payout
idempotency keys, flags), so it is a pure function of the interval:
``20261202T000000Z-20261203T000000Z``. Naive datetimes and bare dates are
read as UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from registry.errors import InvalidInput

CADENCES = ("day", "week")


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime):
                raise InvalidInput("invalid_period", f"period_{name} must be a datetime, got {value!r}",
                                   field=f"period_{name}")
            object.__setattr__(self, name, as_utc(value))
        if self.end <= self.start:
            raise InvalidInput("invalid_period", f"period_end ({self.end.isoformat()}) must be after period_start "
                               f"({self.start.isoformat()})", field="period_end")

    @property
    def label(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%SZ}-{self.end:%Y%m%dT%H%M%SZ}"


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_instant(text: str, field: str) -> datetime:
    """An ISO date (midnight UTC) or datetime (naive = UTC), as a user types it."""
    try:
        if len(text.strip()) == 10:
            return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), tzinfo=UTC)
        return as_utc(datetime.fromisoformat(text.strip()))
    except (ValueError, AttributeError):
        raise InvalidInput("invalid_period", f"{field} must be an ISO date or datetime, got {text!r}",
                           field=field) from None


def previous_period(cadence: str, now: datetime) -> Period:
    """The last complete UTC day, or ISO week (Monday to Monday), before `now`."""
    if cadence not in CADENCES:
        raise InvalidInput("invalid_cadence", f"cadence must be one of {CADENCES}, got {cadence!r}", field="cadence")
    midnight = as_utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if cadence == "day":
        return Period(midnight - timedelta(days=1), midnight)
    monday = midnight - timedelta(days=midnight.weekday())
    return Period(monday - timedelta(days=7), monday)
