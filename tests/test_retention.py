"""Retention policy: validation with file:line:key errors, and the pure selection (with
hypothesis properties)."""
from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptlake.errors import ConfigError
from ckptlake.policy.config import load_config
from ckptlake.policy.retention import (MAX_DURATION, KeepBest, RetentionPolicy, Rule,
                                       VersionFacts, check_metrics, format_duration,
                                       load_retention, parse_duration, select)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)

ISSUE_POLICY = """\
retention:
  grace_period: 24h
  storage_price_per_gb_month: 0.023
  rules:
    - match: "*/*/ckpt"
      keep_last: 5
      keep_every_steps: 10000
      keep_best: {metric: val_loss, mode: min, count: 2}
      keep_within: 7d
    - match: "*/*/model"
      keep_all: true
"""


def policy_from(tmp_path: Path, text: str) -> RetentionPolicy:
    path = tmp_path / "ckptlake.yaml"
    path.write_text(textwrap.dedent(text))
    return load_retention(load_config(str(path)))


def config_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        policy_from(tmp_path, text)
    return info.value


# ---- durations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [("0s", 0), ("90s", 90), ("30m", 1800), ("24h", 86400),
                                          ("7d", 604800), ("2w", 1209600), (" 5m ", 300)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["7", 7, "7 days", "1.5h", "-1h", "h", "", "24H", None, True])
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 90, 3600, 86400 * 7, 86400 * 3)] == \
        ["0s", "90s", "1h", "7d", "3d"]


# ---- loading and validation --------------------------------------------------------------------

def test_issue_policy_loads(tmp_path: Path) -> None:
    p = policy_from(tmp_path, ISSUE_POLICY)
    assert p.grace_period == 86400 and p.storage_price_per_gb_month == 0.023
    ckpt, model = p.rules
    assert (ckpt.keep_last, ckpt.keep_every_steps, ckpt.keep_within) == (5, 10000, 7 * 86400)
    assert ckpt.keep_best == KeepBest("val_loss", "min", 2, keep_missing=True)
    assert model.keep_all and model.line == 10 and ckpt.line == 5
    assert p.rule_for("gpt2/run-7/ckpt") is ckpt and p.rule_for("gpt2/run-7/model") is model
    assert p.rule_for("tok") is None
    assert p.sweep_window == 30 and p.record_retention >= 2 * p.sweep_window


def test_no_section_means_no_rules_and_defaults(tmp_path: Path) -> None:
    p = policy_from(tmp_path, "concurrency: 4\n")
    assert p.rules == () and p.grace_period == 86400


@pytest.mark.parametrize("text,line,key,words", [
    ("retention:\n  grace_perod: 24h\n", 2, "retention.grace_perod", "did you mean `grace_period`"),
    ("retention:\n  grace_period: 24\n", 2, "retention.grace_period", "24h"),
    ("retention:\n  grace_period: 1 day\n", 2, "retention.grace_period", "not a duration"),
    ("retention:\n  rules:\n    - match: a\n      keep_lst: 3\n", 4,
     "retention.rules[0].keep_lst", "keep_last"),
    ("retention:\n  rules:\n    - match: a\n      keep_within: 7days\n", 4,
     "retention.rules[0].keep_within", "not a duration"),
    ("retention:\n  rules:\n    - match: a\n      keep_last: -1\n", 4,
     "retention.rules[0].keep_last", ">= 0"),
    ("retention:\n  rules:\n    - match: a\n      keep_last: '5'\n", 4,
     "retention.rules[0].keep_last", "whole number"),
    ("retention:\n  rules:\n    - match: a\n      keep_last: 0\n", 3, "retention.rules[0]",
     "keeps nothing"),
    ("retention:\n  rules:\n    - match: a\n      keep_all: false\n", 3, "retention.rules[0]",
     "keeps nothing"),
    ("retention:\n  rules:\n    - match: a\n      keep_within: 0s\n", 3, "retention.rules[0]",
     "keeps nothing"),
    ("retention:\n  rules:\n    - keep_last: 3\n", 3, "retention.rules[0]", "match"),
    ("retention:\n  rules:\n    - match: a\n      keep_best: {metric: loss, mode: lowest}\n", 4,
     "retention.rules[0].keep_best.mode", "min or max"),
    ("retention:\n  rules:\n    - match: a\n      keep_best: {mode: min}\n", 4,
     "retention.rules[0].keep_best", "metric"),
    ("retention:\n  rules:\n    - match: a\n      keep_best: {metric: l, count: 0}\n", 4,
     "retention.rules[0].keep_best.count", ">= 1"),
    ("retention:\n  rules:\n    - match: a\n      keep_best: {metric: l, keep_misisng: 1}\n", 4,
     "retention.rules[0].keep_best.keep_misisng", "keep_missing"),
    ("retention:\n  rules:\n    - match: a\n      keep_all: yes please\n", 4,
     "retention.rules[0].keep_all", "true or false"),
    ("retention:\n  rules:\n    - match: a\n      keep_last: 1\n    - match: a\n"
     "      keep_all: true\n", 5, "retention.rules[1].match", "never applies"),
    ("retention:\n  rules: {match: a}\n", 2, "retention.rules", "list"),
    ("retention:\n  storage_price_per_gb_month: cheap\n", 2,
     "retention.storage_price_per_gb_month", "number"),
    ("retention:\n  sweep_window: 0s\n", 2, "retention.sweep_window", "at least 1s"),
    ("retention:\n  sweep_window: 10s\n  record_retention: 15s\n", 3,
     "retention.record_retention", "twice"),
])
def test_policy_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                              words: str) -> None:
    err = config_error(tmp_path, text)
    assert err.path == str(tmp_path / "ckptlake.yaml")
    assert (err.line, err.key) == (line, key), str(err)
    assert words in str(err)
    assert str(err).startswith(f"{tmp_path / 'ckptlake.yaml'}:{line}: {key}: ")


@pytest.mark.parametrize("text,line,key", [
    ("retention:\n  grace_period: 99999999999999999999w\n", 2, "retention.grace_period"),
    ("retention:\n  grace_period: 100000000w\n", 2, "retention.grace_period"),
    ("retention:\n  grace_period: 36501d\n", 2, "retention.grace_period"),
    ("retention:\n  rules:\n    - match: c\n      keep_within: 99999999999d\n", 4,
     "retention.rules[0].keep_within"),
    ("retention:\n  rules:\n    - match: c\n      keep_last: 1\n      tier:\n"
     "        after: 99999999999999999999w\n        class: STANDARD_IA\n", 6,
     "retention.rules[0].tier.after"),
    ("retention:\n  sweep_window: 1" + "0" * 400 + "s\n", 2, "retention.sweep_window"),
    ("retention:\n  record_retention: 1" + "0" * 5000 + "s\n", 2,
     "retention.record_retention"),
])
def test_durations_above_100_years_are_refused(tmp_path: Path, text: str, line: int,
                                               key: str) -> None:
    """Unbounded, they reached gc's datetime arithmetic and failed there with an OverflowError
    (exit 1, 'internal error'); 5000 digits would not even reach it (int() refuses them)."""
    err = config_error(tmp_path, text)
    assert (err.line, err.key) == (line, key), str(err)
    assert str(err).startswith(f"{tmp_path / 'ckptlake.yaml'}:{line}: {key}: must be at most "
                               "36500d (100 years), got ")
    assert err.hint


def test_durations_up_to_100_years_are_accepted(tmp_path: Path) -> None:
    p = policy_from(tmp_path, """\
        retention:
          grace_period: 36500d
          rules:
            - match: c
              keep_within: 5214w
              tier: {after: 0036500d, class: STANDARD_IA}
        """)
    assert p.grace_period == MAX_DURATION == parse_duration("36500d")
    assert p.rules[0].keep_within == 5214 * 7 * 86400 and p.rules[0].tier.after == MAX_DURATION
    with pytest.raises(ValueError, match="at most 36500d"):
        parse_duration("36501d")


# ---- selection ---------------------------------------------------------------------------------

def facts(n: int, *, artifact: str = "p/r/ckpt", days_old: float | None = None,
          metrics: dict[str, float] | None = None, step: int | None = -1) -> VersionFacts:
    return VersionFacts(artifact=artifact, version=n, step=n * 1000 if step == -1 else step,
                        created=NOW - (DAY * (days_old if days_old is not None else 40 - n)),
                        metrics=metrics if metrics is not None else {"val_loss": 5.0 + n})


def kept(decisions) -> list[int]:
    return [d.version for d in decisions if d.keep]


def test_issue_policy_selection(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, ISSUE_POLICY)
    versions = []
    for n in range(1, 31):  # v30 is newest; one per day, v24..v30 within 7 days
        metrics = {"val_loss": {7: 1.0, 15: 1.5}.get(n, 3.0 + n)}
        if n == 3:
            metrics = {}  # a preemption save: no val_loss, kept by keep_missing
        versions.append(facts(n, days_old=30 - n + 0.5, metrics=metrics))
    decisions = select(versions, policy, {"p/r/ckpt": {"prod": 12}}, NOW)
    assert kept(decisions) == [3, 7, 10, 12, 15, 20, 24, 25, 26, 27, 28, 29, 30]
    by = {d.version: d for d in decisions}
    assert by[12].reasons == ("alias prod",)
    assert "keep_best val_loss min #1" in by[7].reason
    assert "keep_every_steps 10000 (step 20000)" in by[20].reason
    assert by[3].reasons == ("keep_best: has no val_loss (keep_missing)",)
    assert by[1].rule == "rules[0] (match '*/*/ckpt')"
    assert by[1].reason == ("not among the newest 5; step 1000 is not a multiple of 10000; "
                            "val_loss 4 is not among the best 2; older than 7d")
    assert by[30].reasons[0].startswith("latest version")


def test_unmatched_artifact_kept_whole_and_model_keep_all(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, ISSUE_POLICY)
    versions = [facts(n, artifact="tok") for n in range(1, 4)] + \
        [facts(n, artifact="a/b/model") for n in range(1, 4)]
    decisions = select(versions, policy, {}, NOW)
    assert all(d.keep for d in decisions)
    tok = [d for d in decisions if d.artifact == "tok"]
    assert all(d.rule is None and "no retention rule matches" in d.reason for d in tok)


def test_keep_missing_false_and_max_mode() -> None:
    rule = Rule(match="*", keep_best=KeepBest("acc", "max", 1, keep_missing=False))
    versions = [facts(1, metrics={"acc": 0.9}), facts(2, metrics={}),
                facts(3, metrics={"acc": 0.5}), facts(4, metrics={"acc": 0.7})]
    decisions = select(versions, [rule], {}, NOW)
    assert kept(decisions) == [1, 4]  # best acc, and v4 as latest
    assert "has no acc" in decisions[1].reason


def test_keep_best_ties_prefer_newer_and_nan_is_missing() -> None:
    rule = Rule(match="*", keep_best=KeepBest("loss", "min", 1, keep_missing=False))
    versions = [facts(1, metrics={"loss": 1.0}), facts(2, metrics={"loss": 1.0}),
                facts(3, metrics={"loss": float("nan")}), facts(4, metrics={"loss": 9.0})]
    assert kept(select(versions, [rule], {}, NOW)) == [2, 4]


def test_steps_missing_never_match_every_steps() -> None:
    rule = Rule(match="*", keep_every_steps=2000)
    versions = [facts(1, step=None), facts(2, step=4000), facts(3, step=3000), facts(4, step=None)]
    assert kept(select(versions, [rule], {}, NOW)) == [2, 4]


def test_check_metrics_names_the_policy_line(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, ISSUE_POLICY.replace("val_loss", "val_los"))
    check_metrics(policy, [facts(1, artifact="x/y/model")])  # rule 0 matched nothing: fine
    with pytest.raises(ConfigError) as info:
        check_metrics(policy, [facts(1), facts(2, artifact="x/y/model")])
    assert info.value.line == 8 and info.value.key == "retention.rules[0].keep_best.metric"
    assert "'val_los'" in str(info.value)
    check_metrics(policy_from(tmp_path, ISSUE_POLICY), [facts(1)])


# ---- properties --------------------------------------------------------------------------------

rules_st = st.builds(
    Rule, match=st.just("*"),
    keep_last=st.one_of(st.none(), st.integers(0, 6)),
    keep_every_steps=st.one_of(st.none(), st.integers(1, 5)),
    keep_best=st.one_of(st.none(), st.builds(KeepBest, metric=st.just("loss"),
                                             mode=st.sampled_from(["min", "max"]),
                                             count=st.integers(1, 3),
                                             keep_missing=st.booleans())),
    keep_within=st.one_of(st.none(), st.integers(0, 10).map(lambda d: d * 86400.0)),
    keep_all=st.booleans())


@st.composite
def lakes(draw):
    n = draw(st.integers(1, 25))
    versions = []
    for i in range(1, n + 1):
        loss = draw(st.one_of(st.none(), st.integers(0, 5).map(float)))
        versions.append(VersionFacts(
            artifact="a/ckpt", version=i, step=draw(st.one_of(st.none(), st.integers(0, 12))),
            created=NOW - timedelta(days=draw(st.integers(0, 20))),
            metrics={} if loss is None else {"loss": loss}))
    alias_targets = draw(st.lists(st.integers(1, n), max_size=3))
    aliases = {f"a{j}": v for j, v in enumerate(alias_targets)}
    return versions, aliases


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lakes(), rules_st)
def test_properties(lake, rule) -> None:
    versions, aliases = lake
    decisions = select(versions, [rule], {"a/ckpt": aliases}, NOW)
    assert [d.version for d in decisions] == sorted(v.version for v in versions)
    keep = {d.version for d in decisions if d.keep}
    # aliased versions and the latest are never deleted
    assert set(aliases.values()) <= keep
    assert max(v.version for v in versions) in keep
    # keep_last N keeps the N newest
    if rule.keep_last:
        assert sorted(v.version for v in versions)[-rule.keep_last:] == \
            sorted(keep & set(sorted(v.version for v in versions)[-rule.keep_last:]))
    # keep_all never deletes
    if rule.keep_all:
        assert keep == {v.version for v in versions}
    # every decision has a reason
    assert all(d.reasons for d in decisions)
    # idempotent: selecting again among the survivors deletes nothing more
    survivors = [v for v in versions if v.version in keep]
    again = select(survivors, [rule], {"a/ckpt": aliases}, NOW)
    assert all(d.keep for d in again)
    # pure: the same input gives the same output
    assert select(versions, [rule], {"a/ckpt": aliases}, NOW) == decisions


@settings(max_examples=100, deadline=None)
@given(lakes(), rules_st, rules_st)
def test_first_matching_rule_applies(lake, first, second) -> None:
    versions, aliases = lake
    a = select(versions, [first, second], {"a/ckpt": aliases}, NOW)
    b = select(versions, [first], {"a/ckpt": aliases}, NOW)
    assert a == b
    other = Rule(match="zzz/*", keep_last=1)
    assert select(versions, [other, first], {"a/ckpt": aliases}, NOW) == b


def test_example_file_documents_every_policy_key() -> None:
    from ckptlake.policy.egress import EGRESS_KEYS, ROUTES, load_egress
    from ckptlake.policy.retention import KEEP_BEST_KEYS, RETENTION_KEYS, RULE_KEYS

    example = Path(__file__).resolve().parent.parent / "ckptlake.example.yaml"
    text = example.read_text()
    for key in RETENTION_KEYS + RULE_KEYS + KEEP_BEST_KEYS + EGRESS_KEYS + ROUTES:
        assert f"{key}:" in text or f"{key} " in text, key
    config = load_config(str(example))
    assert len(load_retention(config).rules) == 2
    assert load_egress(config).confirm_above_usd == 25.0
