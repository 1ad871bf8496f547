"""Small contract breaks a configuration review found: a $CKPTLAKE_CACHE naming a file, an
empty config name, a $COLUMNS of 0."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app


def test_a_cache_that_names_a_file_is_a_usage_error(tmp_path: Path) -> None:
    """`cache ls` said "0 chunks", exit 0, and every pull warned it could not write there."""
    f = tmp_path / "cachefile"
    f.write_bytes(b"")
    for args in (["cache", "ls"], ["cache", "prune", "--json"]):
        r = CliRunner().invoke(app, args, env={"CKPTLAKE_CACHE": str(f), "CKPTLAKE_CONFIG": ""})
        assert r.exit_code == 2, r.output
        assert f"the chunk cache {f} ($CKPTLAKE_CACHE) is not a directory" in r.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"lake: {tmp_path / 'lake'}\ncache: {{dir: {f}}}\n")
    r = CliRunner().invoke(app, ["cache", "ls", "--config", str(cfg)], env={"CKPTLAKE_CACHE": ""})
    assert r.exit_code == 2 and "(cache: in" in r.output, r.output
    # only the cache commands: every other command works without the cache (a review found
    # ls, push and pull --no-cache failing with it)
    (tmp_path / "empty").mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    env = {"CKPTLAKE_CACHE": str(f), "CKPTLAKE_CONFIG": ""}
    lake = str(tmp_path / "lake2")
    for args in (["push", str(src), "a/b"], ["ls"], ["pull", "a/b", str(tmp_path / "o1"),
                                                     "--no-cache"],
                 ["cache", "ls", "--dir", str(tmp_path / "empty")]):
        r = CliRunner().invoke(app, [*args, "--lake", lake] if args[0] != "cache" else args,
                               env=env)
        assert r.exit_code == 0, (args, r.output)
    assert f.read_bytes() == b""


def test_an_empty_config_name_says_so(tmp_path: Path) -> None:
    with pytest.raises(ckptlake.UsageError, match="the config file's name is empty"):
        ckptlake.open(str(tmp_path / "l"), config="")


@pytest.mark.parametrize("var,columns", [("COLUMNS", "0"), ("COLUMNS", "1"), ("COLUMNS", "12"),
                                         ("TERMINAL_WIDTH", "0"), ("TERMINAL_WIDTH", "x"),
                                         ("TERMINAL_WIDTH", "\u00b2"), ("COLUMNS", "\u00b2"),
                                         ("COLUMNS", "99999999999999999999")])
def test_help_with_a_tiny_columns_is_still_help(var: str, columns: str) -> None:
    """COLUMNS=0 (or Typer's TERMINAL_WIDTH=0) printed `--help` as one empty line, exit 0;
    TERMINAL_WIDTH=x was an internal error."""
    r = subprocess.run([sys.executable, "-m", "ckptlake", "--help"], capture_output=True,
                       text=True, env={**os.environ, var: columns}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout and "push" in r.stdout, r.stdout


def test_a_missing_profile_named_in_the_config_names_the_config(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """$AWS_PROFILE's error says where it came from; a config's `profile:` said nothing."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))  # no profiles
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lake: s3://mybucket/lake\nprofile: nosuch\nendpoint_url: http://127.0.0.1:9\n")
    r = CliRunner().invoke(app, ["ls", "--config", str(cfg)])
    assert r.exit_code == 2, r.output
    assert f"AWS profile 'nosuch' (profile: in {cfg}) not found" in r.output, r.output
    r = CliRunner().invoke(app, ["ls", "--config", str(cfg), "--profile", "other"])
    assert r.exit_code == 2 and "AWS profile 'other' not found" in r.output, r.output
