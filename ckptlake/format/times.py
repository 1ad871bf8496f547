"""The one parser of the times a lake's JSON records hold (docs/format.md, "Times").

Why not `datetime.fromisoformat` alone: what it accepts depends on the Python version.  3.10
takes only 0, 3 or 6 fraction digits, so a manifest another writer stamped with nanoseconds
(`...:00.123456789Z`) or a tenth (`...:00.5Z`) was refused whole on 3.10 and read on 3.11, and
a record gc must obey was unreadable on one host and fine on the next.  The form the format
states is parsed here by hand, the same on every version; anything else falls through to
`fromisoformat`, so whatever a reader accepted before it still accepts.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                   r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})?", re.ASCII)


def parse_time(value: Any) -> datetime:
    """An aware datetime (UTC when the text names no offset); ValueError if `value` is not a
    time.  Fraction digits beyond the sixth are cut, not rounded: a rounded-up time could
    carry into the next second, and no comparison the format makes needs nanoseconds."""
    text = str(value)
    m = _TIME.fullmatch(text)
    if m is None:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    else:
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        micro = int((m.group(7) or "").ljust(6, "0")[:6])
        t = datetime(year, month, day, hour, minute, second, micro)
        zone = m.group(8)
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            if offset >= timedelta(hours=24):
                raise ValueError(f"offset out of range: {text!r}")
            t = t.replace(tzinfo=timezone(sign * offset))
        else:
            t = t.replace(tzinfo=timezone.utc)
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    try:
        t.astimezone(timezone.utc)
    except OverflowError:
        # 9999-12-31T23:00:00-05:00 is past the last time Python can hold in UTC: every
        # comparison and every write of it would fail later, as an internal error
        raise ValueError(f"time out of range in UTC: {text!r}") from None
    return t


def time_text(t: datetime) -> str:
    """The one form a time is written in (`YYYY-MM-DDTHH:MM:SS[.ffffff]Z`): in UTC, whatever
    offset it was read with.  A manifest another writer stamped `+01:00` went on into
    tombstones, copies' provenance and --json with its offset, which the format forbids.
    A naive time is taken as UTC (this process makes none)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
