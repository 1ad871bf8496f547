"""`ls --where/--sort/--limit`: select versions by their metrics and step.

    --where 'val_loss<2.5' --where 'step>=1000'   all conditions must hold
    --sort val_loss | -val_loss | val_loss:desc   versions lacking the key sort last; ties
                                                  (and those) newest first, as @min:/@max:
    --limit N                                     first N after sorting; without --sort, the
                                                  N newest versions (still listed oldest first)

A key is `step`, `version`, `size` (total bytes) or a metric name; a version without that
metric fails every condition on it.  Operators: < <= > >= == != (a lone = means ==).
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import UsageError
from ..results import VersionInfo

FIELDS = ("step", "version", "size")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt, "=": operator.eq}
_CONDITION = re.compile(r"^\s*(?P<key>[^<>=!]+?)\s*(?P<op><=|>=|==|!=|<|>|=)\s*(?P<value>\S+)\s*$")
WHERE_GRAMMAR = ("KEY OP NUMBER, OP one of < <= > >= == !=, KEY a metric name or step, version, "
                 "size; e.g. 'val_loss<2.5'")


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}"

    def test(self, v: VersionInfo) -> bool:
        x = value_of(v, self.key)
        return x is not None and _OPS[self.op](x, self.value)


@dataclass(frozen=True)
class Sort:
    key: str
    descending: bool = False


def value_of(v: VersionInfo, key: str) -> float | None:
    if key == "step":
        return None if v.step is None else float(v.step)
    if key == "version":
        return float(v.version)
    if key == "size":
        return float(v.total_bytes)
    return v.metrics.get(key)


def parse_where(text: str) -> Condition:
    m = _CONDITION.match(text)
    if not m:
        raise UsageError(f"invalid --where {text!r}", hint=WHERE_GRAMMAR)
    try:
        value = float(m.group("value"))
    except ValueError:
        raise UsageError(f"invalid --where {text!r}: the value is not a number",
                         hint=WHERE_GRAMMAR) from None
    if not math.isfinite(value):
        raise UsageError(f"invalid --where {text!r}: the value must be a finite number")
    return Condition(m.group("key"), "==" if m.group("op") == "=" else m.group("op"), value)


def parse_sort(text: str) -> Sort:
    key, descending = text.strip(), False
    if key.startswith("-"):
        key, descending = key[1:], True
    elif key.endswith((":desc", ":asc")):
        key, _, order = key.rpartition(":")
        descending = order == "desc"
    if not key:
        raise UsageError(f"invalid --sort {text!r}",
                         hint="a metric name or step, version, size; for descending, put "
                              "'-' before it or ':desc' after it")
    return Sort(key, descending)


def select(versions: Sequence[VersionInfo], *, where: Sequence[str | Condition] = (),
           sort: str | Sort | None = None, limit: int | None = None) -> list[VersionInfo]:
    """Filter (all conditions), then sort, then keep `limit`."""
    conditions = [parse_where(w) if isinstance(w, str) else w for w in where]
    order = parse_sort(sort) if isinstance(sort, str) else sort
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be >= 0, got {limit}")
    out = [v for v in versions if all(c.test(v) for c in conditions)]
    if order is None:
        return out[-limit:] if limit else ([] if limit == 0 else out)

    # Ties go to the newest version, as `@min:`/`@max:` and keep_best break them: `--sort
    # val_loss --limit 1` is the version `@min:val_loss` pulls.
    def sort_key(v: VersionInfo) -> tuple[Any, ...]:
        x = value_of(v, order.key)  # type: ignore[union-attr]
        if x is None:
            return (1, 0.0, -v.version)
        return (0, -x if order.descending else x, -v.version)  # type: ignore[union-attr]

    out.sort(key=sort_key)
    return out if limit is None else out[:limit]


def query_keys(where: Sequence[str | Condition] = (), sort: str | Sort | None = None
               ) -> list[str]:
    """Metric names the query mentions, in order (the CLI gives each its own column)."""
    keys = [(parse_where(w) if isinstance(w, str) else w).key for w in where]
    if sort is not None:
        keys.append((parse_sort(sort) if isinstance(sort, str) else sort).key)
    out: list[str] = []
    for k in keys:
        if k not in FIELDS and k not in out:
            out.append(k)
    return out


def unknown_sort_key(versions: Sequence[VersionInfo], sort: str | Sort | None) -> str | None:
    """The metric `sort` names when no version has it (a typo, `-nope`), else None: such a
    sort leaves the versions in version order, which looks like a sort that worked."""
    if sort is None:
        return None
    key = (parse_sort(sort) if isinstance(sort, str) else sort).key
    if key in FIELDS or not versions or any(key in v.metrics for v in versions):
        return None
    return key
