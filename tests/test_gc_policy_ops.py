"""gc's retention policy against the lake, as an ops review found it.

The keep_best metric check with --match looks at every artifact the rule takes, not only the
selected ones; a keep_every_steps rule over versions without a step is noted (a refusal blocked
the whole gc, the sweep too, for a rule that deleted nothing); rules that match no artifact, or whose artifacts an earlier rule takes,
are in the --json plan too; a --policy file's sections other than retention: draw a warning.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def lake(tmp_path: Path) -> str:
    """team/run1/ckpt: 3 versions with a step and val_loss; team/run1/logs: 2 without either."""
    url = (tmp_path / "lake").as_uri()
    src = tmp_path / "src"
    src.mkdir()
    for i, (artifact, extra) in enumerate([
            ("team/run1/ckpt", ["--step", "100", "--metric", "val_loss=3"]),
            ("team/run1/ckpt", ["--step", "200", "--metric", "val_loss=1"]),
            ("team/run1/ckpt", ["--step", "300", "--metric", "val_loss=2"]),
            ("team/run1/logs", []), ("team/run1/logs", [])]):
        (src / "f.bin").write_bytes(b"%d" % i * 50)
        r = run("push", src, artifact, *extra, "--lake", url, "--quiet")
        assert r.exit_code == 0, r.stderr
    return url


def policy(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return p


# ---- 1. keep_best's metric check with --match -------------------------------------------------

def test_match_checks_the_keep_best_metric_over_every_artifact_the_rule_takes(
        lake: str, tmp_path: Path) -> None:
    p = policy(tmp_path, "retention:\n  rules:\n    - match: 'team/*'\n"
                         "      keep_best: {metric: val_loss}\n")
    r = run("gc", "--dry-run", "--match", "team/run1/logs", "--policy", p, "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert "team/run1/logs" in r.stdout and "team/run1/ckpt" not in r.stdout
    # a metric no artifact of the rule has is still refused, with --match as without
    p = policy(tmp_path, "retention:\n  rules:\n    - match: 'team/*'\n"
                         "      keep_best: {metric: val_los}\n")
    for extra in ([], ["--match", "team/run1/logs"]):
        r = run("gc", "--dry-run", *extra, "--policy", p, "--lake", lake)
        assert r.exit_code == 2 and "has the metric 'val_los'" in r.stderr, (extra, r.stderr)
        assert "policy.yaml:4: retention.rules[0].keep_best.metric:" in r.stderr


# ---- 2. keep_every_steps over versions without a step -----------------------------------------

def test_a_keep_every_steps_rule_over_versions_without_a_step_is_noted(
        lake: str, tmp_path: Path) -> None:
    p = policy(tmp_path, "retention:\n  rules:\n    - match: 'team/*/logs'\n"
                         "      keep_every_steps: 100\n")
    for extra in ([], ["--match", "team/run1/logs"]):
        r = run("gc", "--dry-run", *extra, "--policy", p, "--lake", lake)
        assert r.exit_code == 0, (extra, r.stderr)
        assert ("rules[0] (match 'team/*/logs') keeps no version by keep_every_steps: no "
                "version it matches has a step (push them with --step N) (line 3)") in r.stdout
    # steps present (the checkpoints): it runs
    p = policy(tmp_path, "retention:\n  rules:\n    - match: 'team/*/ckpt'\n"
                         "      keep_every_steps: 200\n")
    r = run("gc", "--dry-run", "--policy", p, "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert "keep_every_steps 200" in r.stdout


def test_keep_every_steps_beside_another_clause_is_noted_not_refused(
        lake: str, tmp_path: Path) -> None:
    p = policy(tmp_path, "retention:\n  rules:\n    - match: 'team/*/logs'\n"
                         "      keep_last: 1\n      keep_every_steps: 100\n")
    r = run("gc", "--dry-run", "--policy", p, "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert ("rules[0] (match 'team/*/logs') keeps no version by keep_every_steps: no version "
            "it matches has a step (push them with --step N) (line 3)") in r.stdout
    doc = json.loads(run("gc", "--dry-run", "--json", "--policy", p, "--lake", lake).stdout)
    assert doc["plan"]["idle_rules"] == [
        {"rule": "rules[0] (match 'team/*/logs')", "line": 3,
         "why": "keeps no version by keep_every_steps: no version it matches has a step "
                "(push them with --step N)"}]


# ---- 3. idle rules in the --json plan, and rules an earlier one shadows -----------------------

def test_idle_and_shadowed_rules_are_in_the_json_plan(lake: str, tmp_path: Path) -> None:
    p = policy(tmp_path, "retention:\n  rules:\n"
                         "    - match: 'team/*'\n      keep_last: 1\n"
                         "    - match: 'team/run1/ckpt'\n      keep_last: 2\n"
                         "    - match: 'x/*'\n      keep_last: 1\n")
    doc = json.loads(run("gc", "--dry-run", "--json", "--policy", p, "--lake", lake).stdout)
    assert doc["plan"]["idle_rules"] == [
        {"rule": "rules[1] (match 'team/run1/ckpt')", "line": 5,
         "why": "never applies: rules[0] on line 3 takes every artifact it matches"},
        {"rule": "rules[2] (match 'x/*')", "line": 7, "why": "matches no artifact"}]
    r = run("gc", "--dry-run", "--policy", p, "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert ("rules[1] (match 'team/run1/ckpt') never applies: rules[0] on line 3 takes every "
            "artifact it matches (line 5)") in r.stdout
    assert "rules[2] (match 'x/*') matches no artifact (line 7)" in r.stdout
    # the notes are about the policy against the whole lake: --match does not hide them
    doc = json.loads(run("gc", "--dry-run", "--json", "--match", "team/run1/logs", "--policy", p,
                         "--lake", lake).stdout)
    assert [x["line"] for x in doc["plan"]["idle_rules"]] == [5, 7]
    # a policy whose every rule applies: none
    p = policy(tmp_path, "retention:\n  rules:\n    - match: 'team/*'\n      keep_last: 1\n")
    doc = json.loads(run("gc", "--dry-run", "--json", "--policy", p, "--lake", lake).stdout)
    assert doc["plan"]["idle_rules"] == []


# ---- 4. --policy sections gc does not read ----------------------------------------------------

def test_policy_file_sections_gc_ignores_are_named(lake: str, tmp_path: Path) -> None:
    p = policy(tmp_path, "chunk_size: 8MiB\nretention:\n  rules:\n    - match: 'team/*'\n"
                         "      keep_last: 5\negress:\n  warn_above_usd: 5\n")
    r = run("gc", "--dry-run", "--policy", p, "--lake", lake)
    assert r.exit_code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, r.stderr
    assert "chunk_size (line 1), egress (line 6)" in warnings[0]
    assert "ckptlake.yaml" in warnings[0] and "--config" in warnings[0]
    doc = json.loads(run("gc", "--dry-run", "--json", "--policy", p, "--lake", lake).stdout)
    assert any("chunk_size (line 1)" in w for w in doc.get("warnings", ())), doc.keys()
    # a file with only retention: (and lake:) says nothing
    p = policy(tmp_path, f"lake: {lake}\nretention:\n  rules:\n    - match: 'team/*'\n"
                         "      keep_last: 5\n")
    r = run("gc", "--dry-run", "--policy", p, "--lake", lake)
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr


def test_the_config_in_use_given_as_the_policy_draws_no_warning(
        lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gc --policy ckptlake.yaml` where ckptlake.yaml is the config in use: its other
    sections are read (as the config's); "those belong in ckptlake.yaml" sent the user back to
    the same file."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text("chunk_size: 8MiB\nretention:\n  rules:\n    - match: '*'\n"
                   "      keep_last: 5\n")
    monkeypatch.setenv("CKPTLAKE_CONFIG", str(cfg))
    r = run("gc", "--dry-run", "--policy", "ckptlake.yaml", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert "ignored" not in r.stderr
    other = tmp_path / "policy.yaml"
    other.write_text(cfg.read_text())
    r = run("gc", "--dry-run", "--policy", other, "--lake", lake)
    assert "ignored: chunk_size (line 1)" in r.stderr
