"""Small CLI messages and exit codes that said something else than they meant: a fixed template
masked as a secret, a config from a pipe refused, a note on every verify after `alias --delete`,
an exit code the README did not list, an unquoted command line, and a few wordings."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import catalog
from ckptlake.core import tombstones as tombs
from ckptlake.core.identity import utcnow
from ckptlake.errors import NotFound, UsageError
from ckptlake.format import layout
from ckptlake.policy.config import load_config

ART = "t/a"
README = Path(__file__).resolve().parent.parent / "README.md"


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "w.bin").write_bytes(b"w" * 1000)
    return d


@pytest.fixture
def lake(tmp_path: Path, src: Path) -> str:
    """A local lake holding t/a v1..v3."""
    url = (tmp_path / "lake").as_uri()
    with ckptlake.open(url) as lk:
        for step in (1, 2, 3):
            (src / "w.bin").write_bytes(os.urandom(300))
            lk.push(src, ART, step=step)
    return url


# ---- 6. a fixed KEY=VALUE template is not a secret -----------------------------------------------

@pytest.mark.parametrize("option, item", [("--metric", "loss"), ("--meta", "k"),
                                          ("--meta", "=v")])
def test_a_pair_without_name_or_value_is_explained_unmasked(lake: str, src: Path, option: str,
                                                            item: str) -> None:
    r = run("push", src, "t/b", option, item, "--lake", lake)
    assert r.exit_code == 2
    line = r.stderr.splitlines()[-1]
    assert f"{option} {item!r}: expected NAME=VALUE with a non-empty NAME" in line
    assert "***" not in line


def test_a_secret_pair_is_still_masked(lake: str, src: Path) -> None:
    r = run("push", src, "t/b", "--metric", "api_key=hunter2", "--lake", lake)
    assert r.exit_code == 2 and "hunter2" not in r.stderr and "api_key=***" in r.stderr


# ---- 7. config and policy from a pipe; a missing config file is exit 3 --------------------------

def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`ckptlake` as a shell runs it (process substitution makes /dev/fd/63, a pipe)."""
    cmd = f"{sys.executable} -m ckptlake"
    return subprocess.run(["bash", "-c", script.replace("CKPTLAKE", cmd)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_a_config_from_a_pipe_is_read_once_for_the_whole_command(lake: str,
                                                                  tmp_path: Path) -> None:
    # gc and du read the config twice (the retention, then the lake): the second read of the
    # pipe found it empty and fell back to the embedded default lake
    for command in ("ls", "gc --dry-run", "du", "verify"):
        r = _bash(f"CKPTLAKE {command} --config <(echo 'lake: {lake}')", tmp_path)
        assert r.returncode == 0, (command, r.stderr)
        assert f"using lake {lake} (lake: in /dev/fd/" in r.stderr, (command, r.stderr)


def test_a_policy_from_a_pipe(lake: str, tmp_path: Path) -> None:
    r = _bash(f"CKPTLAKE gc --dry-run --lake {lake} --policy <(printf 'retention:\\n  rules:\\n"
              f"    - match: \"t/*\"\\n      keep_last: 2\\n')", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "under rules[0] (match 't/*'), line 3" in r.stdout, r.stdout
    assert "delete 1 of 3 versions" in r.stdout and "not among the newest 2" in r.stdout


def test_a_missing_config_file_is_not_found_like_any_missing_path(lake: str,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    missing = str(tmp_path / "nope.yaml")
    r = run("ls", "--config", missing, "--json")
    assert r.exit_code == 3, r.output
    doc = json.loads(r.stdout)
    assert doc["error"]["type"] == "NotFound"
    assert f"config file not found: {missing} (does not exist; from --config)" in \
        doc["error"]["message"]
    with pytest.raises(NotFound, match=r"config file not found.*\$CKPTLAKE_CONFIG"):
        monkeypatch.setenv("CKPTLAKE_CONFIG", missing)
        load_config(None)
    monkeypatch.delenv("CKPTLAKE_CONFIG")
    # a directory is there, but is no config file: a usage error still
    r = run("ls", "--lake", lake, "--config", tmp_path)
    assert r.exit_code == 2, r.output
    with pytest.raises(UsageError, match="is a directory"):
        load_config(str(tmp_path))


# ---- 9. the empty record `alias --delete` leaves is not worth a warning -------------------------

def test_verify_says_nothing_of_the_record_alias_delete_left(lake: str, tmp_path: Path) -> None:
    assert run("alias", f"{ART}@v2", "prod", "--lake", lake).exit_code == 0
    assert run("alias", "--delete", ART, "prod", "--lake", lake).exit_code == 0
    for scope in ((), (ART,)):
        r = run("verify", *scope, "--lake", lake)
        assert r.exit_code == 0, r.output
        assert "warning" not in r.stderr and "@alias" not in r.stderr, r.stderr
        doc = json.loads(run("verify", *scope, "--lake", lake, "--json").stdout)
        assert doc["warnings"] == []
    # other empty create-once objects still get their note
    root = Path(lake[len("file://"):])
    (root / layout.version_key(ART, 9)).write_bytes(b"")
    doc = json.loads(run("verify", "--lake", lake, "--json").stdout)
    assert [w for w in doc["warnings"] if "@v/" in w], doc["warnings"]
    assert not [w for w in doc["warnings"] if "@alias" in w], doc["warnings"]


# ---- 10. diff --exit-code's 1 is documented ----------------------------------------------------

def test_diff_exit_code_1_is_in_the_readme_and_the_help(lake: str) -> None:
    (row,) = [ln for ln in README.read_text().splitlines() if ln.startswith("| 1 |")]
    assert "diff --exit-code" in row
    command = typer.main.get_command(app).commands["diff"]  # type: ignore[attr-defined]
    (opt,) = [p for p in command.params if "--exit-code" in p.opts]
    assert "internal error" in opt.help
    assert run("diff", f"{ART}@v1", f"{ART}@v2", "--exit-code", "--lake", lake).exit_code == 1


# ---- 11. show quotes the recorded command line -------------------------------------------------

def test_show_quotes_the_command_line_and_masks_a_quoted_secret(lake: str) -> None:
    path = Path(lake[len("file://"):]) / layout.version_key(ART, 1)
    doc = json.loads(path.read_bytes())
    doc["provenance"] = {"command": ["ckptlake", "push", "sp ace", "t/space", "--hf-token",
                                     "s3cr3t leak!"]}
    path.write_text(json.dumps(doc))
    r = run("show", f"{ART}@v1", "--lake", lake)
    assert r.exit_code == 0, r.output
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("command")]
    assert line.split(None, 1)[1] == "ckptlake push 'sp ace' t/space --hf-token '***'"
    assert "s3cr3t" not in r.stdout and "leak" not in r.stdout


# ---- 12. wordings -------------------------------------------------------------------------------

def test_du_help_says_what_prefix_matches() -> None:
    from ckptlake.cli import du

    assert "as for ls" not in du.EPILOG
    assert "by the start of their name" in " ".join(du.EPILOG.split())


def test_verify_without_a_lake_says_it_as_every_command_does(tmp_path: Path) -> None:
    url = (tmp_path / "none").as_uri()
    r = run("verify", "--lake", url)
    assert r.exit_code == 3
    line = r.stderr.splitlines()[-1]
    assert "check --lake" not in line
    assert line.endswith("nothing was ever pushed there (check the lake location; the first "
                         "push creates a lake)"), line


def test_tags_is_called_alias() -> None:
    r = run("tags")
    assert r.exit_code == 2
    assert "No such command 'tags'; ckptlake calls it 'alias'" in r.stderr


def test_a_deleters_reason_reads_as_its_reason(lake: str) -> None:
    """rm meets a deletion another deleter is making: its reason is labelled, not run into
    the hint."""
    with ckptlake.open(lake) as lk:
        m = catalog.load_manifest(lk.store, ART, 2)
        assert tombs.write(lk.store, tombs.from_manifest(
            m, deleted=utcnow() - timedelta(seconds=1), rule=tombs.RM_RULE, reason="oops"))
        with pytest.raises(NotFound) as err:
            lk.delete(f"{ART}@v2")
    assert err.value.hint is not None and err.value.hint.startswith("reason: oops; ")


def test_ls_shows_stored_bytes_only_where_they_read_differently() -> None:
    from ckptlake.cli.ls import version_row

    def size(total: int, stored: int | None) -> str:
        v = SimpleNamespace(version=1, step=None, total_bytes=total, stored_bytes=stored,
                            created=datetime.now(timezone.utc), aliases=[], metrics={})
        return version_row(v)[2]

    assert size(12_373_000, 12_372_000) == "11.8 MiB"
    assert re.fullmatch(r"11\.8 MiB \(5\.\d+ MiB stored\)", size(12_373_000, 6_000_000))
    assert size(1000, None) == size(1000, 1000) == "1000 B"


def test_a_policy_file_naming_another_lake_is_refused(tmp_path: Path) -> None:
    """`gc --policy prod.yaml` whose file says `lake: ./prod-lake` ran on whatever lake was in
    use (the embedded default, another --lake) and applied prod's retention there."""
    src = tmp_path / "s"
    src.mkdir()
    (src / "a").write_text("a")
    run = CliRunner()
    for lk in ("prod-lake", "other"):
        r = run.invoke(app, ["push", str(src), "t/a", "--lake", str(tmp_path / lk)])
        assert r.exit_code == 0, r.stderr
    policy = tmp_path / "prod.yaml"
    policy.write_text("lake: ./prod-lake\nretention:\n  rules:\n    - match: '*'\n"
                      "      keep_last: 1\n")
    r = run.invoke(app, ["gc", "--policy", str(policy), "--yes", "--lake",
                         str(tmp_path / "other")])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "names the lake" in r.stderr and "line 1" in r.stderr and "other" in r.stderr
    # the lake it names, by another spelling (a symlink), is that lake
    (tmp_path / "alias").symlink_to(tmp_path / "prod-lake")
    r = run.invoke(app, ["gc", "--policy", str(policy), "--dry-run", "--lake",
                         str(tmp_path / "alias")])
    assert r.exit_code == 0, r.stderr


def test_cat_of_a_single_file_artifact_needs_no_path(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hi\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a")
    lake = ["--lake", str(tmp_path / "lk")]
    run = CliRunner()
    assert run.invoke(app, ["push", str(tmp_path / "f.txt"), "t/one", *lake]).exit_code == 0
    assert run.invoke(app, ["push", str(tmp_path / "d"), "t/dir", *lake]).exit_code == 0
    r = run.invoke(app, ["cat", "t/one", *lake])
    assert r.exit_code == 0 and r.stdout == "hi\n", (r.stdout, r.stderr)
    r = run.invoke(app, ["cat", "t/dir", *lake])
    assert r.exit_code == 2 and "is a directory: say which file" in r.stderr
