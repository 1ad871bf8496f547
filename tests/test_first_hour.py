"""A new user's first hour (issue 17): what got in the way, each with a test.

Global options before the command, plain usage lines, "no lake at ..." for a mistyped lake,
a note when a push creates a lake, policy-file errors that name the policy file, retries of
`ls` on stderr, and the README's time format.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app, hoist_global_options
from typer.main import get_command


def run(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.bin").write_bytes(b"x" * 100)
    return d


@pytest.fixture
def lake(tmp_path: Path, src: Path) -> str:
    """A local lake holding one version of p/r/ckpt."""
    url = (tmp_path / "lake").as_uri()
    r = run("push", src, "p/r/ckpt", "--step", "5", "--lake", url, "--quiet")
    assert r.exit_code == 0, r.stderr
    return url


# ---- 2. options before the subcommand -------------------------------------------------------

GROUP = get_command(app)


@pytest.mark.parametrize("argv, expected", [
    (["--lake", "L", "ls"], ["ls", "--lake", "L"]),
    (["--json", "-l", "L", "ls", "a/b"], ["ls", "--json", "-l", "L", "a/b"]),
    (["--lake=L", "-q", "pull", "r", "d"], ["pull", "--lake=L", "-q", "r", "d"]),
    (["-lL", "ls"], ["ls", "-lL"]),
    (["--config", "c.yaml", "--debug", "gc", "--dry-run"],
     ["gc", "--config", "c.yaml", "--debug", "--dry-run"]),
    # a value that looks like a command is still the option's value
    (["--lake", "ls", "ls"], ["ls", "--lake", "ls"]),
    # nothing to move, or nowhere to move it: left alone for Click
    (["ls", "--lake", "L"], ["ls", "--lake", "L"]),
    (["--lake"], ["--lake"]),
    (["--json"], ["--json"]),
    (["--help"], ["--help"]),
    (["--version", "--json", "ls"], ["--version", "ls", "--json"]),
    (["--nope", "--json", "ls"], ["--nope", "ls", "--json"]),
])
def test_global_options_move_after_the_command(argv: list[str], expected: list[str]) -> None:
    assert hoist_global_options(argv, GROUP) == expected


def test_lake_and_json_before_the_command(lake: str, tmp_path: Path) -> None:
    r = run("--lake", lake, "ls")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split()[5] == "p/r/ckpt"
    doc = json.loads(run("--json", "--lake", lake, "ls", "p/r/ckpt").stdout)
    assert [v["step"] for v in doc["versions"]] == [5]
    r = run("-q", "--lake", lake, "ls")
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == ""


def test_option_in_both_places_the_later_wins(lake: str, tmp_path: Path) -> None:
    other = (tmp_path / "other").as_uri()
    r = run("--lake", other, "ls", "--lake", lake, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["lake"] == lake


def test_root_help_lists_the_lake_and_output_options() -> None:
    r = run("--help")
    assert r.exit_code == 0
    for option in ("--lake", "--endpoint-url", "--profile", "--region", "--config", "--json",
                   "--quiet", "--debug"):
        assert option in r.stdout, option
    assert "before or after the command" in " ".join(r.stdout.split())


def test_a_global_option_the_move_misses_is_refused_not_dropped(lake: str) -> None:
    # `-ql URL` (combined short flags) is parsed by the root: refused, never silently ignored
    r = run("-ql", lake, "ls")
    assert r.exit_code == 2
    assert "after the command" in r.stderr


# ---- 6. usage lines and flags -----------------------------------------------------------------

@pytest.mark.parametrize("command", sorted(GROUP.commands))  # type: ignore[attr-defined]
def test_usage_line_and_flags_read_plainly(command: str) -> None:
    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    usage = next(line for line in r.stdout.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    assert "<bool>" not in r.stdout
    assert "<str>" not in r.stdout and "<path>" not in r.stdout


def test_push_usage_line() -> None:
    r = CliRunner().invoke(app, ["push", "--help"], env={"COLUMNS": "200"})
    assert "Usage: ckptlake push [OPTIONS] SOURCE ARTIFACT" in r.stdout
    r = CliRunner().invoke(app, ["ls", "--help"], env={"COLUMNS": "200"})
    assert "Usage: ckptlake ls [OPTIONS] [ARTIFACT|REF] [PATH]" in r.stdout
    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "<bool>" not in r.stdout


# ---- 3. a mistyped lake is not an empty lake ----------------------------------------------------

@pytest.mark.parametrize("args", [
    ["ls"], ["ls", "p/r/ckpt"], ["pull", "p/r/ckpt", "{tmp}/dest"], ["show", "p/r/ckpt"],
    ["lineage", "p/r/ckpt"], ["diff", "p/r/ckpt@v1", "p/r/ckpt@v2"], ["gc", "--dry-run"],
    ["alias", "p/r/ckpt@v1", "best"], ["verify"], ["cat", "p/r/ckpt", "a.bin"], ["du"]])
def test_readers_refuse_a_location_without_a_lake(args: list[str], lake: str,
                                                  tmp_path: Path) -> None:
    typo = lake + "e"  # ./lakee for ./lake
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = run(*argv, "--lake", typo)
    assert r.exit_code == 3, (r.stdout, r.stderr)
    assert f"no lake at {typo}" in r.stderr.splitlines()[-1]
    if argv[0] != "cat":  # cat's --json is for errors only: tested in test_readme_fixes
        doc = json.loads(run(*argv, "--lake", typo, "--json").stdout)
        assert doc["error"]["type"] == "NotFound" and doc["error"]["exit_code"] == 3
    assert not (tmp_path / "lakee").exists(), "a reader created something"
    assert not (tmp_path / "dest").exists()


def test_an_empty_lake_still_lists_nothing(tmp_path: Path) -> None:
    import ckptlake
    from ckptlake.core.lakeheader import ensure_header

    url = (tmp_path / "empty").as_uri()
    with ckptlake.open(url) as handle:
        assert not handle.exists()
        ensure_header(handle.store)
        assert handle.exists()
    r = run("ls", "--lake", url)
    assert r.exit_code == 0 and r.stdout == ""
    assert "no artifacts in" in r.stderr
    assert json.loads(run("ls", "--lake", url, "--json").stdout)["artifacts"] == []


def test_a_lake_that_lost_its_header_still_exists(lake: str, tmp_path: Path) -> None:
    import ckptlake

    (tmp_path / "lake" / "ckptlake.json").unlink()
    with ckptlake.open(lake) as handle:
        assert handle.exists()


def test_the_first_push_says_it_creates_a_lake(src: Path, tmp_path: Path) -> None:
    url = (tmp_path / "new").as_uri()
    r = run("push", src, "a/b", "--lake", url)
    assert r.exit_code == 0, r.stderr
    assert f"ckptlake: warning: created a new lake at {url}" in r.stderr
    r = run("push", src, "a/b", "--lake", url)
    assert "created a new lake" not in r.stderr
    url2 = (tmp_path / "new2").as_uri()
    doc = json.loads(run("push", src, "a/b", "--lake", url2, "--json").stdout)
    assert any(w.startswith(f"created a new lake at {url2}") for w in doc["warnings"])
    doc = json.loads(run("push", src, "a/b", "--lake", url2, "--json").stdout)
    assert doc["warnings"] == []



def test_a_shard_push_into_a_new_lake_says_so_too(src: Path, tmp_path: Path) -> None:
    url = (tmp_path / "sharded").as_uri()
    r = run("push", src, "a/b", "--lake", url, "--step", "5", "--shard", "0/2")
    assert r.exit_code == 0, r.stderr
    assert f"ckptlake: warning: created a new lake at {url}" in r.stderr
    doc = json.loads(run("push", src, "a/b", "--lake", url, "--step", "5", "--shard", "1/2",
                         "--json").stdout)
    assert doc["warnings"] == [] and doc["version"] == 1

# ---- 4. policy files ----------------------------------------------------------------------------

def test_gc_names_a_missing_policy_file_as_the_policy(lake: str, tmp_path: Path) -> None:
    r = run("gc", "--dry-run", "--policy", tmp_path / "missing.yaml", "--lake", lake)
    assert r.exit_code == 3
    line = r.stderr.splitlines()[-1]
    assert "policy file not found" in line and "from --policy" in line
    assert "--config" not in line and "ckptlake.yaml" not in line


@pytest.mark.parametrize("text, hint", [
    ('rules:\n  - match: "*"\n    keep_last: 2\n', "put it under `retention:`"),
    ("grace_period: 1h\n", "put it under `retention:`"),
    ("keep_last: 2\n", "put it in a rule under `retention:` `rules:`"),
    ("warn_above_usd: 2\n", "put it under `egress:`"),
])
def test_a_section_key_at_the_top_level_says_where_it_goes(text: str, hint: str, lake: str,
                                                           tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    r = run("gc", "--dry-run", "--policy", policy, "--lake", lake)
    assert r.exit_code == 2
    line = r.stderr.splitlines()[-1]
    assert f"{policy}:1: " in line and "unknown key" in line and hint in line, line


def test_a_policy_file_without_retention_is_refused(lake: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("lake: /somewhere\n")
    r = run("gc", "--dry-run", "--policy", policy, "--lake", lake)
    assert r.exit_code == 2
    assert f"{policy}: has no `retention:` section" in r.stderr


# ---- 6. retries of every command show on stderr -------------------------------------------------

@pytest.mark.parametrize("args", [["ls"], ["ls", "p/r/ckpt"], ["show", "p/r/ckpt"]])
def test_ls_and_show_retries_show_on_stderr(args: list[str], lake: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import ckptlake
    from ckptlake.errors import TransientError

    handle = ckptlake.open(lake)
    handle.store._sleep = lambda seconds: None  # the retry layer's backoff, skipped
    inner = handle.store.inner
    real_list, failed = inner.list, []

    def flaky_list(prefix: str = "", **kw: Any) -> Any:
        if not failed:
            failed.append(prefix)
            raise TransientError("503 SlowDown")
        return real_list(prefix, **kw)

    monkeypatch.setattr(inner, "list", flaky_list)
    monkeypatch.setattr(ckptlake, "open", lambda *a, **k: handle)
    r = run(*args)
    assert r.exit_code == 0, r.stderr
    assert failed, "the listing was never retried"
    retries = [ln for ln in r.stderr.splitlines() if ln.startswith("ckptlake: retry 1 for ")]
    assert len(retries) == 1 and "503 SlowDown" in retries[0], r.stderr
    failed.clear()
    handle.retry_listener = None  # as a fresh `ckptlake.open` has it
    r = run(*args, "--json")  # --json: the document only, no retry lines
    assert r.exit_code == 0 and failed and r.stderr == ""


# ---- 6. times as the README says ----------------------------------------------------------------

def test_times_in_json_have_the_form_the_readme_documents(lake: str) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert re.search(r"Times are ISO-8601 UTC, to the microsecond", readme)
    form = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
    doc = json.loads(run("ls", "--lake", lake, "--json").stdout)
    assert form.match(doc["artifacts"][0]["updated"]), doc
    doc = json.loads(run("ls", "p/r/ckpt", "--lake", lake, "--json").stdout)
    assert form.match(doc["versions"][0]["created"]), doc
    doc = json.loads(run("show", "p/r/ckpt", "--lake", lake, "--json").stdout)
    assert form.match(doc["created"]), doc


# ---- 5. the test run leaves nothing behind ------------------------------------------------------

def test_a_passing_test_session_leaves_nothing_in_the_temp_dir(tmp_path: Path) -> None:
    """A pytest session under this project's settings, in its own TMPDIR: a test that writes
    1 MiB into tmp_path and another into a session dir leave no file once the session passed."""
    import os
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "test_leaves.py").write_text(
        "def test_a(tmp_path):\n"
        "    (tmp_path / 'f').write_bytes(b'x' * (1 << 20))\n"
        "def test_b(tmp_path_factory):\n"
        "    (tmp_path_factory.mktemp('s') / 'f').write_bytes(b'x' * (1 << 20))\n")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    env.pop("PYTEST_ADDOPTS", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-c", str(root / "pyproject.toml"),
                        "--rootdir", str(tmp_path / "t"), "-p", "no:cacheprovider", "-q",
                        str(tmp_path / "t")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    left = [p for p in temp.rglob("*") if p.is_file() and not p.is_symlink()]
    assert left == [], left
