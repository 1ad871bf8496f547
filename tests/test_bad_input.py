"""Bad input never ends in exit 1 (a bug): sources that change under a push, unreadable files,
crafted manifests and lake headers, names too long for a file system.  Each case gets its
documented exit code, one error line, no traceback, and leaves nothing half-written: no version
for a push, nothing at the destination for a pull.  Also: sparse files stay sparse on pull.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

import ckptlake.core.scan
from ckptlake.cli.app import app
from ckptlake.core.scan import scan as real_scan
from ckptlake.format import layout

MiB = 1024 * 1024


def run(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def error_line(result: Any, code: int) -> str:
    """The single error line of a failed command (notes like 'using lake' aside)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("using lake")]
    assert len(errors) == 1 and errors[0].startswith("ckptlake: error: "), result.stderr
    return errors[0]


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def lake(lake_dir: Path) -> str:
    return f"file://{lake_dir}"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(os.urandom(2 * MiB + 5))
    (d / "sub" / "b.txt").write_text("hello")
    return d


def versions(lake_dir: Path) -> list[Path]:
    return sorted(lake_dir.glob("artifacts/**/@v/*.json"))


def chunks(lake_dir: Path) -> list[Path]:
    return [p for p in lake_dir.glob("chunks/*/*") if p.is_file()]


# ---- push: the source changes between scan and read ------------------------------------------

def _replace_with_dir(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _replace_with_fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)


@pytest.mark.timeout(60, method="thread")  # the FIFO case hung forever in a worker
@pytest.mark.parametrize("change", [Path.unlink, _replace_with_dir, _replace_with_fifo],
                         ids=["deleted", "directory", "fifo"])
def test_source_changed_between_scan_and_read(src: Path, lake: str, lake_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              change: Callable[[Path], None]) -> None:
    def scan_then_change(*a: Any, **k: Any) -> Any:
        tree = real_scan(*a, **k)
        change(src / "a.bin")
        return tree

    monkeypatch.setattr(ckptlake.core.scan, "scan", scan_then_change)
    r = run("push", src, "p/a", "--lake", lake, "--chunk-size", "1MiB")
    line = error_line(r, 6)
    assert "a.bin" in line and "nothing was committed" in line
    assert versions(lake_dir) == []


def test_unreadable_file_fails_before_uploading(src: Path, lake: str, lake_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    secret = src / "sub" / "secret.bin"
    secret.write_bytes(b"s" * 100)
    secret.chmod(0)
    if os.access(secret, os.R_OK):  # root reads anything: make the check see what a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: (
            False if os.fspath(p) == str(secret) else real_access(p, mode, **k)))
    r = run("push", src, "p/a", "--lake", lake, "--chunk-size", "1MiB")
    line = error_line(r, 4)
    assert "secret.bin" in line and "permission denied" in line
    assert versions(lake_dir) == [] and chunks(lake_dir) == []


def test_file_made_unreadable_after_scan(src: Path, lake: str, lake_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = src / "a.bin"

    def scan_then_chmod(*a: Any, **k: Any) -> Any:
        tree = real_scan(*a, **k)
        target.chmod(0)
        if os.geteuid() == 0:  # root opens anything: refuse the open as it would be refused
            real_open = os.open

            def open_as_user(path: Any, flags: int, *args: Any, **kw: Any) -> int:
                if os.fspath(path) == str(target):
                    raise PermissionError(13, "Permission denied", str(target))
                return real_open(path, flags, *args, **kw)

            monkeypatch.setattr(os, "open", open_as_user)
        return tree

    monkeypatch.setattr(ckptlake.core.scan, "scan", scan_then_chmod)
    line = error_line(run("push", src, "p/a", "--lake", lake), 4)
    assert "a.bin" in line
    assert versions(lake_dir) == []


def test_file_deleted_while_scanning(src: Path, lake: str, lake_dir: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.core import scan as scanmod

    real_excluded = scanmod._excluded

    def excluded_then_delete(rel: str, patterns: Any) -> bool:
        if rel == "sub/b.txt":  # listed, then gone before its stat
            (src / rel).unlink()
        return real_excluded(rel, patterns)

    monkeypatch.setattr(scanmod, "_excluded", excluded_then_delete)
    line = error_line(run("push", src, "p/a", "--lake", lake), 6)
    assert "b.txt" in line
    assert chunks(lake_dir) == [] and versions(lake_dir) == []


def test_unreadable_directory(src: Path, lake: str, lake_dir: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    (src / "sub").chmod(0)
    if os.geteuid() == 0:  # root lists anything: refuse the listing as it would be refused
        real_scandir = os.scandir
        sub = str(src / "sub")

        def scandir_as_user(path: Any = ".") -> Any:
            if os.fspath(path) == sub:
                raise PermissionError(13, "Permission denied", sub)
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir_as_user)
    try:
        line = error_line(run("push", src, "p/a", "--lake", lake), 4)
    finally:
        (src / "sub").chmod(0o755)
    assert "sub" in line and chunks(lake_dir) == []


def test_artifact_segment_longer_than_a_file_name(src: Path, lake: str,
                                                  lake_dir: Path) -> None:
    line = error_line(run("push", src, "p/" + "x" * 256, "--lake", lake), 2)
    assert "255" in line
    assert chunks(lake_dir) == []  # refused before uploading anything
    r = run("push", src, "p/" + "x" * 255, "--lake", lake)  # the longest that fits
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("size", [1, 1024, 2 * 1024 ** 3, "16MiB"])
def test_crafted_lake_header_chunk_size_is_refused(src: Path, lake: str, lake_dir: Path,
                                                   size: Any) -> None:
    lake_dir.mkdir()
    (lake_dir / layout.HEADER_KEY).write_text(json.dumps(
        {"ckptlake_lake": 1, "hash": "sha256", "chunk_size": size, "created": ""}))
    line = error_line(run("push", src, "p/a", "--lake", lake), 5)
    assert "chunk_size" in line
    assert chunks(lake_dir) == [] and versions(lake_dir) == []


# ---- crafted manifests ------------------------------------------------------------------------

@pytest.fixture
def pushed(src: Path, lake: str, lake_dir: Path) -> Path:
    """A lake holding p/a@v1 (two files) and p/b@v1 (child of p/a@v1); returns p/a@v1's
    manifest path."""
    r = run("push", src, "p/a", "--lake", lake, "--metric", "loss=1.5")
    assert r.exit_code == 0, r.stderr
    r = run("push", src, "p/b", "--lake", lake, "--parent", "p/a")
    assert r.exit_code == 0, r.stderr
    return lake_dir / layout.version_key("p/a", 1)


def tamper(manifest: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(manifest.read_text())
    edit(doc)
    manifest.write_text(json.dumps(doc))
    # ls answers from the listing summaries while they are usable; make it read the manifest
    for s in (manifest.parent.parent / "@s").glob("*"):
        s.unlink()


def assert_pull_refused(lake: str, tmp_path: Path, code: int = 5) -> str:
    dest = tmp_path / "out"
    line = error_line(run("pull", "p/a", dest, "--lake", lake), code)
    assert not dest.exists()
    assert not list(tmp_path.glob(".out.*")), "a staging directory was left behind"
    return line


def _file_below_file(doc: dict[str, Any]) -> None:
    a = next(f for f in doc["files"] if f["path"] == "a.bin")
    doc["files"].append({"path": "a.bin/inner", "size": 0, "chunks": []})
    assert a


def _huge_size(doc: dict[str, Any]) -> None:
    f = doc["files"][0]
    f["size"] = 2 ** 62
    f["chunks"] = [[f["chunks"][0][0], 2 ** 62]]


def _huge_offset(doc: dict[str, Any]) -> None:
    f = next(f for f in doc["files"] if f["path"] == "sub/b.txt")
    f["chunks"] = [[f["chunks"][0][0], f["size"], 2 ** 62]]


def _long_name(doc: dict[str, Any]) -> None:
    doc["files"][0]["path"] = "n" * 300


def _deep_provenance(doc: dict[str, Any]) -> None:
    doc["provenance"] = {"x": json.loads("[" * 200 + "]" * 200)}


@pytest.mark.parametrize("edit", [_file_below_file, _huge_size, _huge_offset, _long_name,
                                  _deep_provenance],
                         ids=["a-and-a/b", "size-2^62", "offset-2^62", "300-char-name",
                              "deep-provenance"])
def test_crafted_manifest_is_refused_before_writing(pushed: Path, lake: str, tmp_path: Path,
                                                    edit: Callable[[dict[str, Any]], None]
                                                    ) -> None:
    tamper(pushed, edit)
    line = assert_pull_refused(lake, tmp_path)
    assert "0000000001.json" in line


def _resize_ref(doc: dict[str, Any], path: str, index: int, size: int) -> None:
    """Make a whole-chunk reference claim `size` bytes, with every total still adding up."""
    f = next(f for f in doc["files"] if f["path"] == path)
    old = f["chunks"][index][1]
    f["chunks"][index][1] = size
    f["size"] += size - old
    if "total_bytes" in doc:
        doc["total_bytes"] += size - old


def test_whole_chunk_reference_that_claims_less_than_the_chunk(lake: str, lake_dir: Path,
                                                               tmp_path: Path) -> None:
    """[digest, size] is the whole chunk: a smaller size would splice the first bytes of one
    chunk onto the next, bytes that were never pushed (a pull wrote them, exit 0)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 * MiB // 2))
    (src / "z.bin").write_bytes(bytes(3 * MiB))  # one all-zero chunk, referenced 3 times
    for name in ("a.bin", "z.bin"):
        r = run("push", src / name, f"p/{name[0]}", "--lake", lake, "--chunk-size", "1MiB",
                "--compression", "none")
        assert r.exit_code == 0, r.stderr
    tamper(lake_dir / layout.version_key("p/a", 1), lambda d: _resize_ref(d, "a.bin", 0, 1000))
    # the zero chunk once with another size: never taken for 1000 zeros
    tamper(lake_dir / layout.version_key("p/z", 1), lambda d: _resize_ref(d, "z.bin", 1, 1000))
    for art, name in (("p/a", "a.bin"), ("p/z", "z.bin")):
        dest = tmp_path / f"out-{name}"
        line = error_line(run("pull", art, dest, "--lake", lake), 5)
        assert f"of {art}@v1 holds {MiB} bytes, but the manifest says 1000" in line, line
        assert not dest.exists() and not list(tmp_path.glob(f".out-{name}.*"))


def test_path_too_long_for_the_destination(pushed: Path, lake: str, tmp_path: Path) -> None:
    """Every segment fits NAME_MAX but the whole path, below the destination, exceeds PATH_MAX."""
    long_path = "/".join(["d" * 250] * 16)
    tamper(pushed, lambda d: d["files"][0].update(path=long_path))
    line = assert_pull_refused(lake, tmp_path, code=2)  # the staging path is longer
    assert "File name too long" in line
    deep = tmp_path / ("e" * 200)
    deep.mkdir()
    line = error_line(run("pull", "p/a", deep / "out", "--lake", lake), 2)
    assert "File name too long" in line and not (deep / "out").exists()
    assert list(deep.iterdir()) == []


def test_deeply_nested_manifest_json(pushed: Path, lake: str, tmp_path: Path) -> None:
    """Nesting deeper than Python's recursion limit (json.loads raises RecursionError)."""
    text = pushed.read_text()
    tamper(pushed, lambda d: None)  # drop the listing summaries
    pushed.write_text(text[:-1] + ',"junk":' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_pull_refused(lake, tmp_path)
    for args in (["show", "p/a"], ["ls", "p/a"], ["lineage", "p/b"], ["diff", "p/a", "p/b"]):
        line = error_line(run(*args, "--lake", lake), 5)
        assert "nested too deeply" in line, args


@pytest.mark.parametrize("value", ["abc", True, {"x": 1}])
def test_non_numeric_metric_in_a_manifest(pushed: Path, lake: str, tmp_path: Path,
                                          value: Any) -> None:
    tamper(pushed, lambda d: d["metrics"].update(loss=value))
    for args in (["show", "p/a"], ["ls", "p/a"], ["lineage", "p/b"], ["diff", "p/a", "p/b"],
                 ["show", "p/a", "--json"]):
        line = error_line(run(*args, "--lake", lake), 5)
        assert "'loss' is not a finite number" in line, args
    assert_pull_refused(lake, tmp_path)


def test_non_numeric_metric_in_a_listing_summary_is_ignored(pushed: Path, lake: str,
                                                            lake_dir: Path) -> None:
    """A summary key is only a cache of the manifest: a malformed one is skipped."""
    from ckptlake.core import summary

    for s in (pushed.parent.parent / "@s").glob("*"):
        s.unlink()
    doc = {"s": None, "c": "2026-01-01T00:00:00Z", "u": "x", "b": 1, "f": 1,
           "m": {"loss": "abc"}, "d": {}}
    key = layout.summary_key("p/a", 1, summary._pack(doc))
    path = lake_dir.joinpath(*key.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    r = run("ls", "p/a", "--lake", lake, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["versions"][0]["metrics"] == {"loss": 1.5}


def test_file_too_large_for_the_file_system(pushed: Path, lake: str, tmp_path: Path) -> None:
    """17 TiB, in chunks of the largest size a manifest allows: ext4 refuses the size (EFBIG),
    other file systems run out of space (ENOSPC); either is a usage error, exit 2."""
    def edit(doc: dict[str, Any]) -> None:
        n = 17 * 1024
        doc["files"] = [{"path": "huge.bin", "size": n * 1024 ** 3,
                         "chunks": [[f"{i:064x}", 1024 ** 3] for i in range(n)]}]

    tamper(pushed, edit)
    dest = tmp_path / "out"
    line = error_line(run("pull", "p/a", dest, "--lake", lake), 2)
    assert "huge.bin" in line or "no space" in line
    assert not dest.exists()


# ---- sparse files -----------------------------------------------------------------------------

def _holes_supported(directory: Path) -> bool:
    probe = directory / "hole-probe"
    with open(probe, "wb") as fh:
        fh.truncate(8 * MiB)
    try:
        return os.stat(probe).st_blocks * 512 < MiB
    finally:
        probe.unlink()


def test_sparse_file_stays_sparse_on_pull(tmp_path: Path, lake: str) -> None:
    if not _holes_supported(tmp_path):
        pytest.skip("this file system does not keep holes")
    src = tmp_path / "src"
    src.mkdir()
    head, tail = os.urandom(MiB), os.urandom(MiB)
    with open(src / "sparse.bin", "wb") as fh:
        fh.write(head)
        fh.seek(31 * MiB)
        fh.write(tail)
    (src / "zeros.bin").write_bytes(bytes(3 * MiB))  # all zeros: one hole
    assert run("push", src, "p/sparse", "--lake", lake, "--chunk-size", "1MiB").exit_code == 0
    r = run("pull", "p/sparse", tmp_path / "out", "--lake", lake, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    out = tmp_path / "out" / "sparse.bin"
    data = out.read_bytes()
    assert len(data) == 32 * MiB and data[:MiB] == head and data[-MiB:] == tail
    assert data[MiB:-MiB] == bytes(30 * MiB)
    assert os.stat(out).st_blocks * 512 <= 4 * MiB  # 2 MiB of data, 30 MiB of hole
    zeros = tmp_path / "out" / "zeros.bin"
    assert zeros.read_bytes() == bytes(3 * MiB) and os.stat(zeros).st_blocks * 512 < MiB
    assert doc["bytes_downloaded"] == 2 * MiB  # the zero chunk is never fetched
    assert stat.S_ISREG(os.stat(out).st_mode)


def test_zero_chunks_are_written_into_kept_staged_files(tmp_path: Path, lake: str,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """A staged file left by an interrupted pull may hold garbage where the holes go: the
    resumed pull writes the zeros there instead of trusting the hole."""
    from ckptlake.core import pull as pullmod

    src = tmp_path / "src"
    src.mkdir()
    (src / "z.bin").write_bytes(b"d" * MiB + bytes(2 * MiB) + b"e" * MiB)
    assert run("push", src, "p/z", "--lake", lake, "--chunk-size", "1MiB").exit_code == 0
    real_prepare = pullmod._prepare

    def prepare_over_garbage(staging: Any, entries: Any, algo: str) -> Any:
        path = staging.file("z.bin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_bytes(b"g" * 4 * MiB)  # right size, wrong bytes, nothing journaled
        return real_prepare(staging, entries, algo)

    monkeypatch.setattr(pullmod, "_prepare", prepare_over_garbage)
    r = run("pull", "p/z", tmp_path / "out", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "out" / "z.bin").read_bytes() == (src / "z.bin").read_bytes()


def test_source_name_that_is_not_utf8_is_refused_before_upload(lake: str, lake_dir: Path,
                                                              tmp_path: Path) -> None:
    """A name the file system allows but UTF-8 cannot hold crashed push (exit 1, no name)."""
    src = tmp_path / "src8"
    src.mkdir()
    (src / "ok.txt").write_text("x")
    bad = os.fsdecode(b"\xff\xfe.bin")
    (src / bad).write_bytes(b"y")
    line = error_line(run("push", src, "p/u", "--lake", lake), 2)
    assert "\\xff\\xfe.bin" in line and "UTF-8" in line and "--exclude" in line, line
    assert not versions(lake_dir)
    line = error_line(run("push", src / bad, "p/u", "--lake", lake), 2)  # a single file
    assert "\\xff\\xfe.bin" in line, line
    (src / "link").symlink_to(bad)  # a link to it, with the file excluded
    line = error_line(run("push", src, "p/u", "--lake", lake, "--exclude", "*.bin"), 2)
    assert "\\xff\\xfe.bin" in line, line
    r = run("push", src, "p/u", "--lake", lake, "--exclude", "*.bin", "--exclude", "link")
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("below", ["", "sub/lake"])
def test_local_lake_location_that_is_a_file(tmp_path: Path, src: Path, below: str) -> None:
    """--lake naming a file (or a path below one) says so: a push said "cannot hold both 'a'
    and 'a/...' keys" (a clash between keys the user never named) and readers said "nothing
    was ever pushed there"."""
    blocker = tmp_path / "notadir"
    blocker.write_bytes(b"x")
    url = (blocker / below).as_uri() if below else blocker.as_uri()
    line = error_line(run("--lake", url, "push", src, "a/b"), 2)
    assert f"{blocker} is a file" in line and "a/..." not in line
    line = error_line(run("--lake", url, "ls"), 3)
    assert f"{blocker} is a file, not a directory" in line
    assert blocker.read_bytes() == b"x"


def test_local_lake_below_a_link_to_nowhere(tmp_path: Path, src: Path) -> None:
    """A lake on a volume that is not mounted, reached through a link: the link was called
    a file."""
    link = tmp_path / "data"
    link.symlink_to(tmp_path / "not-mounted" / "data")
    url = (link / "lake").as_uri()
    for args, code in ((("push", src, "a/b"), 2), (("ls",), 3)):
        line = error_line(run("--lake", url, *args), code)
        assert f"{link} is a symbolic link to {tmp_path}/not-mounted/data, which does not " \
            "exist" in line and "mount or create the link's target" in line, line
    assert not (tmp_path / "not-mounted").exists()


def test_an_empty_selector_is_named_as_such() -> None:
    """`a/b@` read "invalid selector ''": the check meant for it sat behind the branch for no
    selector at all, where an empty one never arrived."""
    from ckptlake.errors import UsageError
    from ckptlake.format.refs import parse_ref

    with pytest.raises(UsageError, match=r"empty selector after '@' in 'a/b@'"):
        parse_ref("a/b@")


def test_a_chain_of_links_longer_than_the_kernel_follows_is_not_called_a_loop(
        tmp_path: Path) -> None:
    """41 links in a row, no loop: push called it "part of a symlink loop", and the user went
    looking for one."""
    import ckptlake
    from ckptlake.errors import UsageError

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    for i in range(41):
        os.symlink("f" if i == 0 else f"l{i - 1}", src / f"l{i}")
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        with pytest.raises(UsageError, match=r"symlink l40 -> l39 is part of a symlink loop, "
                                             r"or of a chain of more links than the kernel"):
            lake.push(src, "t/links")
