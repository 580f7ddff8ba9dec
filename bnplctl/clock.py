"""The single source of time: every "now" and "today" in bnplctl comes from here."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo


def now() -> datetime:
    """The current instant, timezone-aware in UTC."""
    return datetime.now(UTC)


def today(timezone: str) -> date:
    """Today's calendar date in the named time zone (the business time zone)."""
    return now().astimezone(ZoneInfo(timezone)).date()


def age_on(birth: date, on: date) -> int:
    """Completed years between ``birth`` and ``on``."""
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years
