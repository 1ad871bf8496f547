"""The CLI's questions before deleting (rm, gc) or paying (the egress guard of pull), and a few
config checks, each pinned by a test that a mutation-testing review found missing: every test
here fails if the check it names is dropped or inverted.

On a terminal (stdin AND stderr) rm, gc and pull ask, defaulting to no; with --json or without
a terminal nobody can answer, so they refuse (exit 7) unless --yes."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import ConfigError
from ckptlake.lake import Lake
from ckptlake.policy.config import load_config
from test_rm import keys, push
from test_shards_discard import ART as DART
from test_shards_discard import claim_of, landed_commit

ART = "p/ckpt"


def cli(*args: Any, input: str | None = None) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], input=input,
                              catch_exceptions=False)


def stdin_piped(stream: Any) -> bool:
    """isatty when stderr is a terminal but stdin is a pipe (`echo y | ckptlake rm ...`)."""
    return stream is not sys.stdin


@pytest.fixture
def lake3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    """A local lake (the default, through $CKPTLAKE_LAKE) holding p/ckpt@v1..v3, no alias;
    keep1.yaml in cwd: a retention policy under which gc deletes v1 and v2."""
    monkeypatch.chdir(tmp_path)
    url = "file://" + str(tmp_path / "lake")
    monkeypatch.setenv("CKPTLAKE_LAKE", url)
    (tmp_path / "keep1.yaml").write_text(
        "retention:\n  rules:\n    - match: 'p/*'\n      keep_last: 1\n")
    with ckptlake.open(url) as lake:
        push(lake, tmp_path)
        yield lake


GC = ("gc", "--policy", "keep1.yaml")


def live(lake: Lake) -> list[int]:
    return [v.version for v in lake.versions(ART)]


# ---- gc's and rm's question -----------------------------------------------------------------

def test_gc_on_a_terminal_deletes_on_yes_only(lake3: Lake, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """ "n" at gc's "Carry this out?" must keep every version, "y" carry the plan out: the
    answer inverted, a user declining a retention plan would lose the versions it lists."""
    monkeypatch.setattr("ckptlake.cli.gc.isatty", lambda stream: True)
    before = keys(lake3.store)
    r = cli(*GC, input="n\n")
    assert r.exit_code == 7, r.output
    assert "Carry this out on" in r.stderr and "gc cancelled; nothing was changed" in r.stderr
    assert keys(lake3.store) == before and live(lake3) == [1, 2, 3]
    r = cli(*GC, input="y\n")
    assert r.exit_code == 0, r.output
    assert live(lake3) == [3]


def test_enter_at_the_question_is_no(lake3: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enter alone at rm's and gc's question means no ([y/N]): a user hitting Enter to get past
    the question would otherwise delete a version, or a whole retention plan."""
    monkeypatch.setattr("ckptlake.cli.rm.isatty", lambda stream: True)
    monkeypatch.setattr("ckptlake.cli.gc.isatty", lambda stream: True)
    before = keys(lake3.store)
    for args in (("rm", f"{ART}@v2"), GC):
        r = cli(*args, input="\n")
        assert r.exit_code == 7, r.output
        assert f"{args[0]} cancelled; nothing was changed" in r.stderr
        assert "[y/N]" in r.stderr
    assert keys(lake3.store) == before and live(lake3) == [1, 2, 3]


def test_a_piped_stdin_is_nobody_to_ask(lake3: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr a terminal but stdin a pipe (`yes | ckptlake gc`, a script feeding input): no
    question, a refusal that asks for --yes.  A "y" read from a pipe is not a person agreeing
    to delete."""
    monkeypatch.setattr("ckptlake.cli.rm.isatty", stdin_piped)
    monkeypatch.setattr("ckptlake.cli.gc.isatty", stdin_piped)
    before = keys(lake3.store)
    for args in (("rm", f"{ART}@v2"), ("rm", ART, "--all"), GC):
        r = cli(*args, input="y\n")
        assert r.exit_code == 7, r.output
        assert "--yes" in r.stderr and "[y/N]" not in r.stderr
        assert "cancelled" not in r.stderr
    assert keys(lake3.store) == before and live(lake3) == [1, 2, 3]


def test_json_on_a_terminal_refuses_without_asking(lake3: Lake,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--json is a script's mode even on a terminal: it gets one error document (PolicyRefusal,
    exit 7) and no question; asked, it would read its "y" (or hang) and delete."""
    monkeypatch.setattr("ckptlake.cli.rm.isatty", lambda stream: True)
    monkeypatch.setattr("ckptlake.cli.gc.isatty", lambda stream: True)
    before = keys(lake3.store)
    for args in (("rm", f"{ART}@v2"), ("rm", ART, "--all"), GC):
        r = cli(*args, "--json", input="y\n")
        assert r.exit_code == 7, r.output
        assert json.loads(r.stdout)["error"]["type"] == "PolicyRefusal"
        assert "Delete" not in r.stderr and "Carry this out" not in r.stderr
        assert "[y/N]" not in r.stderr
    assert keys(lake3.store) == before and live(lake3) == [1, 2, 3]


def test_rm_all_spares_a_version_pushed_while_it_asked(lake3: Lake, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """rm --all deletes the versions its question listed: one pushed while the user read it
    (a training job still running) stays readable, with a warning, instead of going unasked."""
    monkeypatch.setattr("ckptlake.cli.rm.isatty", lambda stream: True)
    pushed: list[int] = []

    def push_then_yes(*a: Any, **kw: Any) -> bool:
        pushed.extend(push(lake3, tmp_path, n=1))
        return True

    monkeypatch.setattr("ckptlake.cli.rm.confirm", push_then_yes)
    r = cli("rm", ART, "--all")
    assert r.exit_code == 0, r.output
    assert pushed == [4]
    assert "v4 of p/ckpt was pushed while rm ran and stay" in r.stderr
    assert "deleted 3 versions of p/ckpt (v1-v3)" in r.stdout
    assert live(lake3) == [4]
    assert lake3.resolve(f"{ART}@v4").version == 4


def test_rm_pending_of_a_landed_commit_without_yes_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rm --pending on a step whose commit landed (its owner died before saying so): without
    --yes the plan's LandedCommit is the answer (exit 6) and nothing is written; the real run,
    which records the commit in the claim, is for --yes only."""
    monkeypatch.chdir(tmp_path)
    url = "file://" + str(tmp_path / "lake")
    monkeypatch.setenv("CKPTLAKE_LAKE", url)
    with ckptlake.open(url) as lake:
        landed_commit(lake, tmp_path, monkeypatch)
        before = {(i.key, i.etag) for i in lake.store.list("")}
        for tty in (False, True):
            monkeypatch.setattr("ckptlake.cli.rm.isatty", lambda stream, tty=tty: tty)
            r = cli("rm", f"{DART}@step=6", "--pending", "--force", input="y\n")
            assert r.exit_code == 6, r.output
            assert "committed as v1" in r.stderr
            assert {(i.key, i.etag) for i in lake.store.list("")} == before
            assert claim_of(lake, 6).state == "committing"


# ---- pull's egress question -------------------------------------------------------------------

@pytest.fixture
def costly(s3_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[list[str], Path, bytes]:
    """p/eof@v1 (2 MiB) on an S3 lake whose pull costs about $2, above confirm_above_usd 1.0:
    (the common options, the destination, the file's bytes)."""
    from test_egress import costly_lake

    common, body = costly_lake(s3_lake_url, tmp_path, monkeypatch, "p/eof")
    return common, tmp_path / "dest", body


def pull(common: list[str], dest: Path, *extra: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, ["pull", "p/eof", str(dest), *extra, *common], input=input)


def test_pull_above_the_limit_needs_yes_or_a_yes_on_a_terminal(
        costly: tuple[list[str], Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a terminal the costly pull is refused (exit 7, nothing downloaded, --json: one
    PolicyRefusal document): a CI job must not run up the bill unasked.  On a terminal "y"
    downloads: the question must reach the library, not be dropped (a refusal nobody can
    get past but with --yes)."""
    common, dest, body = costly
    r = pull(common, dest)
    assert r.exit_code == 7, r.output
    assert "--yes" in r.stderr and r.stdout == "" and not dest.exists()
    r = pull(common, dest, "--json")
    assert r.exit_code == 7, r.output
    assert json.loads(r.stdout)["error"]["type"] == "PolicyRefusal" and not dest.exists()
    monkeypatch.setattr("ckptlake.cli.egress.isatty", lambda stream: True)
    r = pull(common, dest, input="y\n")
    assert r.exit_code == 0, r.output
    assert "Download anyway?" in r.stderr
    assert (dest / "w.bin").read_bytes() == body


def test_pull_enter_piped_stdin_or_json_download_nothing(
        costly: tuple[list[str], Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """Enter at "Download anyway?" is no; a "y" from a pipe (stderr a terminal, stdin not) is
    nobody's answer; --json on a terminal refuses with one document and no question.  Each
    would otherwise download (and bill) what the user never agreed to."""
    common, dest, _ = costly
    monkeypatch.setattr("ckptlake.cli.egress.isatty", lambda stream: True)
    r = pull(common, dest, input="\n")
    assert r.exit_code == 7, r.output
    assert "Download anyway? [y/N]" in r.stderr and "nothing was downloaded" in r.stderr, r.stderr
    assert not dest.exists()
    r = pull(common, dest, "--json", input="y\n")
    assert r.exit_code == 7, r.output
    assert "Download anyway?" not in r.stderr
    assert json.loads(r.stdout)["error"]["type"] == "PolicyRefusal" and not dest.exists()
    monkeypatch.setattr("ckptlake.cli.egress.isatty", stdin_piped)
    r = pull(common, dest, input="y\n")
    assert r.exit_code == 7, r.output
    assert "Download anyway?" not in r.stderr and "--yes" in r.stderr
    assert not dest.exists()


# ---- config checks ----------------------------------------------------------------------------

def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    return info.value


def test_a_misspelt_cache_key_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """cache: {sizee: 20GiB} silently ignored would leave the cache unbounded (the user
    believes it capped at 20 GiB): an error naming cache.sizee and its line, exit 2."""
    e = config_error(tmp_path, "cache: {dir: ./cache, sizee: 20GiB}\n")
    assert "c.yaml:1: cache.sizee: unknown key" in str(e), str(e)
    monkeypatch.chdir(tmp_path)
    r = cli("ls", "--lake", "file://" + str(tmp_path / "lake"), "--config", tmp_path / "c.yaml")
    assert r.exit_code == 2 and "cache.sizee" in r.stderr, r.output


def test_credentials_in_endpoint_url_are_refused_and_not_echoed(tmp_path: Path) -> None:
    """endpoint_url with user:password in it would send (and log) the secret with every
    request: refused, and the error does not repeat it."""
    e = config_error(tmp_path, "endpoint_url: http://AKIA:secret@localhost:9000/?x=1\n")
    assert "c.yaml:1: endpoint_url: must not hold credentials" in str(e), str(e)
    assert "secret" not in str(e) and "secret" not in (e.hint or "")


def test_a_zero_bandwidth_is_an_error_at_its_line(tmp_path: Path) -> None:
    """max_bandwidth: 0 is not 'no limit' (leave it out for that) and would stall every
    transfer: refused where it is written, the file and line named."""
    e = config_error(tmp_path, "max_bandwidth: 0\n")
    assert str(e).startswith(str(tmp_path / "c.yaml") + ":1: max_bandwidth: must be positive"), \
        str(e)
