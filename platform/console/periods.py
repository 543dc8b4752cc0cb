"""Report and filter periods: inclusive date ranges in UTC.

People name periods the way they read calendars, "1 to 7 June", so a
`Period` holds an inclusive `start`..`end`. Queries use the half-open
datetime range [start 00:00 UTC, end + 1 day 00:00 UTC), which counts every
instant exactly once when periods tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from .access import ConsoleError

MAX_PERIOD_DAYS = 366


class InvalidPeriod(ConsoleError):
    status = 400


def parse_day(value: str, name: str) -> date:
    """A YYYY-MM-DD date, or `InvalidPeriod` naming the argument."""
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise InvalidPeriod(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise InvalidPeriod(f"the end date {self.end} is before the start date {self.start}")
        if self.num_days > MAX_PERIOD_DAYS:
            raise InvalidPeriod(f"a period may span at most {MAX_PERIOD_DAYS} days, got {self.num_days}")

    @classmethod
    def parse(cls, start: str, end: str) -> Period:
        return cls(parse_day(start, "start"), parse_day(end, "end"))

    @classmethod
    def last_days(cls, days: int, *, today: date) -> Period:
        """The `days` days ending with `today`."""
        return cls(today - timedelta(days=days - 1), today)

    @classmethod
    def previous(cls, days: int, *, today: date) -> Period:
        """The `days` complete days before `today` (what a scheduled report covers)."""
        return cls.last_days(days, today=today - timedelta(days=1))

    @property
    def num_days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.num_days)]

    def __str__(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()}"
