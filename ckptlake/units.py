"""Byte counts and rates for people, one way everywhere: the operations' messages (an egress refusal, a
pull's warning) and the CLI's tables and summaries say the same size the same way."""
from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(n: int | float) -> str:
    """Binary units, 3-4 significant digits: '0 B', '512 B', '1.00 GiB', '120.0 MiB'."""
    n = float(n)
    if abs(n) < 1024:
        return f"{int(n)} B"
    for unit in _UNITS:
        n /= 1024
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.2f} {unit}" if abs(n) < 10 else f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """Throughput with fewer digits than sizes ('312 MiB/s'): it is an estimate anyway."""
    n = float(bytes_per_second)
    if n < 1024:
        return f"{n:.0f} B/s"
    for unit in _UNITS:
        n /= 1024
        if n < 1024 or unit == _UNITS[-1]:
            if n < 10:
                return f"{n:.2f} {unit}/s"
            return f"{n:.1f} {unit}/s" if n < 100 else f"{n:.0f} {unit}/s"
    raise AssertionError("unreachable")
