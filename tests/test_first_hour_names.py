"""A new user's first hour: names typed the way s5cmd, aws and other tools take them.

Each case is an input that used to get an error that did not say what to do instead (a lake URL
read as an artifact name, `ls proj` for a prefix, `du REF`), or was silently accepted (an alias
`V2` that reads as a version to people, `--where` on a metric no version has, `--version --json`
printing plain text).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import UsageError
from ckptlake.format import layout

ART = "proj/run-1/ckpt"


def run(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def error_line(result: Any) -> str:
    """The one error line, ignoring the "using lake ..." note printed before the failure."""
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("using lake ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def lake(tmp_path: Path, local_lake_url: str) -> str:
    """A lake with v1 (val_loss 3) and v2 (val_loss 2) of ART."""
    src = tmp_path / "src"
    src.mkdir()
    with ckptlake.open(local_lake_url) as handle:
        for step, loss in ((100, 3.0), (200, 2.0)):
            (src / "a.bin").write_bytes(b"x" * step)
            handle.push(src, ART, step=step, metrics={"val_loss": loss})
    return local_lake_url


# ---- 1. a lake location where the artifact goes ------------------------------------------------

@pytest.mark.parametrize("args", [
    ["ls", "s3://bkt/lake"],
    ["ls", "s3://bkt/lake/"],
    ["pull", "s3://bkt/lake/proj/ckpt", "out"],
    ["push", "{src}", "s3://bkt/lake/proj/ckpt"],
    ["ls", "/tmp/lake"],
    ["ls", "./lake"],
    ["ls", "~/lake"],
], ids=["ls-s3", "ls-s3-slash", "pull-s3", "push-s3", "ls-abs", "ls-dot", "ls-home"])
def test_a_lake_location_given_as_the_artifact_says_where_it_goes(
        args: list[str], lake: str, tmp_path: Path) -> None:
    r = run(*[a.format(src=tmp_path / "src") for a in args], "--lake", lake)
    assert r.exit_code == 2, r.output
    line = error_line(r)
    assert "lake locations go in --lake (or CKPTLAKE_LAKE): ckptlake ls --lake " in line, line


def test_a_mistyped_artifact_name_keeps_the_grammar_hint(lake: str) -> None:
    r = run("ls", "proj/run 1", "--lake", lake)
    assert r.exit_code == 2
    line = error_line(r)
    assert "--lake" not in line and "ARTIFACT[@SELECTOR]" in line, line


# ---- 2. aliases that read as selectors ---------------------------------------------------------

@pytest.mark.parametrize("name", ["V2", "Latest", "LATEST", "V0010"])
def test_a_new_alias_that_reads_as_a_selector_is_refused_in_any_case(
        name: str, lake: str, tmp_path: Path) -> None:
    r = run("alias", f"{ART}@v1", name, "--lake", lake)
    assert r.exit_code == 2, r.output
    assert f"invalid alias name {name!r}" in error_line(r)
    r = run("push", tmp_path / "src", ART, "--alias", name, "--lake", lake)
    assert r.exit_code == 2, r.output
    assert f"invalid alias name {name!r}" in error_line(r)
    with ckptlake.open(lake) as handle:
        with pytest.raises(UsageError, match="invalid alias name"):
            handle.alias(f"{ART}@v1", name)
        assert [v.version for v in handle.versions(ART)] == [1, 2]  # the push made nothing
    assert run("show", f"{ART}@{name}", "--lake", lake).exit_code == 3  # nothing was set


def test_an_alias_such_a_lake_already_holds_still_reads(lake: str) -> None:
    """Refused when set, never when read: a lake written before the rule keeps working."""
    with ckptlake.open(lake) as handle:
        handle.store.put(layout.alias_key(ART, "V2"),
                         json.dumps({"alias": "V2", "version": 1}).encode())
    r = run("show", f"{ART}@V2", "--lake", lake, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["version"] == 1
    r = run("ls", ART, "--lake", lake, "--json")
    assert [v["aliases"] for v in json.loads(r.stdout)["versions"]] == [["V2"], []]
    assert run("alias", f"{ART}@v1", "V2", "--lake", lake).exit_code == 2  # not moved either
    with ckptlake.open(lake) as handle:
        assert handle.verify(ART).ok  # verify reads it as the alias it is
    r = run("alias", "--delete", ART, "V2", "--lake", lake)  # and it can be removed
    assert r.exit_code == 0, r.output
    with ckptlake.open(lake) as handle:
        handle.store.put(layout.alias_key(ART, "Latest"),
                         json.dumps({"alias": "Latest", "version": 2}).encode())
        handle.remove_alias(ART, "Latest")
    r = run("ls", ART, "--lake", lake, "--json")
    assert [v["aliases"] for v in json.loads(r.stdout)["versions"]] == [[], []]


# ---- 3. `ls proj` for the prefix proj/ ---------------------------------------------------------

def test_ls_of_a_name_with_artifacts_below_it_hints_the_prefix(lake: str) -> None:
    for name in ("proj", "proj/run-1"):
        r = run("ls", name, "--lake", lake)
        assert r.exit_code == 3, r.output
        line = error_line(r)
        assert f"artifact {name} has no versions in this lake" in line
        assert f"ckptlake ls {name}/" in line, line
    r = run("ls", "nope", "--lake", lake)
    assert r.exit_code == 3
    assert error_line(r).endswith("(list artifacts with: ckptlake ls)")


# ---- 4. `du REF` -------------------------------------------------------------------------------

def test_du_refuses_a_version_and_names_what_shows_its_size(lake: str) -> None:
    r = run("du", f"{ART}@v2", "--lake", lake)
    assert r.exit_code == 2, r.output
    line = error_line(r)
    assert f"ckptlake du {ART} --versions" in line and f"ckptlake show {ART}@v2" in line, line
    r = run("du", "proj/", "--lake", lake, "--json")  # a prefix still works
    assert r.exit_code == 0
    assert [a["artifact"] for a in json.loads(r.stdout)["artifacts"]] == [ART]


# ---- 5. --where on a metric no version has -----------------------------------------------------

def test_where_on_a_metric_no_version_has_warns_as_sort_does(lake: str) -> None:
    r = run("ls", ART, "--where", "vall_loss<2", "--lake", lake)
    assert r.exit_code == 0, r.output
    assert (f"no version of {ART} has metric 'vall_loss': --where vall_loss<2 matches none"
            in r.stderr), r.stderr
    r = run("ls", ART, "--where", "vall_loss<2", "--lake", lake, "--json")
    assert any("'vall_loss'" in w for w in json.loads(r.stdout)["warnings"])
    r = run("ls", ART, "--where", "val_loss<2.5", "--where", "step>=0", "--lake", lake)
    assert r.exit_code == 0 and "has metric" not in r.stderr, r.stderr


# ---- 6. --version --json -----------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--version", "--json"], ["--json", "--version"]])
def test_version_with_json_is_one_json_document(args: list[str]) -> None:
    r = run(*args)
    assert r.exit_code == 0
    assert json.loads(r.stdout) == {"version": ckptlake.__version__}
    assert run("--version").stdout.strip() == f"ckptlake {ckptlake.__version__}"


# ---- push --alias moving an alias says so -----------------------------------------------------

def test_push_alias_says_which_version_it_moved_the_alias_from(tmp_path: Path) -> None:
    """`alias` says "(was v1)"; a push that moved `prod` said only "(alias prod)", and its
    --json did not say prod had named another version."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"1")
    url = f"file://{tmp_path / 'lk'}"
    r = run("push", src, "c/i", "--lake", url, "--alias", "prod", "--json")
    assert json.loads(r.stdout)["aliases_moved"] == {}
    (src / "w.bin").write_bytes(b"2")
    r = run("push", src, "c/i", "--lake", url, "--alias", "prod", "--alias", "fresh")
    assert r.exit_code == 0, r.output
    assert "(aliases prod (moved from v1), fresh;" in r.stdout or \
        "(aliases prod (moved from v1), fresh)" in r.stdout, r.stdout
    (src / "w.bin").write_bytes(b"3")
    r = run("push", src, "c/i", "--lake", url, "--alias", "prod", "--alias", "fresh", "--json")
    doc = json.loads(r.stdout)
    assert (doc["version"], doc["aliases"], doc["aliases_moved"]) == (
        3, ["prod", "fresh"], {"prod": 2, "fresh": 2})


def test_a_sharded_step_commits_an_alias_an_older_client_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks of one save may run two releases (a resumed job after an upgrade): an alias `V2`
    recorded by the older one must not fail the newer one's commit of the step."""
    import ckptlake.lake as lakemod

    url = f"file://{tmp_path / 'lk'}"
    dirs = []
    for rank in (0, 1):
        d = tmp_path / f"r{rank}"
        d.mkdir()
        (d / f"__{rank}_0.distcp").write_bytes(bytes([rank]) * 100)
        dirs.append(d)
    with ckptlake.open(url) as lake:
        with monkeypatch.context() as m:  # the older client: no case rule
            m.setattr(lakemod, "validate_alias", lambda name, **kw: name)
            assert lake.push_shard(dirs[0], "s/h", step=1, rank=0, world=2,
                                   aliases=["V2"]).version is None
        r = lake.push_shard(dirs[1], "s/h", step=1, rank=1, world=2)
        assert r.version == 1
        assert lake.show("s/h@V2").version == 1


def test_the_prefix_hint_holds_in_a_lake_whose_records_fill_a_listing_page(
        tmp_path: Path) -> None:
    """An artifact's own records (@children/, @s/, ...) sort before its versions: 1,000 of them
    hid the artifact below `proj` from a key listing's first page."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"1")
    url = f"file://{tmp_path / 'lk'}"
    assert run("push", src, "proj/run", "--lake", url).exit_code == 0
    with ckptlake.open(url) as lake:
        for i in range(1001):
            lake.store.put(f"artifacts/proj/run/@children/{i:010d}.x", b"")
    r = run("ls", "proj", "--lake", url)
    assert r.exit_code == 3 and "ckptlake ls proj/" in r.stderr, r.stderr


def test_cp_alias_says_which_version_it_moved_the_alias_from(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"1")
    url, dst = f"file://{tmp_path / 'lk'}", f"file://{tmp_path / 'dst'}"
    assert run("push", src, "c/i", "--lake", url).exit_code == 0
    for n in (1, 2):
        r = run("cp", "c/i", "--to", dst, "--alias", "prod", "--lake", url, "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert (doc["to_version"], doc["aliases_moved"]) == (n, {} if n == 1 else {"prod": 1})
    r = run("cp", "c/i", "--to", dst, "--alias", "prod", "--lake", url)
    assert "(alias prod (moved from v2))" in r.stdout, r.stdout


def test_push_dry_run_says_which_aliases_it_would_move(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"1")
    url = f"file://{tmp_path / 'lk'}"
    assert run("push", src, "c/d", "--lake", url, "--alias", "prod").exit_code == 0
    (src / "w.bin").write_bytes(b"2")
    r = run("push", src, "c/d", "--lake", url, "--alias", "prod", "--alias", "new",
            "--dry-run", "--json")
    assert json.loads(r.stdout)["aliases_moved"] == {"prod": 1}
    r = run("push", src, "c/d", "--lake", url, "--alias", "prod", "--dry-run")
    assert "would push c/d as v2 (alias prod (now on v1))" in r.stdout, r.stdout
    r = run("push", src, "c/new", "--lake", f"file://{tmp_path / 'fresh'}", "--alias", "prod",
            "--dry-run", "--json")  # no lake yet: nothing to read, nothing moved
    assert r.exit_code == 0 and json.loads(r.stdout)["aliases_moved"] == {}
