"""Retention: which versions `ckptlake gc` keeps, as a validated policy and a pure selection.

Two halves, kept apart on purpose (Orbax's preservation policies see only step, metrics and time,
never storage):

* `load_retention(config)` turns the ``retention:`` section of a ckptlake.yaml into a
  `RetentionPolicy`, or raises a ConfigError naming the file, the line and the key.  Everything
  that can be checked without the lake is checked here, before anything is touched.
* `select(versions, rules, aliases, now)` is a pure function: version facts in, one `Decision`
  (keep or delete, the rule, and the reasons) per version out.  No I/O, no clock.

Semantics (also in ckptlake.example.yaml and docs/format.md):

* the first rule whose ``match`` glob fits the artifact path applies (``fnmatch``, case-sensitive;
  ``*`` also matches ``/``); an artifact no rule matches is kept whole;
* within a rule a version is kept if ANY ``keep_*`` clause keeps it;
* a version an alias points at is always kept, whatever the rule says;
* the latest version of an artifact is always kept: it is what a resume reads, and pushers of
  ckptlake before 2026-12-07 numbered a new version latest + 1 from the manifests alone (now a
  push numbers above the tombstones too, so only `rm` deletes a latest version, by hand);
* ``keep_best`` keeps versions that lack the metric unless ``keep_missing: false``;
* ``tier: {after, class}`` never changes what is kept: it says which kept versions are cold
  (`cold_class`), whose chunks gc moves to a cheaper S3 storage class (core/tiering.py).

Applying a selection and selecting again with the same rules, aliases and ``now`` deletes nothing
more: every clause keeps a version for a reason that deleting other versions cannot change
(the newest N stay the newest N of the survivors, the best N stay the best, ...).
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ConfigError
from ..units import finite_number
from .config import describe_value, line_of, load_config

__all__ = [
    "DEFAULT_GRACE_PERIOD", "DEFAULT_PRICE_PER_GB_MONTH", "DEFAULT_RECORD_RETENTION",
    "DEFAULT_SWEEP_WINDOW", "MAX_DURATION", "MAX_RECORD_RETENTION", "MAX_SWEEP_WINDOW",
    "MIN_SWEEP_WINDOW",
    "COLD_CLASSES", "ClassPrice", "DEFAULT_CLASS_PRICES", "Decision", "KeepBest",
    "RESTORE_CLASSES", "RetentionPolicy", "Rule", "Tier", "VersionFacts",
    "check_metrics", "cold_class", "format_duration", "load_retention", "parse_duration",
    "select",
]

DEFAULT_GRACE_PERIOD = 24 * 3600.0
DEFAULT_PRICE_PER_GB_MONTH = 0.023  # S3 Standard, first 50 TB, us-east-1
DEFAULT_SWEEP_WINDOW = 30.0
# How long swept condemnation records stay listed.  Pushers rely on them to notice a sweep that
# raced their commit; a push running longer than this re-checks all its chunks before commit
# (core/gc_guard.py), so longer means fewer such checks and a few more tiny records to read.
DEFAULT_RECORD_RETENTION = 15 * 60.0
# Bounds.  sweep_window: at least 1 s (the pushers' 1 s margin must stay small next to it); at
# most 1 h, because every push that uses a condemned chunk sleeps that long before its commit
# (and again after it),
# and a listing of the manifests that takes an hour means a lake far beyond what gc is built for
# (an hour lists millions of keys; a re-mark reads only new manifests).  record_retention: at
# least 2 x sweep_window (docs/format.md, invariant 5); at most 1 d, because every push lists
# and reads the records on each commit, and a day of records is already more than a push needs
# (it only has to cover the push's own duration).
MIN_SWEEP_WINDOW = 1.0
MAX_SWEEP_WINDOW = 3600.0
MAX_RECORD_RETENTION = 86400.0
# Every duration (grace_period, keep_within, tier.after, ...): at most 100 years.  gc does
# datetime arithmetic with them -- now - grace_period, now - keep_within, a plan's freed_after up
# to now + 2 x grace_period -- and datetime ends at year 9999 (timedelta at 999,999,999 days):
# unbounded, 100000000w failed with an OverflowError in the middle of gc.  100 years keeps
# all of that far inside datetime's range from any plausible now, and is longer than any
# policy means ("forever" is keep_all: true).
MAX_DURATION = 100 * 365 * 86400.0

RETENTION_KEYS = ("grace_period", "storage_price_per_gb_month", "rules", "sweep_window",
                  "record_retention", "storage_classes")
RULE_KEYS = ("match", "keep_last", "keep_every_steps", "keep_best", "keep_within", "keep_all",
             "tier")
TIER_KEYS = ("after", "class")
CLASS_PRICE_KEYS = ("price_per_gb_month", "min_storage_days", "retrieval_per_gb",
                    "copy_per_1000", "monitoring_per_1000_month")


# --------------------------------------------------------------------------------------------
# Storage classes (tiering).  Not part of the lake's format: gc moves chunk objects between
# classes on servers that have them (docs/format.md, "Deleting (gc)").

@dataclass(frozen=True)
class ClassPrice:
    """One storage class's list prices, for the tiering plan and the egress estimate."""

    price_per_gb_month: float
    min_storage_days: int = 0  # an object deleted sooner is billed for the rest anyway
    retrieval_per_gb: float = 0.0  # charged on every read (GET) of the object's bytes
    copy_per_1000: float = 0.005  # the CopyObject that moves an object here (a PUT request)
    monitoring_per_1000_month: float = 0.0  # INTELLIGENT_TIERING's per-object fee


# AWS S3 list prices, us-east-1, first 50 TB tier (aws.amazon.com/s3/pricing, as of 2025).
# INTELLIGENT_TIERING is priced at its Infrequent Access tier ($0.0125), where an object that
# nobody reads sits after 30 days; it has no retrieval fee and no minimum duration.
DEFAULT_CLASS_PRICES: Mapping[str, ClassPrice] = {
    "STANDARD": ClassPrice(0.023, 0, 0.0, 0.005),
    "INTELLIGENT_TIERING": ClassPrice(0.0125, 0, 0.0, 0.005, 0.0025),
    "STANDARD_IA": ClassPrice(0.0125, 30, 0.01, 0.01),
    "ONEZONE_IA": ClassPrice(0.01, 30, 0.01, 0.01),
    "GLACIER_IR": ClassPrice(0.004, 90, 0.03, 0.02),
}
# The classes a rule may tier to, warmest first: a chunk that versions of two rules with
# different classes share goes to the warmer one.
COLD_CLASSES = ("INTELLIGENT_TIERING", "STANDARD_IA", "ONEZONE_IA", "GLACIER_IR")
# Objects in these cannot be read before a RestoreObject completes (hours): a pull would fail.
RESTORE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
# IA and Glacier IR bill every object as at least 128 KiB: smaller chunks are left in place.
MIN_TIER_OBJECT = 128 * 1024
KEEP_BEST_KEYS = ("metric", "mode", "count", "keep_missing")

_DURATION = re.compile(r"([0-9]+)(s|m|h|d|w)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_HINT = "write a whole number and a unit: 0s, 90s, 30m, 24h, 7d, 2w"
_TOO_LONG_HINTS = {  # what to write instead, by key
    "grace_period": "it only delays the sweep of unreferenced chunks; the default is 24h",
    "keep_within": "to keep every version, use keep_all: true",
    "after": "to leave these versions in STANDARD, remove `tier`",
    "sweep_window": "sweep_window is 1s to 1h",
    "record_retention": "record_retention is at most 1d",
}


# --------------------------------------------------------------------------------------------
# Durations

class DurationTooLong(ValueError):
    """A well-formed duration above MAX_DURATION."""


def parse_duration(value: Any) -> float:
    """``24h`` -> 86400.0.  ValueError with a reason for anything else (bare numbers included:
    is ``7`` seconds or days?), DurationTooLong above MAX_DURATION."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"must be a duration such as 24h or 7d, got {describe_value(value)}")
    m = _DURATION.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"not a duration: {value!r}")
    # Bounded here, on the digits and then the exact integer: int() refuses numbers of more
    # than 4300 digits and float() overflows past ~1e308 -- both would escape as something
    # other than this refusal -- and every caller does datetime arithmetic with the result.
    digits = m.group(1).lstrip("0") or "0"
    seconds = int(digits) * _UNIT_SECONDS[m.group(2)] if len(digits) <= 12 else None
    if seconds is None or seconds > MAX_DURATION:
        raise DurationTooLong(f"must be at most {format_duration(MAX_DURATION)} (100 years), "
                              f"got {value.strip()}")
    return float(seconds)


def format_duration(seconds: float) -> str:
    """The largest exact unit up to days: 604800 -> "7d", 90 -> "90s", 0 -> "0s"."""
    s = int(seconds)
    if s != seconds:
        return f"{seconds:g}s"
    for unit in ("d", "h", "m"):  # 7d reads better than 1w
        if s and s % _UNIT_SECONDS[unit] == 0:
            return f"{s // _UNIT_SECONDS[unit]}{unit}"
    return f"{s}s"


# --------------------------------------------------------------------------------------------
# The policy

@dataclass(frozen=True)
class KeepBest:
    metric: str
    mode: str = "min"  # "min": lower is better (a loss); "max": higher is better (an accuracy)
    count: int = 1
    keep_missing: bool = True  # keep versions without the metric (preemption saves)

    def describe(self) -> str:
        return f"keep_best {self.metric} {self.mode} {self.count}"


@dataclass(frozen=True)
class Tier:
    after: float  # seconds since the version was created
    storage_class: str

    def describe(self) -> str:
        return f"tier {self.storage_class} after {format_duration(self.after)}"


@dataclass(frozen=True)
class Rule:
    match: str
    keep_last: int | None = None
    keep_every_steps: int | None = None
    keep_best: KeepBest | None = None
    keep_within: float | None = None  # seconds
    keep_all: bool = False
    tier: "Tier | None" = None
    index: int = 0
    line: int | None = None

    @property
    def label(self) -> str:
        """How plans and tombstones name the rule: `rules[0] (match '*/*/ckpt')`."""
        return f"rules[{self.index}] (match {self.match!r})"

    def matches(self, artifact: str) -> bool:
        return fnmatch.fnmatchcase(artifact, self.match)

    def clauses(self) -> list[str]:
        out = []
        if self.keep_all:
            out.append("keep_all")
        if self.keep_last is not None:
            out.append(f"keep_last {self.keep_last}")
        if self.keep_every_steps is not None:
            out.append(f"keep_every_steps {self.keep_every_steps}")
        if self.keep_best is not None:
            out.append(self.keep_best.describe())
        if self.keep_within is not None:
            out.append(f"keep_within {format_duration(self.keep_within)}")
        return out


@dataclass(frozen=True)
class RetentionPolicy:
    rules: tuple[Rule, ...] = ()
    grace_period: float = DEFAULT_GRACE_PERIOD
    storage_price_per_gb_month: float = DEFAULT_PRICE_PER_GB_MONTH
    sweep_window: float = DEFAULT_SWEEP_WINDOW
    record_retention: float = DEFAULT_RECORD_RETENTION
    # class -> prices; STANDARD's storage price is storage_price_per_gb_month
    class_prices: Mapping[str, ClassPrice] = field(
        default_factory=lambda: dict(DEFAULT_CLASS_PRICES))
    source: str | None = None  # the file it came from, for error messages
    lines: Mapping[str, int] = field(default_factory=dict)

    def rule_for(self, artifact: str) -> Rule | None:
        return next((r for r in self.rules if r.matches(artifact)), None)

    @property
    def tiers(self) -> bool:
        """Whether any rule moves versions to a colder storage class."""
        return any(r.tier is not None for r in self.rules)

    def line_of(self, key: str) -> int | None:
        return line_of(self.lines, key)

    def error(self, message: str, key: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.source, line=self.line_of(key), key=key, hint=hint)


class _Checker:
    def __init__(self, source: str | None, lines: Mapping[str, int]) -> None:
        self.policy = RetentionPolicy(source=source, lines=dict(lines))

    def fail(self, message: str, key: str, hint: str | None = None) -> ConfigError:
        return self.policy.error(message, key, hint)

    def unknown_keys(self, raw: Mapping[Any, Any], known: Sequence[str], path: str) -> None:
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = f"did you mean `{close[0]}`?" if close else "valid keys: " + ", ".join(known)
                raise self.fail("unknown key", f"{path}.{key}", hint)

    def duration(self, raw: Mapping[str, Any], key: str, path: str, default: float | None
                 ) -> float | None:
        value = raw.get(key)
        if value is None:
            return default
        try:
            return parse_duration(value)
        except DurationTooLong as exc:
            raise self.fail(str(exc), f"{path}.{key}", _TOO_LONG_HINTS.get(key)) from None
        except ValueError as exc:
            raise self.fail(str(exc), f"{path}.{key}", _DURATION_HINT) from None

    def number(self, raw: Mapping[str, Any], key: str, path: str, default: float) -> float:
        value = raw.get(key)
        if value is None:
            return default
        if not finite_number(value) or value < 0:
            raise self.fail(f"must be a number >= 0, got {describe_value(value)}", f"{path}.{key}")
        return float(value)

    def count(self, raw: Mapping[str, Any], key: str, path: str, minimum: int) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"must be a whole number >= {minimum}, got {describe_value(value)}",
                            f"{path}.{key}")
        return value


def load_retention(config: Any) -> RetentionPolicy:
    """Validate `config.retention` (a policy.config.Config, or anything with `retention`,
    `source` and `lines`).  No section means: no rules (every artifact kept whole), defaults
    for the rest."""
    raw = getattr(config, "retention", None)
    c = _Checker(getattr(config, "source", None), getattr(config, "lines", {}) or {})
    if raw is None:
        return c.policy
    if not isinstance(raw, dict):
        raise c.fail(f"must be a mapping of settings, got {describe_value(raw)}", "retention")
    c.unknown_keys(raw, RETENTION_KEYS, "retention")
    grace = c.duration(raw, "grace_period", "retention", DEFAULT_GRACE_PERIOD)
    window = c.duration(raw, "sweep_window", "retention", DEFAULT_SWEEP_WINDOW)
    assert grace is not None and window is not None
    if window < MIN_SWEEP_WINDOW:
        raise c.fail(f"must be at least {format_duration(MIN_SWEEP_WINDOW)}",
                     "retention.sweep_window",
                     "it bounds how long a gc may delete with one listing of the manifests")
    if window > MAX_SWEEP_WINDOW:
        raise c.fail(f"must be at most {format_duration(MAX_SWEEP_WINDOW)}, got "
                     f"{format_duration(window)}", "retention.sweep_window",
                     "a push that uses a condemned chunk sleeps this long before its commit")
    keep_records = c.duration(raw, "record_retention", "retention", None)
    if keep_records is None:
        keep_records = max(DEFAULT_RECORD_RETENTION, 2 * window)
    elif keep_records < 2 * window:
        raise c.fail(f"must be at least twice sweep_window ({format_duration(2 * window)})",
                     "retention.record_retention",
                     "pushers find sweeps that raced their commit through these records")
    elif keep_records > MAX_RECORD_RETENTION:
        raise c.fail(f"must be at most {format_duration(MAX_RECORD_RETENTION)}, got "
                     f"{format_duration(keep_records)}", "retention.record_retention",
                     "they need to outlast a push, not more: every push reads them when it commits")
    price = c.number(raw, "storage_price_per_gb_month", "retention", DEFAULT_PRICE_PER_GB_MONTH)
    rules_raw = raw.get("rules")
    rules: list[Rule] = []
    if rules_raw is not None:
        if not isinstance(rules_raw, list):
            raise c.fail(f"must be a list of rules, got {describe_value(rules_raw)}", "retention.rules",
                         'e.g. rules: [{match: "*/*/ckpt", keep_last: 5}]')
        for i, item in enumerate(rules_raw):
            rules.append(_load_rule(c, item, i))
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.match in seen:
            first = seen[rule.match]
            raise c.fail(f"never applies: {first.label} on line {first.line} has the same match "
                         "and comes first", f"retention.rules[{rule.index}].match",
                         "merge the two rules")
        seen[rule.match] = rule
    prices = _load_class_prices(c, raw.get("storage_classes"), price)
    return RetentionPolicy(rules=tuple(rules), grace_period=grace,
                           storage_price_per_gb_month=price, sweep_window=window,
                           record_retention=keep_records, class_prices=prices,
                           source=c.policy.source, lines=c.policy.lines)


def no_section_error(config: Any) -> ConfigError:
    """What `gc --policy FILE` says of a FILE without retention settings.  A `retention:` key
    with nothing under it reads as no section to YAML, but
    "has no `retention:` section" then sends the user looking for a line they can see."""
    source = getattr(config, "source", None)
    line = (getattr(config, "lines", None) or {}).get("retention")
    if line is not None:
        return ConfigError("`retention:` is empty", path=source, line=line,
                           hint="put its settings under it, indented (e.g. rules: [{match: "
                                "'*/*/ckpt', keep_last: 5}]); see README.md, 'Retention and gc'")
    return ConfigError("has no `retention:` section", path=source,
                       hint="see the policy example in README.md, 'Retention and gc'")


def _load_class_prices(c: _Checker, raw: Any, standard: float) -> dict[str, ClassPrice]:
    """The default table, with storage_price_per_gb_month as STANDARD's price and any
    per-class override (`storage_classes: {STANDARD_IA: {price_per_gb_month: 0.0125}}`)."""
    import dataclasses

    prices = dict(DEFAULT_CLASS_PRICES)
    prices["STANDARD"] = dataclasses.replace(prices["STANDARD"], price_per_gb_month=standard)
    if raw is None:
        return prices
    path = "retention.storage_classes"
    if not isinstance(raw, dict):
        raise c.fail(f"must be a mapping of class -> prices, got {describe_value(raw)}", path,
                     "e.g. storage_classes: {STANDARD_IA: {price_per_gb_month: 0.0125}}")
    for name, item in raw.items():
        where = f"{path}.{name}"
        if name not in prices:
            raise c.fail(f"unknown storage class {name!r}", where,
                         "known: " + ", ".join(prices))
        if not isinstance(item, dict):
            raise c.fail(f"must be a mapping of prices, got {describe_value(item)}", where,
                         "keys: " + ", ".join(CLASS_PRICE_KEYS))
        c.unknown_keys(item, CLASS_PRICE_KEYS, where)
        base = prices[name]
        days = c.count(item, "min_storage_days", where, 0)
        prices[name] = ClassPrice(
            price_per_gb_month=c.number(item, "price_per_gb_month", where,
                                        base.price_per_gb_month),
            min_storage_days=base.min_storage_days if days is None else days,
            retrieval_per_gb=c.number(item, "retrieval_per_gb", where, base.retrieval_per_gb),
            copy_per_1000=c.number(item, "copy_per_1000", where, base.copy_per_1000),
            monitoring_per_1000_month=c.number(item, "monitoring_per_1000_month", where,
                                               base.monitoring_per_1000_month))
    return prices


def _load_tier(c: _Checker, raw: Any, path: str) -> Tier:
    example = "e.g. tier: {after: 30d, class: STANDARD_IA}"
    if not isinstance(raw, dict):
        raise c.fail(f"must be a mapping, got {describe_value(raw)}", path, example)
    c.unknown_keys(raw, TIER_KEYS, path)
    cls = raw.get("class")
    if cls in RESTORE_CLASSES:
        raise c.fail(f"{cls} objects need a restore step (RestoreObject, hours) before any "
                     "read, which ckptlake does not do: pulls would fail", f"{path}.class",
                     "use GLACIER_IR (read at once, $0.03/GB retrieval) or STANDARD_IA")
    if cls not in COLD_CLASSES:
        raise c.fail(f"must be one of {', '.join(COLD_CLASSES)}, got {describe_value(cls)}",
                     f"{path}.class" if "class" in raw else path, example)
    after = c.duration(raw, "after", path, None)
    if after is None:
        raise c.fail("needs `after`: how old a version must be before it may go cold", path,
                     example)
    return Tier(after=after, storage_class=cls)


def _load_rule(c: _Checker, item: Any, i: int) -> Rule:
    path = f"retention.rules[{i}]"
    if not isinstance(item, dict):
        raise c.fail(f"each rule must be a mapping, got {describe_value(item)}", path,
                     'e.g. - {match: "*/*/ckpt", keep_last: 5}')
    c.unknown_keys(item, RULE_KEYS, path)
    match = item.get("match")
    if not isinstance(match, str) or not match.strip():
        raise c.fail("every rule needs a `match` glob (a non-empty string)"
                     + ("" if match is None else f", got {describe_value(match)}"),
                     f"{path}.match" if "match" in item else path,
                     'e.g. match: "*/*/ckpt" (fnmatch; * also matches /)')
    keep_all = item.get("keep_all")
    if keep_all is not None and not isinstance(keep_all, bool):
        raise c.fail(f"must be true or false, got {describe_value(keep_all)}", f"{path}.keep_all")
    keep_best = None
    if item.get("keep_best") is not None:
        keep_best = _load_keep_best(c, item["keep_best"], f"{path}.keep_best")
    tier = None
    if item.get("tier") is not None:
        tier = _load_tier(c, item["tier"], f"{path}.tier")
    rule = Rule(
        match=match, keep_last=c.count(item, "keep_last", path, 0),
        keep_every_steps=c.count(item, "keep_every_steps", path, 1), keep_best=keep_best,
        keep_within=c.duration(item, "keep_within", path, None), keep_all=bool(keep_all),
        tier=tier, index=i, line=c.policy.line_of(path))
    if not (rule.keep_all or (rule.keep_last or 0) > 0 or rule.keep_every_steps
            or rule.keep_best or (rule.keep_within or 0) > 0):
        raise c.fail("this rule keeps nothing: every version it matches would be deleted "
                     "(only aliased and latest versions would survive)", path,
                     "add a keep_* clause (keep_last: 1 keeps the newest), or keep_all: true; "
                     "an artifact's latest version is never deleted (ckptlake rm deletes the "
                     "others one by one)")
    return rule


def _load_keep_best(c: _Checker, raw: Any, path: str) -> KeepBest:
    if not isinstance(raw, dict):
        raise c.fail(f"must be a mapping, got {describe_value(raw)}", path,
                     "e.g. keep_best: {metric: val_loss, mode: min, count: 2}")
    c.unknown_keys(raw, KEEP_BEST_KEYS, path)
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        raise c.fail("needs a `metric` name (a non-empty string)",
                     f"{path}.metric" if "metric" in raw else path)
    mode = raw.get("mode", "min")
    if mode not in ("min", "max"):
        raise c.fail(f"must be min or max, got {describe_value(mode)}", f"{path}.mode",
                     "min keeps the lowest values (losses), max the highest (accuracies)")
    count = c.count(raw, "count", path, 1)
    keep_missing = raw.get("keep_missing", True)
    if not isinstance(keep_missing, bool):
        raise c.fail(f"must be true or false, got {describe_value(keep_missing)}",
                     f"{path}.keep_missing")
    return KeepBest(metric=metric, mode=mode, count=1 if count is None else count,
                    keep_missing=keep_missing)


# --------------------------------------------------------------------------------------------
# Selection

@dataclass(frozen=True)
class VersionFacts:
    """What retention may look at: never storage, only what the manifest says."""

    artifact: str
    version: int
    step: int | None
    created: datetime
    metrics: Mapping[str, float] = field(default_factory=dict)
    # False: the manifest's time could not be read; `created` is then the reading's time
    # (no age rule deletes the version), and what gc and du show says "unknown"
    created_known: bool = True


@dataclass(frozen=True)
class Decision:
    artifact: str
    version: int
    step: int | None
    created: datetime
    keep: bool
    rule: str | None  # Rule.label, None when no rule matched the artifact
    reasons: tuple[str, ...]  # why kept (every clause that keeps it), or why not

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def check_metrics(policy: RetentionPolicy, versions: Iterable[VersionFacts]) -> None:
    """A keep_best metric that no matched version has is a typo until proven otherwise: refuse
    (naming the policy line) rather than keep everything, or nothing, for the wrong reason."""
    seen: dict[int, bool] = {}
    for v in versions:
        rule = policy.rule_for(v.artifact)
        if rule is None or rule.keep_best is None:
            continue
        seen[rule.index] = seen.get(rule.index, False) or rule.keep_best.metric in v.metrics
    for rule in policy.rules:
        if rule.keep_best is not None and seen.get(rule.index) is False:
            raise policy.error(
                f"no version of the artifacts this rule matches has the metric "
                f"{rule.keep_best.metric!r}", f"retention.rules[{rule.index}].keep_best.metric",
                "check the metric name against: ckptlake ls ARTIFACT")


def select(versions: Sequence[VersionFacts], rules: RetentionPolicy | Sequence[Rule],
           aliases: Mapping[str, Mapping[str, int]], now: datetime) -> list[Decision]:
    """Keep or delete each version, with the reasons (sorted by artifact, then version).

    aliases: artifact -> {alias name: version}.
    """
    rule_list = rules.rules if isinstance(rules, RetentionPolicy) else tuple(rules)
    by_artifact: dict[str, list[VersionFacts]] = {}
    for v in versions:
        by_artifact.setdefault(v.artifact, []).append(v)
    out: list[Decision] = []
    for artifact in sorted(by_artifact):
        group = sorted(by_artifact[artifact], key=lambda v: v.version)
        rule = next((r for r in rule_list if r.matches(artifact)), None)
        out.extend(_select_artifact(group, rule, aliases.get(artifact, {}), now))
    return out


def _select_artifact(group: list[VersionFacts], rule: Rule | None,
                     alias_map: Mapping[str, int], now: datetime) -> list[Decision]:
    keeps: dict[int, list[str]] = {v.version: [] for v in group}
    misses: dict[int, list[str]] = {v.version: [] for v in group}
    for name, number in sorted(alias_map.items()):
        if number in keeps:
            keeps[number].append(f"alias {name}")
    latest = group[-1].version
    keeps[latest].append("latest version (always kept: what a resume reads)")
    if rule is None:
        return [Decision(v.artifact, v.version, v.step, v.created, True, None,
                         tuple(keeps[v.version] + ["no retention rule matches this artifact"]))
                for v in group]
    if rule.keep_all:
        for v in group:
            keeps[v.version].append("keep_all")
    if rule.keep_last is not None:
        newest = {v.version for v in group[::-1][:rule.keep_last]}
        for v in group:
            (keeps if v.version in newest else misses)[v.version].append(
                f"keep_last {rule.keep_last}" if v.version in newest
                else f"not among the newest {rule.keep_last}")
    if rule.keep_every_steps is not None:
        n = rule.keep_every_steps
        for v in group:
            if v.step is not None and v.step % n == 0:
                keeps[v.version].append(f"keep_every_steps {n} (step {v.step})")
            else:
                misses[v.version].append("no step" if v.step is None
                                         else f"step {v.step} is not a multiple of {n}")
    if rule.keep_best is not None:
        _keep_best(group, rule.keep_best, keeps, misses)
    if rule.keep_within is not None:
        window = timedelta(seconds=rule.keep_within)
        label = format_duration(rule.keep_within)
        for v in group:
            if now - _aware(v.created) < window:
                keeps[v.version].append(f"keep_within {label}")
            else:
                misses[v.version].append(f"older than {label}")
    return [Decision(v.artifact, v.version, v.step, v.created, bool(keeps[v.version]),
                     rule.label, tuple(keeps[v.version] or misses[v.version]
                                       or ["no keep_* clause of the rule keeps it"]))
            for v in group]


def _keep_best(group: list[VersionFacts], best: KeepBest, keeps: dict[int, list[str]],
               misses: dict[int, list[str]]) -> None:
    scored = [v for v in group if _finite(v.metrics.get(best.metric))]
    sign = 1.0 if best.mode == "min" else -1.0
    # Ties: the newer version ranks first (it is usually the one people want back).
    ranked = sorted(scored, key=lambda v: (sign * float(v.metrics[best.metric]), -v.version))
    rank = {v.version: i + 1 for i, v in enumerate(ranked)}
    for v in group:
        r = rank.get(v.version)
        if r is None:
            if best.keep_missing:
                keeps[v.version].append(f"keep_best: has no {best.metric} (keep_missing)")
            else:
                misses[v.version].append(f"has no {best.metric}")
        elif r <= best.count:
            keeps[v.version].append(f"keep_best {best.metric} {best.mode} "
                                    f"#{r} ({v.metrics[best.metric]:g})")
        else:
            misses[v.version].append(f"{best.metric} {v.metrics[best.metric]:g} is not among "
                                     f"the best {best.count}")


def _finite(value: Any) -> bool:
    return finite_number(value)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def resolve_retention(policy: RetentionPolicy | str | os.PathLike[str] | None) -> RetentionPolicy:
    """A policy object as given, or the policy file it names, or the configured one."""
    if isinstance(policy, RetentionPolicy):
        return policy
    if policy is None:
        return load_retention(load_config())
    return load_retention(load_config(os.fspath(policy), origin="the policy argument"))


# Reasons that make a kept version hot: someone is likely to read it soon.  The aliased and
# the latest version (deployments, resumes), the newest N (keep_last: what a resume reads) and
# the best N by a metric (keep_best's ranks: what evaluation and deployment read).  Versions
# kept only by keep_all, keep_every_steps (long-term milestones), keep_within or keep_best's
# keep_missing are kept for safety, not for reading: they may go cold.
_HOT_PREFIXES = ("alias ", "latest version", "keep_last ")


def cold_class(decision: Decision, rule: Rule | None, now: datetime) -> str | None:
    """The storage class a kept version may go to, or None if it stays hot (docs: README,
    "Storage-class tiering").  Cold: kept, under a rule with `tier`, older than `tier.after`,
    and kept by no hot reason (alias, latest, keep_last, a keep_best rank)."""
    if not decision.keep or rule is None or rule.tier is None:
        return None
    if now - _aware(decision.created) < timedelta(seconds=rule.tier.after):
        return None
    for reason in decision.reasons:
        if reason.startswith(_HOT_PREFIXES):
            return None
        if reason.startswith("keep_best ") and "#" in reason:  # a rank, not keep_missing
            return None
    return rule.tier.storage_class
