"""Is a station open? OpenStreetMap `opening_hours` evaluated by opening-hours-py in the station's time zone.

"Open now" is yes / no / unknown (Ask Izzy's lesson): a missing or unparseable expression is *unknown*, never "closed".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from opening_hours import OpeningHours, ParserError, State  # type: ignore[attr-defined]


@dataclass(frozen=True)
class OpenState:
    is_open: bool | None  # None: unknown
    # When it next changes (closes if open, opens if closed), in the station's zone; None: never / unknown.
    changes_at: datetime | None = None


UNKNOWN = OpenState(is_open=None)


def validate(expression: str) -> str | None:
    """None when the expression parses, else a short reason (for import reports and staff edits)."""
    try:
        OpeningHours(expression)
    except (ParserError, SyntaxError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        return f"unparseable opening hours ({first_line})"
    return None


@lru_cache(maxsize=4096)
def _parsed(expression: str, timezone: str) -> OpeningHours | None:
    try:
        # max_interval_days: a station closed "forever" must not make next_change search for years.
        return OpeningHours(expression, timezone=ZoneInfo(timezone), max_interval_days=366)
    except (ParserError, SyntaxError, ValueError):
        return None


def open_state(expression: str | None, timezone: str, at: datetime) -> OpenState:
    """The state at `at` (an aware datetime) and when it changes next."""
    if not expression or not expression.strip():
        return UNKNOWN
    parsed = _parsed(expression.strip(), timezone)
    if parsed is None:
        return UNKNOWN
    local = at.astimezone(ZoneInfo(timezone))
    state, _comment = parsed.state(local)
    if state == State.UNKNOWN:
        return UNKNOWN
    next_change = parsed.next_change(local)
    if next_change is not None and next_change.tzinfo is None:
        next_change = next_change.replace(tzinfo=ZoneInfo(timezone))
    return OpenState(is_open=state == State.OPEN, changes_at=next_change)
