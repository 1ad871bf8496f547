"""Small first-hour and ops fixes a review reproduced, each with its exit code.

`ls PREFIX/` lists the artifacts under a prefix (as `aws s3 ls prefix/`); `alias ARTIFACT`
lists its aliases; `ls --sort` of a metric no version has, and a gc rule that matches no
artifact, are said; `--endpoint-url` on a local lake is a warning and `pull --offline-replica`
without replicas a usage error; the alias length limit is named; an empty `retention:` is called
empty; `pull --estimate --json` gives DEST absolute; `cat` of a symlink to a directory hints `ls`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.errors import UsageError
from ckptlake.format.refs import validate_alias


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    (d / "d").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"x" * 100)
    (d / "d" / "x.txt").write_bytes(b"hello")
    os.symlink("d", d / "dl")
    os.symlink("a.bin", d / "al")
    return d


@pytest.fixture
def lake(tmp_path: Path, src: Path) -> str:
    """p/r/ckpt (step 5, loss=2), p/s/ckpt, q/x and an artifact named p itself."""
    url = (tmp_path / "lake").as_uri()
    for artifact, extra in (("p/r/ckpt", ["--step", "5", "--metric", "loss=2"]),
                            ("p/s/ckpt", []), ("q/x", []), ("p", [])):
        r = run("push", src, artifact, *extra, "--lake", url, "--quiet")
        assert r.exit_code == 0, r.stderr
    return url


# ---- a. ls PREFIX/ ---------------------------------------------------------------------------

def test_ls_of_a_prefix_lists_the_artifacts_under_it(lake: str) -> None:
    r = run("ls", "p/", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    # not `p` itself: its keys are under artifacts/p/ too, its name is not under p/
    assert names == ["p/r/ckpt", "p/s/ckpt"]
    doc = json.loads(run("ls", "p/r/", "--lake", lake, "--json").stdout)
    assert doc["prefix"] == "p/r/" and [a["artifact"] for a in doc["artifacts"]] == ["p/r/ckpt"]
    r = run("ls", "p/", "--all", "--lake", lake)
    assert r.exit_code == 0 and "EXPIRED" in r.stdout and "q/x" not in r.stdout
    r = run("ls", "p/", "--pending", "--lake", lake)
    assert r.exit_code == 0 and "no pending sharded steps" in r.stderr


def test_ls_of_a_prefix_without_artifacts_is_an_empty_listing(lake: str) -> None:
    r = run("ls", "zz/", "--lake", lake)
    assert r.exit_code == 0 and r.stdout == ""
    assert "no artifacts in" in r.stderr and "starting with 'zz/'" in r.stderr
    assert json.loads(run("ls", "zz/", "--lake", lake, "--json").stdout)["artifacts"] == []


@pytest.mark.parametrize("args, words", [
    (["p/", "d"], "p/ is a prefix"),
    (["p/", "--sort", "loss"], "not a prefix (p/)"),
    (["p//"], "empty path segment"),
    (["p/x y/"], "characters outside"),
])
def test_ls_of_a_prefix_refuses_what_lists_versions_or_files(lake: str, args: list[str],
                                                            words: str) -> None:
    r = run("ls", *args, "--lake", lake)
    assert r.exit_code == 2 and words in r.stderr, r.stderr


def test_every_other_ls_form_still_works(lake: str) -> None:
    assert run("ls", "p/r/ckpt", "--lake", lake).stdout.split()[6] == "v1"
    assert "d/x.txt" in run("ls", "p/r/ckpt@v1", "--lake", lake).stdout
    assert "d/x.txt" in run("ls", "p/r/ckpt", "d", "--lake", lake).stdout
    assert run("ls", "p/r/ckpt", "--where", "loss<3", "--limit", "1", "--lake",
               lake).exit_code == 0
    assert run("ls", "--pending", "--lake", lake).exit_code == 0


def test_ls_help_documents_the_prefix() -> None:
    assert "PREFIX/" in run("ls", "--help").stdout


# ---- b. alias ARTIFACT lists its aliases ------------------------------------------------------

def test_alias_without_name_lists_the_aliases(lake: str) -> None:
    r = run("alias", "p/r/ckpt", "--lake", lake)
    assert r.exit_code == 0 and r.stdout == "" and "p/r/ckpt has no aliases" in r.stderr
    for name in ("prod", "best"):
        assert run("alias", "p/r/ckpt@v1", name, "--lake", lake, "-q").exit_code == 0
    r = run("alias", "p/r/ckpt", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert [line.split() for line in r.stdout.splitlines()] == [
        ["ALIAS", "VERSION", "STEP"], ["best", "v1", "5"], ["prod", "v1", "5"]]
    doc = json.loads(run("alias", "p/r/ckpt", "--lake", lake, "--json").stdout)
    assert doc["aliases"] == [{"alias": "best", "version": 1, "step": 5},
                              {"alias": "prod", "version": 1, "step": 5}]
    # the two forms with NAME are unchanged
    assert run("alias", "--delete", "p/r/ckpt", "prod", "--lake", lake).exit_code == 0
    assert "prod" not in run("alias", "p/r/ckpt", "--lake", lake).stdout


@pytest.mark.parametrize("args, code, words", [
    (["p/r/ckpt@v1"], 2, "give the NAME of the alias to point at p/r/ckpt@v1"),
    (["--delete", "p/r/ckpt"], 2, "alias --delete needs the NAME"),
    (["p/nope"], 3, "p/nope has no versions"),
])
def test_alias_without_name_elsewhere(lake: str, args: list[str], code: int,
                                      words: str) -> None:
    r = run("alias", *args, "--lake", lake)
    assert r.exit_code == code and words in r.stderr, r.stderr


# ---- c. a --sort metric nobody has; a gc rule matching nothing --------------------------------

def test_ls_sort_by_a_metric_no_version_has_warns(lake: str) -> None:
    r = run("ls", "p/r/ckpt", "--sort", "-nope", "--lake", lake)
    assert r.exit_code == 0 and "v1" in r.stdout
    assert "warning: no version of p/r/ckpt has metric 'nope'" in r.stderr
    doc = json.loads(run("ls", "p/r/ckpt", "--sort", "nope", "--lake", lake, "--json").stdout)
    assert "has metric 'nope'" in doc["warnings"][0]
    for key in ("loss", "-step", "size"):
        r = run("ls", "p/r/ckpt", "--sort", key, "--lake", lake)
        assert r.exit_code == 0 and "warning" not in r.stderr, (key, r.stderr)


def test_gc_plan_notes_a_rule_that_matches_no_artifact(lake: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("retention:\n  rules:\n    - match: 'p/*/ckpt'\n      keep_last: 1\n"
                      "    - match: 'x/*'\n      keep_last: 1\n")
    r = run("gc", "--dry-run", "--policy", policy, "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert "rules[1] (match 'x/*') matches no artifact (line 5)" in r.stdout
    assert "rules[0]" not in r.stdout.replace("under rules[0]", "")


# ---- d. options that did nothing -------------------------------------------------------------

def test_endpoint_url_on_a_local_lake_warns(lake: str) -> None:
    r = run("ls", "--endpoint-url", "http://localhost:9000", "--lake", lake)
    assert r.exit_code == 0
    assert "warning: --endpoint-url has no effect on a local lake" in r.stderr
    assert "no effect" not in run("ls", "--lake", lake).stderr


def test_pull_offline_replica_without_replicas_is_a_usage_error(lake: str,
                                                                tmp_path: Path) -> None:
    r = run("pull", "p/r/ckpt", tmp_path / "out", "--offline-replica", "--lake", lake)
    assert r.exit_code == 2
    assert "--offline-replica: no replicas are configured" in r.stderr
    assert not (tmp_path / "out").exists()


# ---- e. the alias length limit ---------------------------------------------------------------

def test_a_long_alias_is_refused_for_its_length() -> None:
    assert validate_alias("a" * 128) == "a" * 128
    with pytest.raises(UsageError) as e:
        validate_alias("a" * 253)
    assert "253 characters long, the limit is 128" in str(e.value)
    assert "at most 128 characters" in (e.value.hint or "")
    with pytest.raises(UsageError) as e:
        validate_alias("b d")
    assert "characters long" not in str(e.value)


def test_readme_states_the_alias_length_limit() -> None:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    assert "[A-Za-z0-9._-]*`, at most 128 characters" in text


# ---- f. an empty retention: ------------------------------------------------------------------

def test_an_empty_retention_section_is_called_empty(lake: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("retention:\n")
    r = run("gc", "--dry-run", "--policy", policy, "--lake", lake)
    assert r.exit_code == 2
    assert f"{policy}:1: `retention:` is empty" in r.stderr
    assert "has no `retention:` section" not in r.stderr


# ---- g. pull --estimate --json: DEST absolute ------------------------------------------------

def test_estimate_destination_is_absolute_like_the_pull(lake: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    est = json.loads(run("pull", "p/r/ckpt", "ex7", "--estimate", "--json",
                         "--lake", lake).stdout)
    pulled = json.loads(run("pull", "p/r/ckpt", "ex7", "--json", "--lake", lake).stdout)
    assert est["destination"] == pulled["destination"] == str(tmp_path / "ex7")


# ---- h. cat of a symlink to a directory ------------------------------------------------------

def test_cat_of_a_symlink_to_a_directory_hints_ls(lake: str) -> None:
    r = run("cat", "p/r/ckpt", "dl", "--lake", lake)
    assert r.exit_code == 2
    assert "list its target with: ckptlake ls p/r/ckpt@v1 d)" in r.stderr, r.stderr
    assert "cat p/r/ckpt@v1 d" not in r.stderr
    r = run("cat", "p/r/ckpt", "al", "--lake", lake)
    assert r.exit_code == 2 and "cat its target: ckptlake cat p/r/ckpt@v1 a.bin" in r.stderr
