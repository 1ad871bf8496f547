"""Issue 12, defects 5 and 6: symlink chains that escape a pull's destination, and secrets that
were stored in manifests or printed.

Symlinks: a manifest's targets are resolved through the links the version itself creates (and,
on a merge pull, the links already in the destination), so a chain whose every target is
lexically inside can still not lead out.  Secrets: one planted secret (with the `/` and `+` of
an AWS secret key) goes in through every door a user has, and then every byte printed and every
object stored in the lake is searched for it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core import summary
from ckptlake.errors import UnsafeManifest, UsageError
from ckptlake.format import layout
from ckptlake.format.manifest import FileEntry, Manifest, decode_manifest
from ckptlake.lake import Lake
from ckptlake.redact import is_secret_name, redact, redact_argv, redact_metadata
from ckptlake.store.memory import MemoryStore

ISSUE_CHAIN = {"a/b/c/d/e/L": "../../../../..",
               "passwd": "a/b/c/d/e/L/../../../../../../etc/passwd"}


def _manifest(links: dict[str, str], files: tuple[str, ...] = ()) -> bytes:
    entries = [FileEntry(path=p, symlink=t) for p, t in links.items()]
    entries += [FileEntry(path=p) for p in files]
    return Manifest(artifact="a", version=1, kind="dir", hash="sha256",
                    files=tuple(sorted(entries, key=lambda e: e.path))).encode()


# ---- 5. symlink chains: the validator ------------------------------------------------------------

@pytest.mark.parametrize("links", [
    ISSUE_CHAIN,
    {"A": "B", "B": "A"},                                   # a loop
    {"A": "A/x"},                                           # a link through itself
    {"up": "..", "x": "up/y"},                              # out through one link
    {"d/L": "..", "x": "d/L/d/L/.."},                       # out only after two hops
    {f"l{i}": f"l{i + 1}" for i in range(41)} | {"l41": "f"},  # 41 links on one resolution
])
def test_validator_refuses_chains_that_leave_the_tree_and_loops(links: dict[str, str]) -> None:
    with pytest.raises(UnsafeManifest):
        decode_manifest(_manifest(links))


@pytest.mark.parametrize("links", [
    {"a/b/c/d/e/L": "../../../../..", "x": "a/b/c/d/e/L/a/b/f"},  # the chain, staying inside
    {"d1": "real", "d2": "d1", "f": "d2/file", "g": "d2/../d1/.."},  # link to a link to a dir
    {"here": ".", "there": "here/here/real"},
    {f"l{i}": f"l{i + 1}" for i in range(39)} | {"l39": "plain"},  # 40 links, as Linux allows
    {"dangling": "nowhere/x"},
])
def test_validator_allows_chains_that_stay_inside(links: dict[str, str]) -> None:
    m = decode_manifest(_manifest(links, files=("real/file", "plain")))
    assert {f.path: f.symlink for f in m.files if f.symlink} == links


def test_file_below_a_link_is_refused_even_through_a_chain() -> None:
    with pytest.raises(UnsafeManifest, match="below the symlink"):
        decode_manifest(_manifest({"d1": "real", "d2": "d1"}, files=("d2/x",)))


# ---- 5. symlink chains: pull ---------------------------------------------------------------------

def _file_lake(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    (src / "real").mkdir()
    (src / "real" / "file").write_text("inside")
    root = tmp_path / "lake"
    r = CliRunner().invoke(app, ["push", str(src), "demo", "--lake", str(root)])
    assert r.exit_code == 0, r.output
    return root


def _tamper_file_lake(root: Path, links: dict[str, str]) -> None:
    path = root / layout.version_key("demo", 1)
    doc = json.loads(path.read_bytes())
    doc["files"] += [{"path": p, "symlink": t} for p, t in links.items()]
    doc["files"].sort(key=lambda f: f["path"])
    path.write_text(json.dumps(doc))


def test_cli_pull_refuses_the_issues_chain_and_writes_nothing(tmp_path: Path) -> None:
    root = _file_lake(tmp_path)
    _tamper_file_lake(root, ISSUE_CHAIN)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["pull", "demo", str(out), "--lake", str(root)])
    assert r.exit_code == 5, r.output
    assert "passwd" in r.stderr and "outside the tree" in r.stderr
    assert not os.path.lexists(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake", "src"]  # no staging left


def test_cli_pull_refuses_a_loop(tmp_path: Path) -> None:
    root = _file_lake(tmp_path)
    _tamper_file_lake(root, {"A": "B", "B": "A"})
    r = CliRunner().invoke(app, ["pull", "demo", str(tmp_path / "out"), "--lake", str(root)])
    assert r.exit_code == 5 and "loop" in r.stderr
    assert not os.path.lexists(tmp_path / "out")


def test_cli_pull_places_chains_that_stay_inside(tmp_path: Path) -> None:
    root = _file_lake(tmp_path)
    _tamper_file_lake(root, {"a/b/c/d/e/L": "../../../../..", "x": "a/b/c/d/e/L/real/file",
                             "d2": "d1", "d1": "real", "y": "d2/file"})
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["pull", "demo", str(out), "--lake", str(root)])
    assert r.exit_code == 0, r.output
    assert (out / "x").read_text() == (out / "y").read_text() == "inside"
    assert os.readlink(out / "x") == "a/b/c/d/e/L/real/file"
    real = os.path.realpath(out)
    for link in ("x", "y", "d2", "a/b/c/d/e/L"):
        assert os.path.realpath(out / link).startswith(real)


@pytest.mark.parametrize("existing", ["absolute", "relative"])
def test_merge_pull_refuses_links_that_leave_through_existing_links(
        tmp_path: Path, existing: str) -> None:
    lake = Lake(MemoryStore(), chunk_size=1 << 20, concurrency=2)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    os.symlink("data/passwd", src / "cur")  # dangling inside the pushed tree: kept as a link
    lake.push(src, "a")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside if existing == "absolute" else "../outside", dest / "data")
    with pytest.raises(UnsafeManifest, match="outside"):
        lake.pull("a", dest)
    assert sorted(os.listdir(dest)) == ["data"]  # nothing written
    # the same existing link pointing inside the destination is fine
    (dest / "data").unlink()
    (dest / "inner").mkdir()
    os.symlink(dest / "inner" if existing == "absolute" else "inner", dest / "data")
    lake.pull("a", dest)
    assert os.readlink(dest / "cur") == "data/passwd"


def test_merge_pull_does_not_make_empty_directories_through_existing_links(
        tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=1 << 20, concurrency=2)
    src = tmp_path / "src"
    (src / "sub" / "empty").mkdir(parents=True)
    (src / "f.txt").write_text("x")
    lake.push(src, "a")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "sub")
    with pytest.raises(UnsafeManifest, match="outside"):
        lake.pull("a", dest)
    assert os.listdir(outside) == [] and sorted(os.listdir(dest)) == ["sub"]


def test_push_refuses_a_symlink_loop(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    os.symlink("B", src / "A")
    os.symlink("A", src / "B")
    with pytest.raises(UsageError, match="loop"):
        Lake(MemoryStore()).push(src, "a")


# ---- 6. the redaction function -------------------------------------------------------------------

SECRET = "SeCrEt/K3y+abc="
PIECES = ("SeCrEt", "K3y+abc", "K3y%2Babc")  # any part of it, raw or percent-encoded


@pytest.mark.parametrize("text,expected", [
    (f"s3://ak:{SECRET}@bucket/p", "s3://bucket/p"),
    (f"https://user:{SECRET}@host:8443/x", "https://host:8443/x"),
    (f"https://u:pa:ss+w=rd@h/x", "https://h/x"),
    (f"https://h/d?X-Amz-Signature={SECRET}&X-Amz-Credential=AKIA/x", "https://h/d?..."),
    (f"https://acct.blob.core.windows.net/c/b?sv=2020&se=x&sig={SECRET}",
     "https://acct.blob.core.windows.net/c/b?..."),
    (f"endpoint `http://ak:{SECRET}@127.0.0.1:1` invalid", "endpoint `http://127.0.0.1:1` invalid"),
    (f"https://h/x#access_token={SECRET}", "https://h/x#access_token=***"),
    (f"--meta token={SECRET}", "--meta token=***"),
    (f"--meta=hf_api_key={SECRET}", "--meta=hf_api_key=***"),
    (f"wandb.api_key={SECRET} password={SECRET}", "wandb.api_key=*** password=***"),
    # left alone: paths with '@' (ckptlake's own keys), ports, digests, innocent pairs
    ("http://127.0.0.1:9000/bucket/artifacts/a/@v/0000000001.json",
     "http://127.0.0.1:9000/bucket/artifacts/a/@v/0000000001.json"),
    ("s3://bucket/runs/x@v3/f", "s3://bucket/runs/x@v3/f"),
    ("input:s3://data/wiki#sha256:ab12", "input:s3://data/wiki#sha256:ab12"),
    ("tokenizer=gpt2 max_tokens=5 sort_key=3 author=me lr=3e-4",
     "tokenizer=gpt2 max_tokens=5 sort_key=3 author=me lr=3e-4"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent: stored values can be redacted again


def test_secret_names() -> None:
    for name in ("token", "HF_TOKEN", "--hf-token", "api_key", "apiKey", "AWS_SECRET_ACCESS_KEY",
                 "db.password", "passwd", "credentials", "X-Amz-Signature", "key", "auth"):
        assert is_secret_name(name), name
    for name in ("tokenizer", "max_tokens", "sort_key", "author", "lr", "keys", "monkey"):
        assert not is_secret_name(name), name
    # all-lowercase compounds, as env vars and flags are often spelled: a word that ends in a
    # secret's name is one, or an `--hftoken` value is kept in clear in a version's provenance
    for name in ("hftoken", "githubtoken", "wandbtoken", "authtoken", "dbpassword"):
        assert is_secret_name(name), name
        assert redact(f"{name}={SECRET}") == f"{name}=***", name
        assert redact_argv([f"--{name}", SECRET, f"--{name}={SECRET}"]) == [
            f"--{name}", "***", f"--{name}=***"], name
        assert redact_metadata({name: SECRET}) == {name: "***"}, name


def test_redact_argv_and_metadata() -> None:
    assert redact_argv(["train.py", "--hf-token", SECRET, "--password=x", "--lr", "3",
                        "--meta", f"token={SECRET}", f"s3://ak:{SECRET}@b/p"]) == [
        "train.py", "--hf-token", "***", "--password=***", "--lr", "3",
        "--meta", "token=***", "s3://b/p"]
    assert redact_metadata({"token": SECRET, "ds": f"https://u:{SECRET}@h/x", "lr": "3"}) == {
        "token": "***", "ds": "https://h/x", "lr": "3"}
    # one argument is one value: a passphrase with spaces or commas is masked whole (three
    # of four words were stored in the manifest's provenance before)
    assert redact_argv(["--meta", "password=correct horse battery staple",
                        "--meta", "secret=S1,STAIL1", "lr=3e-4,token=a b", "run name=x y"]) == [
        "--meta", "password=***", "--meta", "secret=***", "lr=3e-4,token=***", "run name=x y"]


def test_a_secret_metric_value_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("x")
    r = CliRunner().invoke(app, ["push", str(src), "a/b", "--metric", f"token={SECRET}",
                                 "--lake", f"file://{tmp_path / 'l'}"])
    assert r.exit_code == 2 and "not a number" in r.output and SECRET not in r.output, r.output
    r = CliRunner().invoke(app, ["ls", "a/b", "--where", f"token={SECRET}",
                                 "--lake", f"file://{tmp_path / 'l'}"])
    assert r.exit_code == 2 and SECRET not in r.output, r.output


# ---- 6. every output, every stored object --------------------------------------------------------

def _leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [p for p in PIECES if p in text]


def test_a_planted_secret_is_never_printed_nor_stored(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CKPTLAKE_LAKE", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 100)
    root = tmp_path / "lake"
    lake = ["--lake", str(root)]
    printed: list[tuple[list[str], str]] = []

    def run(*args: str, code: int = 0) -> Any:
        argv = [*args]
        # The stored command line is sys.argv, as under the console script.
        monkeypatch.setattr(sys, "argv", ["ckptlake", *argv])
        r = CliRunner().invoke(app, argv)
        printed.append((argv, r.stdout + r.stderr))
        assert r.exit_code == code, (argv, r.output)
        return r

    push = ["push", str(src), "demo", *lake,
            "--input", f"https://user:{SECRET}@host/data",
            "--input", f"https://h/d?X-Amz-Signature={SECRET}&X-Amz-Credential=AKIA/{SECRET}",
            "--input", f"s3://ak:{SECRET}@bucket/ds#sha256:ab12",
            "--meta", f"token={SECRET}", f"--meta=hf_api_key={SECRET}",
            "--meta", f"dataset=https://u:{SECRET}@h/x"]
    run(*push)
    run(*push, "--json", "--debug")
    for json_ in ([], ["--json"]):
        run("show", "demo@latest", *lake, *json_)
        run("ls", *lake, *json_)
        run("ls", "demo", *lake, *json_)
        run("lineage", "demo@latest", *lake, *json_)
    for fmt in ("dot", "mermaid"):
        run("lineage", "demo@latest", *lake, "--format", fmt)
    for extra in ([], ["--json"], ["--debug"]):
        run("ls", "--lake", f"s3://ak:{SECRET}@bucket/p", *extra, code=2)
        run("ls", "--lake", f"https://h/lake?sig={SECRET}", *extra, code=2)
        run("ls", "--lake", "s3://bucket/p", "--endpoint-url",
            f"http://ak:{SECRET}@127.0.0.1:1", *extra, code=2)
        run("push", str(src), "demo", *lake, "--input", f"https://u:{SECRET}@h/x y", *extra,
            code=2)
    config = tmp_path / "ckptlake.yaml"
    config.write_text(f'lake: s3://bucket/p\nendpoint_url: "http://ak:{SECRET}@127.0.0.1:1"\n')
    run("ls", "--config", str(config), "--debug", code=2)

    for argv, text in printed:
        assert not _leaks(text), (argv, text)
    stored = [p for p in root.rglob("*") if p.is_file()]
    assert len(stored) > 3
    summaries = 0
    for p in stored:
        rel = p.relative_to(root).as_posix()
        assert not _leaks(p.read_bytes()) and not _leaks(rel), rel
        if (parsed := layout.parse_summary_key(rel)) is not None:  # `ls` data lives in the key
            doc = json.dumps(summary._unpack(parsed[2]))
            assert not _leaks(doc) and "***" in doc, doc
            summaries += 1
    assert summaries == 2
    # ... and what was asked to be recorded is there, redacted
    m = json.loads((root / layout.version_key("demo", 1)).read_bytes())
    assert m["inputs"] == [{"uri": "https://host/data"}, {"uri": "https://h/d?..."},
                           {"uri": "s3://bucket/ds", "digest": "sha256:ab12"}]
    assert m["metadata"] == {"token": "***", "hf_api_key": "***", "dataset": "https://h/x"}
    assert "token=***" in m["provenance"]["command"]


def test_secrets_already_in_a_lake_are_not_printed(tmp_path: Path) -> None:
    """Manifests written before the fix (or by another writer) still hold secrets: every
    output is redacted on the way out too."""
    root = _file_lake(tmp_path)
    path = root / layout.version_key("demo", 1)
    doc = json.loads(path.read_bytes())
    doc["inputs"] = [{"uri": f"https://u:{SECRET}@h/x?sig={SECRET}"}]
    doc["metadata"] = {"hf_token": SECRET}
    doc["provenance"] = {"command": ["ckptlake", "push", "--hf-token", SECRET,
                                     f"--meta=token={SECRET}"]}
    path.write_text(json.dumps(doc))
    lake = ["--lake", str(root)]
    for argv in (["show", "demo@v1"], ["lineage", "demo@v1"], ["ls", "demo", "--where", "step>=0"],
                 ["lineage", "demo@v1", "--format", "dot"], ["diff", "demo@v1", "demo@v1"]):
        for extra in ([], ["--json"]):
            r = CliRunner().invoke(app, [*argv, *lake, *extra])
            assert r.exit_code == 0, (argv, r.output)
            assert not _leaks(r.stdout + r.stderr), (argv, extra, r.stdout)


def test_the_console_script_stores_its_command_line_redacted(tmp_path: Path) -> None:
    """The real process, so the stored command line is the real argv."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    root = tmp_path / "lake"
    r = subprocess.run([sys.executable, "-m", "ckptlake", "push", str(src), "demo", "--lake",
                        str(root), "--meta", f"token={SECRET}", "--input",
                        f"https://u:{SECRET}@h/x?sig={SECRET}", "--debug"],
                       capture_output=True, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL,
                       timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert not _leaks(r.stdout + r.stderr)
    for p in root.rglob("*"):
        if p.is_file():
            assert not _leaks(p.read_bytes()), p
    m = json.loads((root / layout.version_key("demo", 1)).read_bytes())
    assert m["provenance"]["command"][-5:] == ["--meta", "token=***", "--input",
                                               "https://h/x?...", "--debug"]
