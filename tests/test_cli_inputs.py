"""Command-line inputs a mutation review of the CLI found mishandled: an empty SOURCE or DIR
read as the current directory, non-ASCII digits in --shard, an endless --poll/--drain, and a
mistyped replica name reported as a connection failure."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app

from test_cli import no_open  # noqa: F401  (fixture: usage errors never open the lake)


def cli(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a file nobody asked to upload."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("private")
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.usefixtures("no_open")
def test_an_empty_source_or_dir_is_no_current_directory(in_cwd: Path) -> None:
    """`ckptlake push "$CKPT" a/b` with $CKPT unset uploaded the working directory (a Path
    made of "" is "."), and `watch ""` watched it; pull refused an empty DEST already."""
    r = cli("push", "", "e/e")
    assert r.exit_code == 2 and "SOURCE is empty" in r.stderr, r.stderr
    r = cli("watch", "", "w/z", "--once")
    assert r.exit_code == 2 and "DIR is empty" in r.stderr, r.stderr
    r = cli("cat", "a/b", "")
    assert r.exit_code == 2 and "PATH is empty" in r.stderr, r.stderr
    r = cli("cat", "a/b", " ")
    assert r.exit_code == 2 and "PATH is empty" in r.stderr, r.stderr
    r = cli("watch", "notes.txt", "w/z", "--once")
    assert r.exit_code == 2 and "is a file" in r.stderr, r.stderr


def test_the_library_refuses_an_empty_source(in_cwd: Path, tmp_path: Path) -> None:
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        with pytest.raises(ckptlake.UsageError, match="source is empty"):
            lake.push("", "e/e")
        assert lake.artifacts() == []


@pytest.mark.usefixtures("no_open")
@pytest.mark.parametrize("shard", ["²/3", "0/³", "١/2"])
def test_shard_numbers_are_ascii_digits(in_cwd: Path, shard: str) -> None:
    """str.isdigit() takes "²" and "١", which int() refuses or reads: an internal error (exit
    1) where a usage error belongs."""
    r = cli("push", ".", "s/a", "--shard", shard, "--step", 1)
    assert r.exit_code == 2 and "expected RANK/WORLD" in r.stderr, r.stderr


@pytest.mark.usefixtures("no_open")
@pytest.mark.parametrize("option", ["--poll", "--settle"])
@pytest.mark.parametrize("value", ["inf", "1e10"])
def test_watch_intervals_must_be_finite(in_cwd: Path, option: str, value: str) -> None:
    """`--poll inf` (or 1e10) pushed one checkpoint, then failed with an internal
    OverflowError (a wait longer than the platform's time_t)."""
    r = cli("watch", ".", "w/z", "--once", option, value)
    assert r.exit_code == 2 and "finite" in r.stderr, r.stderr


def test_watch_drain_inf_waits_for_the_upload(in_cwd: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`--drain inf` means wait as long as the upload takes; Thread.join(inf) raised
    OverflowError, so a SIGTERM abandoned the upload with an internal error."""
    import threading

    from ckptlake.cli import watch as cli_watch

    seen: list[float] = []

    def run(watcher: Any, out: Any, *, once: bool, drain: float) -> int:
        seen.append(drain)
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join(drain)  # what _run does with it: OverflowError for inf
        return 0

    monkeypatch.setattr(cli_watch, "_run", run)
    (in_cwd / "step_1").mkdir()
    r = cli("--lake", f"file://{tmp_path / 'lake'}", "watch", ".", "w/z", "--drain", "inf")
    assert r.exit_code == 0, r.stderr
    assert seen == [threading.TIMEOUT_MAX]


def test_a_mistyped_replica_is_a_usage_error_before_any_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the lake out of reach, `cat --replica nope`, `pull --estimate --replica nope` and
    `replicate --to nope` retried the lake and said it could not connect (exit 8): the typo
    hid behind a connection error.  The name is checked from the configuration first."""
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text("replicas:\n  - name: eu\n    url: file://" + str(tmp_path / "eu")
                   + "\n    region: eu-west-1\n")
    monkeypatch.setenv("CKPTLAKE_CONFIG", str(cfg))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = ["--lake", "s3://bucket/p", "--endpoint-url", "http://127.0.0.1:9"]
    for args in (["cat", "a/b", "f", "--replica", "nope"],
                 ["pull", "a/b", str(tmp_path / "out"), "--estimate", "--replica", "nope"],
                 ["replicate", "a/b", "--to", "nope"],
                 ["replicate", "a/b", "--to", "none"]):
        r = cli(*dead, *args)
        assert r.exit_code == 2 and "no replica named" in r.stderr, (args, r.stderr)
    assert not os.path.exists(tmp_path / "out")


def test_an_empty_path_inside_a_version_is_still_its_one_file(tmp_path: Path) -> None:
    """The refusal of "" is for paths on this machine: inside a version, "" names a one-file
    version's file (lake.open and torch.single.load agree)."""
    torch = pytest.importorskip("torch")
    from ckptlake.torch import single

    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        single.save({"x": torch.ones(2)}, lake, "one")
        assert torch.equal(single.load(lake, "one", "")["x"], torch.ones(2))
        assert lake.open("one", "").read()[:2] == b"PK"  # the torch.save zip



@pytest.mark.usefixtures("no_open")
@pytest.mark.parametrize("shard", ["8/8", "-1/8", "0/0", "3", "3/8/1"])
def test_a_shard_outside_its_world_is_refused_before_the_lake_opens(in_cwd: Path,
                                                                    shard: str) -> None:
    """The library refuses it too, but only after opening the lake (a network round trip and,
    for a new lake, its header written)."""
    r = cli("push", ".", "s/a", "--shard", shard, "--step", 1)
    assert r.exit_code == 2, r.stderr
    assert "RANK must be in 0..WORLD-1" in r.stderr or "expected RANK/WORLD" in r.stderr, r.stderr


@pytest.mark.usefixtures("no_open")
@pytest.mark.parametrize("option,first,second", [
    ("--metric", "loss=1.5", "loss=2"),
    ("--metric", "loss=1.5", " loss =1.5"),
    ("--meta", "note=a", "note=b"),
])
def test_a_pair_given_twice_is_refused_not_one_kept(in_cwd: Path, option: str, first: str,
                                                    second: str) -> None:
    """Keeping either value silently would rank (or describe) the version by a number the user
    may not have meant."""
    r = cli("push", ".", "s/a", option, first, option, second)
    assert r.exit_code == 2 and "given more than once" in r.stderr, r.stderr


@pytest.mark.usefixtures("no_open")
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_a_metric_must_be_finite(in_cwd: Path, value: str) -> None:
    """NaN cannot be ranked by @min:/@max: or keep_best, and neither is valid JSON."""
    r = cli("push", ".", "s/a", "--metric", f"loss={value}")
    assert r.exit_code == 2 and "must be a finite number" in r.stderr, r.stderr


def test_meta_values_are_kept_as_given_and_metrics_as_numbers(tmp_path: Path) -> None:
    """--meta takes any text after the first '=' (another '=', an empty value); --metric reads
    a number from its text."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x")
    lake = f"file://{tmp_path / 'lake'}"
    r = cli("push", src, "m/a", "--lake", lake, "--meta", "cmd=a=b", "--meta", "empty=",
            "--metric", " loss = 0.25", "--metric", "acc=1e-1")
    assert r.exit_code == 0, r.stderr
    with ckptlake.open(lake) as handle:
        v = handle.show("m/a")
    assert v.metadata == {"cmd": "a=b", "empty": ""}
    assert v.metrics == {"loss": 0.25, "acc": 0.1}


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "127.0.0.1:9000", "http://", "s3://b"])
def test_an_endpoint_that_is_no_http_url_is_a_usage_error(url: str, tmp_path: Path) -> None:
    """As `endpoint_url:` in a config file: `ftp://...` went to botocore, which refused it
    after the retries as a storage error (exit 8)."""
    r = cli("ls", "--lake", "s3://bucket/p", "--endpoint-url", url)
    assert r.exit_code == 2 and "--endpoint-url must be an http:// or https:// URL" in r.output
    r = cli("cp", "a/b", "--lake", (tmp_path / "l").as_uri(), "--to", "s3://b/x",
            "--to-endpoint-url", url)
    assert r.exit_code == 2 and "--to-endpoint-url must be an http" in r.output, r.output
    with pytest.raises(ckptlake.UsageError, match="endpoint_url must be an http"):
        ckptlake.open("s3://bucket/p", endpoint_url=url)


def test_a_selector_in_the_wrong_case_gets_a_hint(tmp_path: Path) -> None:
    """`@V1`, `@LATEST`: no alias can have those names (a new one is refused), and the user
    meant the selector; `@Prod` beside `prod` meant the alias."""
    url = (tmp_path / "l").as_uri()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with ckptlake.open(url) as lake:
        lake.push(src, "a/b", aliases=["prod"])
    for ref, meant in (("a/b@V1", "@v1"), ("a/b@LATEST", "@latest"), ("a/b@Prod", "@prod")):
        r = cli("show", ref, "--lake", url)
        assert r.exit_code == 3 and f"did you mean {meant}?" in r.output, r.output


def test_a_missing_reference_directory_is_exit_3_and_a_file_exit_2(tmp_path: Path) -> None:
    url = (tmp_path / "l").as_uri()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with ckptlake.open(url) as lake:
        lake.push(src, "a/b")
    r = cli("pull", "a/b", str(tmp_path / "out"), "--lake", url, "--reference",
            str(tmp_path / "nonexist"))
    assert r.exit_code == 3 and "does not exist" in r.output, r.output
    r = cli("pull", "a/b", str(tmp_path / "out"), "--lake", url, "--reference", str(src))
    assert r.exit_code == 2 and "is a file" in r.output, r.output


@pytest.mark.parametrize("url", ["http://[::1", "http://localhost:99999"])
def test_an_endpoint_urllib_cannot_parse_is_a_usage_error(url: str, tmp_path: Path) -> None:
    """An unclosed IPv6 bracket was an internal error (exit 1), a port out of range a storage
    error (exit 8); in a config file too."""
    r = cli("ls", "--lake", "s3://bucket/p", "--endpoint-url", url)
    assert r.exit_code == 2 and "must be an http:// or https:// URL" in r.output, r.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'lake: s3://bucket/p\nendpoint_url: "{url}"\n')
    r = cli("ls", "--config", str(cfg))
    assert r.exit_code == 2 and "must be an http:// or https:// URL" in r.output, r.output
    with pytest.raises(ckptlake.UsageError):
        ckptlake.open("s3://bucket/p", endpoint_url=url)


def test_a_destination_of_slash_holds_every_path_below_it() -> None:
    """`cd / && ckptlake pull ORG/MODEL .` (a Dockerfile without WORKDIR) was refused, exit 5:
    "would be written through a symlink that leads outside /" -- "/" + os.sep is "//", which
    no resolved path starts with (from a new user's review)."""
    from ckptlake.core.pull import _inside

    assert _inside("/", "/x/y") and _inside("/", "/")
    assert _inside("/data/out", "/data/out/a") and not _inside("/data/out", "/data/outside")


@pytest.mark.parametrize("answer, expected", [("y\n", True), ("YES\n", True), ("\n", False),
                                              ("maybe\nn\n", False)])
def test_the_question_writes_nothing_to_stdout(answer: str, expected: bool,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """typer.confirm(err=True) handed the prompt's last character to input(), which wrote it
    to stdout: `cat` past the egress question put a space in front of the file's bytes and
    exited 0 (a review)."""
    import io

    from ckptlake.cli.ask import confirm

    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    assert confirm("Pull 2 GiB across regions?", "pull") is expected
    out, err = capsys.readouterr()
    assert out == "" and "Pull 2 GiB across regions? [y/N]: " in err


def test_cat_errors_neither_drive_the_terminal_nor_hint_a_broken_command(tmp_path: Path
                                                                        ) -> None:
    """A directory named with an escape sequence, a link to a name with a newline, a name with
    spaces: the errors printed them raw and the hints named wrong arguments (a review)."""
    import subprocess

    src = tmp_path / "src"
    (src / "e\x1b[31mred").mkdir(parents=True)
    (src / "e\x1b[31mred" / "f").write_bytes(b"x")
    (src / "new\nline").write_bytes(b"n")
    (src / "ünï cödé").write_bytes(b"u")
    (src / "lnk").symlink_to("new\nline")
    (src / "ln3").symlink_to("ünï cödé")
    url = (tmp_path / "l").as_uri()
    with ckptlake.open(url) as lake:
        lake.push(src, "odd/a")
    r = cli("cat", "odd/a", "e\x1b[31mred", "--lake", url)
    assert r.exit_code == 2 and "\x1b" not in r.output and "e\\x1b[31mred" in r.output
    for link, content in (("lnk", b"n"), ("ln3", b"u")):
        r = cli("cat", "odd/a", link, "--lake", url)
        [error] = [x for x in r.output.splitlines() if x.startswith("ckptlake: error:")]
        assert r.exit_code == 2 and "\x1b" not in r.output and "is a symlink" in error
        command = error.split("cat its target: ", 1)[1].rsplit(")", 1)[0].strip()
        argv = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True,
                              check=True).stdout.split(b"\0")[:-1]
        assert argv[:3] == [b"ckptlake", b"cat", b"odd/a@v1"]
        assert (src / os.fsdecode(argv[3])).read_bytes() == content
