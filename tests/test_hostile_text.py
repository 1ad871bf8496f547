"""Text a lake holds reaching the terminal: whoever can write the bucket chose a metric name, a
tombstone's rule, an alias or artifact name read from a key, and `ls`, `alias`, `gc --dry-run`,
`verify`, `lineage` and the errors of a deleted version printed them raw, escape sequences and
all (a title change, a cleared screen, a cursor moved up over the line before)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.format import layout

ESC = "\x1b"


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def three_versions(tmp_path: Path) -> tuple[Path, str]:
    """t/a v1-v3, each with a metric and the one before as its parent: (lake root, URL)."""
    root = tmp_path / "lake"
    url = f"file://{root}"
    src = tmp_path / "src"
    src.mkdir()
    for n in (1, 2, 3):
        (src / "w.bin").write_bytes(bytes([n]) * 100)
        parent = ["--parent", f"t/a@v{n - 1}"] if n > 1 else []
        r = run("push", src, "t/a", "--lake", url, "--metric", f"loss={n}", *parent)
        assert r.exit_code == 0, r.output
    return root, url


def one_chunk(tmp_path: Path) -> tuple[Path, str]:
    """t/a v1: one file of one chunk (incompressible): (lake root, URL)."""
    import os

    root = tmp_path / "lake"
    url = f"file://{root}"
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(10_000))
    assert run("push", src, "t/a", "--lake", url).exit_code == 0
    return root, url


def test_nothing_a_lake_holds_drives_the_terminal(tmp_path: Path) -> None:
    root, url = three_versions(tmp_path)
    assert run("alias", "t/a@v2", "best", "--lake", url).exit_code == 0
    alias = root / layout.alias_key("t/a", "best")
    shutil.copy(alias, alias.with_name(f"p{ESC}[2Jq.json"))
    shutil.copytree(root / "artifacts" / "t" / "a", root / "artifacts" / "t" / f"e{ESC}]0;X")
    manifest = root / layout.version_key("t/a", 3)
    doc = json.loads(manifest.read_bytes())
    doc["metrics"] = {f"l{ESC}[1A{ESC}[2Kz": 1.5}
    manifest.write_text(json.dumps(doc))
    for summary in (root / "artifacts" / "t" / "a" / "@s").glob("0000000003.*"):
        summary.unlink()  # ls reads the manifest then
    assert run("rm", "t/a@v1", "--lake", url, "--yes").exit_code == 0
    tomb = root / layout.tombstone_key("t/a", 1)
    doc = json.loads(tomb.read_bytes())
    doc["rule"] = f"r{ESC}]0;PWNED{ESC}\\"
    doc["reason"] = f"because{ESC}[2J"
    tomb.write_text(json.dumps(doc))
    for args in (["ls"], ["ls", "t"], ["ls", "t/a"], ["ls", "t/a", "--all"], ["alias", "t/a"],
                 ["gc", "--dry-run"], ["verify"], ["du"], ["show", "t/a@v1"],
                 ["pull", "t/a@v1", tmp_path / "out"], ["lineage", "t/a@v3"],
                 ["show", "t/a@v3"]):
        r = run(*args, "--lake", url)
        assert ESC not in r.stdout and ESC not in r.stderr, (args, r.stdout, r.stderr)


def test_a_fifo_at_a_key_is_no_object_and_blocks_nothing(tmp_path: Path) -> None:
    """A FIFO planted at a chunk's or an alias's key blocked the open for ever: pull, show,
    verify and gc hung, and pull ignored SIGTERM and Ctrl-C (only SIGKILL ended it)."""
    import os
    import subprocess
    import sys

    root, url = one_chunk(tmp_path)
    assert run("alias", "t/a@v1", "prod", "--lake", url).exit_code == 0
    [chunk] = [p for p in (root / "chunks").rglob("*") if p.is_file()]
    chunk.unlink()
    os.mkfifo(chunk)
    alias = root / layout.alias_key("t/a", "prod")
    alias.unlink()
    os.mkfifo(alias)
    for args, code in ((["pull", "t/a", str(tmp_path / "out")], 5), (["show", "t/a@prod"], 3),
                       (["cat", "t/a", "w.bin"], 5)):
        try:
            r = subprocess.run([sys.executable, "-m", "ckptlake", *args, "--lake", url],
                               capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{args} hung on a FIFO") from None
        assert r.returncode == code, (args, r.stderr)


def test_a_lone_surrogate_in_a_stored_path_is_an_unsafe_manifest(tmp_path: Path) -> None:
    """`"\\ud800.txt"` (a JSON escape) as a file path, a directory or a link target: pull was an
    internal error (exit 1), a link target broke every reader of the manifest, and verify
    called the version restorable."""
    root = tmp_path / "lake"
    url = f"file://{root}"
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.txt").write_text("x")
    (src / "l").symlink_to("w.txt")
    assert run("push", src, "t/a", "--lake", url).exit_code == 0
    manifest = root / layout.version_key("t/a", 1)
    good = manifest.read_text()
    for damage in (lambda d: d.replace('"w.txt"', '"\\ud800.txt"', 1),
                   lambda d: d.replace('"dirs":[]', '"dirs":["e\\udbff"]'),
                   lambda d: d.replace('"symlink":"w.txt"', '"symlink":"\\ud800"')):
        text = damage(good)
        assert text != good, good
        manifest.write_text(text)
        for args in (["pull", "t/a", tmp_path / "out"], ["verify", "t/a"], ["ls", "t/a@v1"]):
            r = run(*args, "--lake", url)
            assert r.exit_code == 5, (args, r.output)


def test_a_newline_in_a_tombstone_forges_no_row(tmp_path: Path) -> None:
    """A newline kept by the control-character escaping forged a whole `v9 ... prod` row in
    `ls --all` (a tombstone's metric name) and a line in `lineage` (its rule)."""
    root, url = three_versions(tmp_path)
    assert run("rm", "t/a@v2", "--lake", url, "--yes").exit_code == 0
    tomb = root / layout.tombstone_key("t/a", 2)
    doc = json.loads(tomb.read_bytes())
    doc["metrics"] = {"loss\nv9       9     1 GiB  0s   prod     acc=1.0": 0.1}
    doc["rule"] = "keep_last 1\nINJECTED LINE"
    tomb.write_text(json.dumps(doc))
    r = run("ls", "t/a", "--all", "--lake", url)
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 4 and "INJECTED" not in r.stdout.splitlines()[-1] \
        and not r.stdout.splitlines()[-1].startswith("INJECTED"), r.stdout
    assert not any(line.startswith(("v9", "INJECTED")) for line in r.stdout.splitlines())


def test_a_socket_at_a_key_is_no_object(tmp_path: Path) -> None:
    """open() of a socket fails (ENXIO) before the type is looked at: exit 8, "No such device
    or address", where a FIFO is no object."""
    import os
    import socket

    root, url = one_chunk(tmp_path)
    [chunk] = [p for p in (root / "chunks").rglob("*") if p.is_file()]
    chunk.unlink()
    sock = socket.socket(socket.AF_UNIX)
    here = os.getcwd()
    try:
        os.chdir(chunk.parent)  # (a socket's path is limited to 107 bytes: bound relative)
        try:
            sock.bind(chunk.name)
        finally:
            os.chdir(here)
        r = run("pull", "t/a", tmp_path / "out", "--lake", url)
        assert r.exit_code == 5 and "missing" in r.output, r.output
    finally:
        sock.close()
