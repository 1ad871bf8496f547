"""The CLI's contract: streams, exit codes, --json/--quiet, option parsing, error mapping.

Most tests swap `ckptlake.open` for a fake lake so they exercise the CLI alone (no engine, no
storage); a few run against a real local lake (`local_lake_url`) to check the wiring end to end.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake import errors
from ckptlake.cli import output
from ckptlake.cli.app import app
from ckptlake.results import AliasResult, ArtifactInfo, PullResult, PushResult, VersionInfo

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
GiB, MiB = 1 << 30, 1 << 20


# ---- a fake lake -------------------------------------------------------------------------------

@dataclass
class FakeLake:
    """Stands in for ckptlake.Lake: records calls, returns canned results or raises `error`."""

    url: str = "file:///fake/lake"
    origin: str = "--lake"
    error: BaseException | None = None
    calls: list[tuple[str, tuple, dict]] = field(default_factory=list)
    closed: bool = False
    progress_seen: list[Any] = field(default_factory=list)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if "progress" in kwargs:
            self.progress_seen.append(kwargs["progress"])
        if self.error is not None:
            raise self.error

    def push(self, source: Any, artifact: str, **kw: Any) -> PushResult:
        self._call("push", source, artifact, **kw)
        return PushResult(lake=self.url, artifact=artifact, version=3, step=kw.get("step"),
                          files=12, bytes_scanned=GiB, bytes_uploaded=120 * MiB,
                          bytes_deduplicated=904 * MiB, chunks_uploaded=8,
                          chunks_deduplicated=57, aliases=list(kw.get("aliases") or []),
                          seconds=3.2)

    def pull(self, ref: Any, destination: Any, **kw: Any) -> PullResult:
        self._call("pull", ref, destination, **kw)
        return PullResult(lake=self.url, artifact=ref.artifact, version=3,
                          destination=str(destination), files=12, bytes_total=GiB,
                          bytes_downloaded=GiB, bytes_reused=0, bytes_resumed=0, seconds=2.1)

    def artifacts(self, prefix: str = "") -> list[ArtifactInfo]:
        self._call("artifacts", prefix)
        return [ArtifactInfo(artifact="gpt2/run-7/ckpt", versions=3, latest=3, updated=NOW,
                             aliases=["best"]),
                ArtifactInfo(artifact="tok", versions=1, latest=1, updated=NOW, aliases=[])]

    def versions(self, artifact: str) -> list[VersionInfo]:
        self._call("versions", artifact)
        return [VersionInfo(artifact=artifact, version=v, step=1000 * v, created=NOW,
                            created_by="me@host", total_bytes=GiB, files=12,
                            metrics={"loss": 2.5 - v / 10, "acc": 0.5}, metadata={"git": "abc"},
                            aliases=["best"] if v == 2 else [])
                for v in (1, 2)]

    def resolve(self, ref: Any) -> VersionInfo:
        self._call("resolve", ref)
        return self.versions(ref.artifact)[-1]

    def alias(self, ref: Any, name: str) -> AliasResult:
        self._call("alias", ref, name)
        return AliasResult(artifact=ref.artifact, alias=name, version=2, previous=1)

    def exists(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


@dataclass
class OpenSpy:
    lake: FakeLake = field(default_factory=FakeLake)
    error: BaseException | None = None
    calls: list[tuple[tuple, dict]] = field(default_factory=list)

    def __call__(self, *args: Any, **kwargs: Any) -> FakeLake:
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return self.lake


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> OpenSpy:
    spy = OpenSpy()
    monkeypatch.setattr(ckptlake, "open", spy)
    return spy


@pytest.fixture
def no_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Usage errors must be caught before the lake is opened (fast, and no network)."""
    def forbidden(*a: Any, **k: Any) -> None:
        raise AssertionError("ckptlake.open must not be called for a usage error")

    monkeypatch.setattr(ckptlake, "open", forbidden)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.bin").write_bytes(b"x" * 100)
    return d


def run(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result: Any) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    return lines[0]


def error_line(result: Any) -> str:
    """The one error line, ignoring the "using lake ..." note printed before the failure."""
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("using lake ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    return lines[0]


# ---- help, version ---------------------------------------------------------------------------

def test_version() -> None:
    r = run("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"ckptlake {ckptlake.__version__}"


def test_bare_command_shows_help() -> None:
    r = run()
    assert r.exit_code == 0
    for name in ("push", "pull", "ls", "alias"):
        assert name in r.stdout


@pytest.mark.parametrize("command", ["push", "pull", "ls", "alias"])
def test_command_help_documents_grammar_exit_codes_and_common_options(command: str) -> None:
    r = run(command, "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "ARTIFACT[@SELECTOR]" in text
    assert "step=N" in text and "vN" in text
    assert "Exit codes" in text and "3 not found" in text and "130 interrupted" in text
    for opt in ("--lake", "--endpoint-url", "--profile", "--region", "--config", "--json",
                "--quiet", "--debug"):
        assert opt in r.stdout


def test_no_typer_completion_options() -> None:
    r = run("--install-completion")
    assert r.exit_code == 2
    assert "--install-completion" not in run("--help").stdout
    assert app.pretty_exceptions_enable is False


def test_help_mentions_static_completions() -> None:
    shown = " ".join(run("--help").stdout.split())
    assert "ckptlake completion bash|zsh|fish prints the script" in shown


# ---- usage errors ----------------------------------------------------------------------------

USAGE_CASES = {
    "bad-ref": ["pull", "a//b", "DEST"],
    "bad-selector": ["pull", "a/b@step=x", "DEST"],
    "metric-not-float": ["push", "SRC", "a/b", "--metric", "loss=abc"],
    "metric-nan": ["push", "SRC", "a/b", "--metric", "loss=nan"],
    "metric-no-equals": ["push", "SRC", "a/b", "--metric", "loss"],
    "metric-repeated": ["push", "SRC", "a/b", "--metric", "loss=1", "--metric", "loss=2"],
    "meta-empty-key": ["push", "SRC", "a/b", "--meta", "=x"],
    "meta-repeated": ["push", "SRC", "a/b", "--meta", "k=1", "--meta", "k=2"],
    "negative-step": ["push", "SRC", "a/b", "--step", "-1"],
    "step-not-int": ["push", "SRC", "a/b", "--step", "ten"],
    "artifact-with-selector": ["push", "SRC", "a/b@v2"],
    "bad-alias": ["push", "SRC", "a/b", "--alias", "v3"],
    "bad-chunk-size": ["push", "SRC", "a/b", "--chunk-size", "lots"],
    "zero-concurrency": ["pull", "a/b", "DEST", "--concurrency", "0"],
    "unknown-option": ["push", "SRC", "a/b", "--bogus"],
    "missing-argument": ["push", "SRC"],
    "unknown-command": ["frobnicate"],
    "alias-latest": ["alias", "a/b@v1", "latest"],
    "ls-bad-artifact": ["ls", "../x"],
}


def _fill(args: list[str], src: Path, tmp_path: Path) -> list[str]:
    return [str(src) if a == "SRC" else str(tmp_path / "dest") if a == "DEST" else a
            for a in args]


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_errors_exit_2_with_one_line(case: str, src: Path, tmp_path: Path,
                                           no_open: None) -> None:
    r = run(*_fill(USAGE_CASES[case], src, tmp_path))
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert one_line_error(r).startswith("ckptlake: error: ")
    assert r.stdout == ""


@pytest.mark.parametrize(("args", "hint"), [
    (["tag", "a/b", "prod"], "No such command 'tag'; ckptlake calls it 'alias'"),
    (["download", "a/b", "DEST"], "ckptlake calls it 'pull'"),
    (["push", "SRC", "a/b", "--tag", "prod"], "No such option: --tag; did you mean --alias?"),
    (["pull", "a/b", "DEST", "--workers=4"], "did you mean --concurrency?"),
    (["push", "SRC", "a/b", "--bwlimit", "10MiB"], "did you mean --max-bandwidth?"),
    # Click's spelling guesses ("Did you mean 'ls', 'alias'?") go where the name is known
    (["list"], "error: No such command 'list'; ckptlake calls it 'ls' (see"),
    (["version"], "ckptlake calls it '--version'"),
    (["pull", "a/b", "DEST", "--overwrite"], "No such option: --overwrite; did you mean --force?"),
    (["pull", "a/b", "DEST", "-f"], "No such option: -f; did you mean --force?"),  # cp -f
    (["rm", "a/b@v1", "-f"], "No such option: -f; did you mean --yes?"),  # rm -f
    (["gc", "--force"], "No such option: --force; did you mean --yes?"),
])
def test_peer_tools_words_get_ckptlakes_name(args: list[str], hint: str, src: Path,
                                             tmp_path: Path, no_open: None) -> None:
    r = run(*_fill(args, src, tmp_path))
    assert r.exit_code == 2
    line = one_line_error(r)
    assert hint in line and "Possible options" not in line, line


def test_synonym_only_offered_where_the_option_exists(no_open: None) -> None:
    line = one_line_error(run("ls", "--workers", "3"))  # ls has no --concurrency
    assert "did you mean" not in line and "--workers" in line
    # on cat, cp and diff --yes accepts an egress cost: -f / --force are not that
    for args in (["cat", "-f", "a/b", "x"], ["cp", "--force", "a/b", "--to", "/tmp/x"],
                 ["diff", "-f", "a/b@v1", "a/b@v2"]):
        assert "did you mean" not in one_line_error(run(*args)), args
    assert "calls it" not in one_line_error(run("frobnicate"))


@pytest.mark.parametrize("case", ["bad-ref", "metric-not-float", "negative-step",
                                  "unknown-option"])
def test_usage_errors_with_json_give_one_document(case: str, src: Path, tmp_path: Path,
                                                  no_open: None) -> None:
    r = run(*_fill(USAGE_CASES[case], src, tmp_path), "--json")
    assert r.exit_code == 2
    doc = json.loads(r.stdout)  # exactly one document (json.loads rejects trailing data)
    assert doc["error"]["exit_code"] == 2
    assert doc["error"]["type"] == "UsageError"
    assert doc["error"]["message"]
    one_line_error(r)


def test_push_to_a_reference_says_push_takes_a_name(src: Path, no_open: None) -> None:
    r = run("push", src, "x/y@v2")
    assert r.exit_code == 2 and "is a reference" in r.stderr and "'x/y'" in r.stderr, r.stderr


def test_max_bandwidth_zero_is_refused_as_in_the_config(src: Path, no_open: None) -> None:
    r = run("push", src, "a/b", "--max-bandwidth", "0")
    assert r.exit_code == 2 and "must be positive" in r.stderr, r.stderr


def test_metric_message_names_the_bad_value(src: Path, no_open: None) -> None:
    r = run("push", src, "a/b", "--metric", "loss=abc")
    assert "loss=abc" in r.stderr and "not a number" in r.stderr


@pytest.mark.parametrize("name", ["a b", "\u00fc", "nl\nx", "loss<2", "x" * 129])
def test_metric_name_no_selector_could_use_is_refused(src: Path, no_open: None,
                                                      name: str) -> None:
    """Stored, such a name could never be named by @min:, --where or --sort."""
    r = run("push", src, "a/b", "--metric", f"{name}=1")
    assert r.exit_code == 2 and "invalid metric name" in r.stderr, r.stderr
    one_line_error(r)


# ---- error mapping ---------------------------------------------------------------------------

ERRORS = [
    (errors.UsageError("bad thing", hint="do this"), 2),
    (errors.ConfigError("bad key", path="ckptlake.yaml", line=3, key="lake"), 2),
    (errors.NotFound("artifact 'a/b' not found"), 3),
    (errors.AccessDenied("access denied to s3://b/p"), 4),
    (errors.IntegrityError("chunk abc: hash mismatch"), 5),
    (errors.UnsafeManifest("path escapes destination"), 5),
    (errors.Conflict("destination holds other files", hint="use --force"), 6),
    (errors.SourceChanged("a.bin changed during push"), 6),
    (errors.PreconditionFailed("lost the race"), 6),
    (errors.PolicyRefusal("egress refused"), 7),
    (errors.TransferError("gave up after 5 attempts"), 8),
    (errors.Interrupted("interrupted by SIGTERM"), 130),
]


@pytest.mark.parametrize("err,code", ERRORS, ids=lambda e: type(e).__name__
                         if isinstance(e, Exception) else str(e))
@pytest.mark.parametrize("command", ["push", "pull", "ls", "alias"])
def test_library_errors_map_to_exit_codes(fake: OpenSpy, err: errors.CkptlakeError, code: int,
                                          command: str, src: Path, tmp_path: Path) -> None:
    fake.lake.error = err
    args = {"push": ["push", src, "a/b"], "pull": ["pull", "a/b", tmp_path / "d"],
            "ls": ["ls", "a/b"], "alias": ["alias", "a/b@v1", "best"]}[command]
    r = run(*args)
    assert r.exit_code == code == err.exit_code
    assert error_line(r) == f"ckptlake: error: {err}"
    assert r.stdout == ""
    assert fake.lake.closed, "the lake is closed even when the operation fails"

    r = run(*args, "--json")
    assert r.exit_code == code
    assert json.loads(r.stdout) == {"error": {"type": type(err).__name__, "message": str(err),
                                              "exit_code": code}}
    assert error_line(r) == f"ckptlake: error: {err}"


def test_error_while_opening_the_lake_is_one_line(fake: OpenSpy) -> None:
    fake.error = errors.UsageError("unsupported lake URL scheme ftp://", hint="use s3://")
    r = run("ls", "--lake", "ftp://x")
    assert r.exit_code == 2
    assert one_line_error(r) == "ckptlake: error: unsupported lake URL scheme ftp:// (use s3://)"


def test_real_open_with_bad_url_is_one_line(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("ls", "--lake", "ftp://example.com/x?X-Amz-Signature=SECRET")
    assert r.exit_code == 2
    line = one_line_error(r)
    assert line.startswith("ckptlake: error: ")
    assert "SECRET" not in r.stderr and "X-Amz-Signature" not in r.stderr


def test_keyboard_interrupt_exits_130(fake: OpenSpy, src: Path) -> None:
    fake.lake.error = KeyboardInterrupt()
    r = run("push", src, "a/b")
    assert r.exit_code == 130
    assert error_line(r) == "ckptlake: interrupted"
    r = run("push", src, "a/b", "--json")
    assert r.exit_code == 130
    assert json.loads(r.stdout)["error"] == {"type": "Interrupted", "message": "interrupted",
                                             "exit_code": 130}


def test_internal_error_is_one_line_without_traceback(fake: OpenSpy) -> None:
    fake.lake.error = RuntimeError("boom")
    r = run("ls")
    assert r.exit_code == 1
    assert error_line(r) == ("ckptlake: internal error: RuntimeError: boom "
                                 "(run again with --debug for the traceback)")
    r = run("ls", "--json")
    assert json.loads(r.stdout) == {"error": {"type": "InternalError",
                                              "message": "RuntimeError: boom", "exit_code": 1}}


def test_debug_prints_the_traceback(fake: OpenSpy) -> None:
    fake.lake.error = RuntimeError("boom")
    r = run("ls", "--debug")
    assert r.exit_code == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1] == "ckptlake: internal error: RuntimeError: boom"
    fake.lake.error = errors.NotFound("nope")
    r = run("ls", "--debug")
    assert r.exit_code == 3
    assert "Traceback (most recent call last)" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1] == "ckptlake: error: nope"


def test_messages_never_show_credentials_or_query_strings(fake: OpenSpy) -> None:
    fake.lake.url = "s3://AKIDEXAMPLE:topsecret@bucket/p?X-Amz-Signature=deadbeef"
    fake.lake.error = errors.TransferError(
        "GET https://bucket.s3.amazonaws.com/k?X-Amz-Credential=AKID&X-Amz-Signature=ff failed")
    r = run("ls")
    assert r.exit_code == 8
    for secret in ("topsecret", "AKIDEXAMPLE", "deadbeef", "X-Amz-Credential", "AKID&"):
        assert secret not in r.stderr + r.stdout
    assert "https://bucket.s3.amazonaws.com/k?..." in r.stderr


# ---- results ---------------------------------------------------------------------------------

def test_push_human_output(fake: OpenSpy, src: Path) -> None:
    r = run("push", src, "gpt2-small/run-7/ckpt", "--step", "2000")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ("pushed gpt2-small/run-7/ckpt@v3 (step 2000): 12 files, 1.00 GiB scanned, "
                        "120.0 MiB uploaded, 904.0 MiB deduplicated, 3.2 s (320 MiB/s)\n")
    assert r.stderr.splitlines()[0] == "using lake file:///fake/lake (--lake)"
    assert fake.lake.closed


def test_push_passes_every_option_through(fake: OpenSpy, src: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    r = run("push", src, "a/b", "--step", "7", "--metric", "loss=2.5", "--metric", "acc=1",
            "--meta", "git=abc", "--meta", "note=", "--alias", "best", "--alias", "prod",
            "--exclude", "*.tmp", "--exclude", "cache/**", "--follow-symlinks",
            "--chunk-size", "16MiB", "--concurrency", "4", "-l", "s3://b/p",
            "--endpoint-url", "http://127.0.0.1:9000", "--profile", "dev", "--region", "eu-1",
            "--config", cfg, "--max-bandwidth", "50MiB")
    assert r.exit_code == 0, r.stderr
    [(args, kwargs)] = fake.calls
    assert args == ("s3://b/p",)
    assert kwargs == {"config": str(cfg), "endpoint_url": "http://127.0.0.1:9000",
                      "profile": "dev", "region": "eu-1", "chunk_size": 16 * MiB,
                      "concurrency": 4, "max_bandwidth": 50 * MiB}
    [(name, pargs, pkw)] = fake.lake.calls
    assert name == "push" and Path(pargs[0]) == src and pargs[1] == "a/b"
    assert pkw["step"] == 7
    assert pkw["metrics"] == {"loss": 2.5, "acc": 1.0}
    assert all(isinstance(v, float) for v in pkw["metrics"].values())
    assert pkw["metadata"] == {"git": "abc", "note": ""}
    assert pkw["aliases"] == ["best", "prod"]
    assert pkw["exclude"] == ["*.tmp", "cache/**"]
    assert pkw["follow_symlinks"] is True


def test_push_defaults_leave_choices_to_the_library(fake: OpenSpy, src: Path) -> None:
    assert run("push", src, "a/b").exit_code == 0
    [(args, kwargs)] = fake.calls
    assert args == (None,)
    assert kwargs == {"config": None, "endpoint_url": None, "profile": None, "region": None,
                      "chunk_size": None, "concurrency": None,
                      "max_bandwidth": None}
    [(_, _, pkw)] = fake.lake.calls
    assert pkw["step"] is None and pkw["metrics"] == {} and pkw["aliases"] == []
    assert pkw["follow_symlinks"] is False


def test_push_json_is_one_document(fake: OpenSpy, src: Path) -> None:
    r = run("push", src, "a/b", "--step", "5", "--alias", "best", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["lake"] == "file:///fake/lake" and doc["lake_origin"] == "--lake"
    assert {k: doc[k] for k in ("artifact", "version", "step", "bytes_uploaded", "aliases")} == {
        "artifact": "a/b", "version": 3, "step": 5, "bytes_uploaded": 120 * MiB,
        "aliases": ["best"]}
    assert set(doc) == set(PushResult.__dataclass_fields__) | {"lake_origin", "ratio"}
    assert r.stderr == "", "no notes with --json"
    assert fake.lake.progress_seen == [None], "no progress renderer with --json"


def test_quiet_prints_nothing(fake: OpenSpy, src: Path, tmp_path: Path) -> None:
    for args in (["push", src, "a/b", "-q"], ["pull", "a/b", tmp_path / "d", "--quiet"],
                 ["ls", "-q"], ["alias", "a/b@v1", "best", "-q"]):
        r = run(*args)
        assert r.exit_code == 0
        assert (r.stdout, r.stderr) == ("", "")


def test_quiet_still_prints_errors(fake: OpenSpy) -> None:
    fake.lake.error = errors.NotFound("no such artifact")
    r = run("ls", "a/b", "-q")
    assert r.exit_code == 3
    assert one_line_error(r) == "ckptlake: error: no such artifact"


def test_pull_human_and_json(fake: OpenSpy, tmp_path: Path) -> None:
    dest = tmp_path / "restore"
    r = run("pull", "gpt2-small/run-7/ckpt@v3", dest)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (f"pulled gpt2-small/run-7/ckpt@v3 -> {dest}: 12 files, 1.00 GiB "
                        "(1.00 GiB downloaded, 0 B reused), 2.1 s (488 MiB/s)\n")
    [(name, pargs, pkw)] = fake.lake.calls
    ref = pargs[0]
    assert (ref.artifact, ref.kind, ref.value) == ("gpt2-small/run-7/ckpt", "version", 3)
    assert pkw["force"] is False
    r = run("pull", "a/b@step=100", dest, "--force", "--json")
    doc = json.loads(r.stdout)
    assert set(doc) == set(PullResult.__dataclass_fields__) | {"lake_origin"}
    assert fake.lake.calls[-1][2]["force"] is True
    assert fake.lake.calls[-1][1][0].kind == "step"


def test_ls_plain_columns_and_json(fake: OpenSpy, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run("ls")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ARTIFACT", "VERSIONS", "LATEST", "UPDATED", "ALIASES"]
    assert lines[1].split()[:3] == ["gpt2/run-7/ckpt", "3", "v3"]
    assert lines[1].split()[-1] == "best"
    assert lines[1].index("3") == lines[0].index("VERSIONS"), "columns are aligned"
    assert not set("│─┃━┏┡") & set(r.stdout), "no box drawing when stdout is not a terminal"
    doc = json.loads(run("ls", "--json").stdout)
    assert doc["lake"] == "file:///fake/lake"
    assert [a["artifact"] for a in doc["artifacts"]] == ["gpt2/run-7/ckpt", "tok"]
    assert doc["artifacts"][0]["updated"] == "2024-05-01T12:00:00Z"


def test_ls_versions(fake: OpenSpy) -> None:
    r = run("ls", "gpt2/run-7/ckpt")
    assert r.exit_code == 0
    header, v1, v2 = r.stdout.splitlines()
    assert header.split() == ["VERSION", "STEP", "SIZE", "AGE", "ALIASES", "METRICS"]
    assert v1.split()[:4] == ["v1", "1000", "1.00", "GiB"]
    assert v1.endswith("acc=0.5 loss=2.4")
    assert "best" in v2.split()
    doc = json.loads(run("ls", "gpt2/run-7/ckpt", "--json").stdout)
    assert doc["artifact"] == "gpt2/run-7/ckpt"
    assert [v["version"] for v in doc["versions"]] == [1, 2]
    assert doc["versions"][0]["metrics"] == {"loss": 2.4, "acc": 0.5}


def test_ls_empty_lake_notes_on_stderr(fake: OpenSpy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeLake, "artifacts", lambda self, prefix="": [])
    r = run("ls")
    assert r.exit_code == 0 and r.stdout == ""
    assert "no artifacts" in r.stderr
    assert json.loads(run("ls", "--json").stdout) == {"lake": "file:///fake/lake",
                                                      "artifacts": []}


def test_alias_human_and_json(fake: OpenSpy) -> None:
    r = run("alias", "a/b@step=2000", "best")
    assert r.exit_code == 0
    assert r.stdout == "alias best -> a/b@v2 (was v1)\n"
    assert json.loads(run("alias", "a/b@v2", "best", "--json").stdout) == {
        "artifact": "a/b", "alias": "best", "version": 2, "previous": 1}


# ---- formatting helpers ----------------------------------------------------------------------

@pytest.mark.parametrize("n,text", [(0, "0 B"), (512, "512 B"), (1024, "1.00 KiB"),
                                    (120 * MiB, "120.0 MiB"), (GiB, "1.00 GiB"),
                                    (904 * MiB, "904.0 MiB"), (1536 * GiB, "1.50 TiB")])
def test_format_bytes(n: int, text: str) -> None:
    assert output.format_bytes(n) == text


def test_format_rate() -> None:
    assert output.format_rate(312 * MiB) == "312 MiB/s"
    assert output.format_rate(48.25 * MiB) == "48.2 MiB/s"
    assert output.format_rate(100) == "100 B/s"


@pytest.mark.parametrize("delta,text", [(timedelta(seconds=5), "5s"),
                                        (timedelta(minutes=3, seconds=59), "3m"),
                                        (timedelta(hours=2, minutes=30), "2h"),
                                        (timedelta(days=5, hours=23), "5d"),
                                        (timedelta(seconds=-30), "0s")])
def test_format_age(delta: timedelta, text: str) -> None:
    assert output.format_age(NOW - delta, now=NOW) == text


def test_alias_summary_variants() -> None:
    new = AliasResult(artifact="a", alias="best", version=1, previous=None)
    same = AliasResult(artifact="a", alias="best", version=1, previous=1)
    assert output.alias_summary(new) == "alias best -> a@v1 (new)"
    assert output.alias_summary(same) == "alias best -> a@v1 (unchanged)"


def test_push_summary_without_step_and_with_aliases() -> None:
    r = PushResult(lake="x", artifact="a", version=1, step=None, files=1, bytes_scanned=10,
                   bytes_uploaded=10, bytes_deduplicated=0, chunks_uploaded=1,
                   chunks_deduplicated=0, aliases=["best", "prod"], seconds=0.0)
    assert output.push_summary(r) == ("pushed a@v1 (aliases best, prod): 1 file, 10 B scanned, "
                                      "10 B uploaded, 0 B deduplicated, 0.0 s")


# ---- progress --------------------------------------------------------------------------------

def test_rich_progress_is_thread_safe_and_rewinds() -> None:
    from rich.console import Console

    from ckptlake.cli.progress import RichProgress

    buf = io.StringIO()
    bar = RichProgress(Console(file=buf, force_terminal=True, width=100))
    with bar:
        bar.start(phase="push", total_bytes=8 * 1000 * 100, total_files=3)

        def worker() -> None:
            for _ in range(100):
                bar.advance(1000)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bar._completed() == 8 * 1000 * 100
        bar.advance(-5000)  # a retried request gives its bytes back
        assert bar._completed() == 8 * 1000 * 100 - 5000
        bar.advance(-10 ** 9)
        assert bar._completed() == 0, "never below zero"
        bar.retry(key="chunks/ab/cdef", attempt=2, error="SlowDown", delay=0.5)
        bar.note("resuming 12 chunks already present")
        bar.file_done("a.bin")
        bar.finish()
        bar.advance(10)  # after finish: ignored, no crash
    text = buf.getvalue()
    assert "retry 2 for chunks/ab/cdef in 0.5 s: SlowDown" in text
    assert "resuming 12 chunks already present" in text


def test_line_progress_writes_only_retries_and_notes(capsys: pytest.CaptureFixture[str]) -> None:
    from ckptlake.cli.progress import LineProgress

    p = LineProgress()
    p.start(phase="pull", total_bytes=10, total_files=1)
    p.advance(10)
    p.retry(key="k", attempt=1, error="timeout\nsecond line", delay=1.0)
    p.note("hello https://h/x?X-Amz-Signature=abc")
    p.finish()
    err = capsys.readouterr().err.splitlines()
    assert err == ["ckptlake: retry 1 for k in 1.0 s: timeout second line",
                   "hello https://h/x?..."]


def test_output_progress_choice(capsys: pytest.CaptureFixture[str]) -> None:
    from ckptlake.cli.options import CommonOptions
    from ckptlake.cli.progress import LineProgress

    with output.Output(CommonOptions(json=True)).progress() as p:
        assert p is None
    with output.Output(CommonOptions(quiet=True)).progress() as p:
        assert p is None
    with output.Output(CommonOptions()).progress() as p:  # stderr is captured: not a tty
        assert isinstance(p, LineProgress)


# ---- imports stay light ----------------------------------------------------------------------

def test_import_and_help_do_not_load_boto3_or_the_engine() -> None:
    code = (
        "import sys\n"
        "import ckptlake.cli.app as m\n"
        "loaded = [n for n in ('boto3', 'botocore', 'rich', 'ckptlake.lake') if n in sys.modules]\n"
        "assert not loaded, loaded\n"
        "sys.argv = ['ckptlake', '--help']\n"
        "try:\n"
        "    m.main()\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "loaded = [n for n in ('boto3', 'botocore', 'ckptlake.lake') if n in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "100"})
    assert r.returncode == 0, r.stderr


def test_cli_package_never_imports_click() -> None:
    import ckptlake.cli as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import click", "from click")), (path, line)


# ---- against a real local lake ---------------------------------------------------------------

def test_pull_missing_artifact_exits_3(local_lake_url: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("pull", "no/such/artifact", tmp_path / "out", "--lake", local_lake_url)
    assert r.exit_code == 3, r.stderr
    assert error_line(r).startswith("ckptlake: error: ")
    r = run("pull", "no/such/artifact", tmp_path / "out", "--lake", local_lake_url, "--json")
    assert r.exit_code == 3
    assert json.loads(r.stdout)["error"]["type"] == "NotFound"


def test_local_lake_push_ls_json_quiet(local_lake_url: str, src: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("push", src, "m/ckpt", "--step", "1", "--lake", local_lake_url, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["artifact"], doc["version"], doc["step"]) == ("m/ckpt", 1, 1)
    assert doc["lake_origin"] == "--lake"
    r = run("push", src, "m/ckpt", "--lake", local_lake_url, "-q")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
    doc = json.loads(run("ls", "m/ckpt", "--lake", local_lake_url, "--json").stdout)
    assert [v["version"] for v in doc["versions"]] == [1, 2]

