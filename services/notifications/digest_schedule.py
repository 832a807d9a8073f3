"""When organisers' digests go out: daily at 07:00 network time, or weekly on Mondays at 07:00."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

PERIODS = ("daily", "weekly")
DEFAULT_PERIOD = "weekly"
PERIOD_LENGTH = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
# Digests go out at 07:00 network time: every day, or on Mondays.
NETWORK_TZ = ZoneInfo("Europe/London")
DIGEST_HOUR = 7


def next_digest_time(period: str, after: datetime) -> datetime:
    """The next 07:00 (daily) or Monday 07:00 (weekly), network time, strictly after `after`."""
    local = after.astimezone(NETWORK_TZ)
    candidate = local.replace(hour=DIGEST_HOUR, minute=0, second=0, microsecond=0)
    if period == "weekly":
        candidate += timedelta(days=(0 - candidate.weekday()) % 7)
        step = timedelta(days=7)
    else:
        step = timedelta(days=1)
    if candidate <= local:
        candidate += step
    # Wall-clock arithmetic: re-attach the zone so a change of summer time keeps 07:00.
    return candidate.replace(tzinfo=NETWORK_TZ).astimezone(UTC)

