"""Checks of the user-given values a version records (metrics, metadata).

Shared by the library's push and the checkpointer, which must refuse bad values on the
caller's thread, before anything is uploaded.
"""
from __future__ import annotations

import math

from ..errors import UsageError


def check_metrics(metrics: dict[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        if not isinstance(k, str) or not k:
            raise UsageError("metric names must be non-empty strings")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UsageError(f"metric {k!r} must be a finite number, got {v!r}")
        out[k] = float(v)
    return out


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not k:
            raise UsageError("metadata keys must be non-empty strings")
        out[k] = str(v)
    return out
