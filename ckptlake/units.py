"""Byte counts and rates for people, one way everywhere: the operations' messages (an egress refusal, a
pull's warning) and the CLI's tables and summaries say the same size the same way."""
from __future__ import annotations

import math
import sys
from typing import Any

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_FLOAT_MAX = sys.float_info.max


def finite_number(value: Any) -> bool:
    """Whether `value` is a finite number (a bool is none): what a metric, a price or a
    duration read from storage or a config must be.  An int beyond a float's range is none
    either: math.isfinite raises OverflowError on it (a crafted 400-digit value was an
    internal error wherever it was read)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return abs(value) <= _FLOAT_MAX if isinstance(value, int) else math.isfinite(value)


def reported_count(value: Any) -> int:
    """A count a record keeps for reporting (a tombstone's `files`, a condemnation record's
    `sizes`): an integer, or a float that is one (`1.0`, as another JSON writer may put
    it), else 0 (unknown: negative, fractional, infinite).  ValueError for what is no number
    at all, which makes the record undecodable as docs/format.md says.  (The record was
    refused whole for `1.0`: an rm'd version then read as lost, a push waited a minute.)"""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):  # (capped as floats are: 10**400 bytes broke format_bytes)
        return value if 0 <= value < 2 ** 63 else 0
    return int(value) if math.isfinite(value) and value >= 0 and value.is_integer() \
        and value < 2 ** 63 else 0


def format_bytes(n: int | float) -> str:
    """Binary units, 3-4 significant digits: '0 B', '512 B', '1.00 GiB', '120.0 MiB'."""
    n = float(n)
    if abs(n) < 1024:
        return f"{int(n)} B"
    for unit in _UNITS:
        n /= 1024
        # the unit is chosen on the rounded figure: 1,048,575 B is "1.00 MiB", not "1024.0 KiB"
        text = f"{n:.2f}" if abs(n) < 9.995 else f"{n:.1f}"
        if abs(float(text)) < 1024 or unit == _UNITS[-1]:
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """Throughput with fewer digits than sizes ('312 MiB/s'): it is an estimate anyway."""
    n = float(bytes_per_second)
    if abs(float(f"{n:.0f}")) < 1024:  # rounded first, as below: 1023.6 is "1.00 KiB/s"
        return f"{n:.0f} B/s"
    for unit in _UNITS:
        n /= 1024
        a = abs(n)
        text = f"{n:.2f}" if a < 9.995 else f"{n:.1f}" if a < 99.95 else f"{n:.0f}"
        if abs(float(text)) < 1024 or unit == _UNITS[-1]:
            return f"{text} {unit}/s"
    raise AssertionError("unreachable")
